"""Say why nothing works, early (issue #15 item 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadkit.metrics.early_warning import all_failing
from loadkit.procs import free_port

ROOT = Path(__file__).resolve().parent.parent


def _entry(method, name, requests, failures):
    return SimpleNamespace(method=method, name=name, num_requests=requests, num_failures=failures)


def _error(method, name, text, n):
    return SimpleNamespace(method=method, name=name, occurrences=n, to_name=lambda: f"{method} {name}: {text}")


def test_only_operations_that_never_succeeded_are_named_once_with_their_commonest_cause():
    entries = [_entry("ktb", "connect", 20, 20), _entry("ktb", "joinRoom", 10, 9), _entry("POST", "/api/auth/login", 2, 2)]
    errors = [_error("ktb", "connect", "ConnectionFailed('refused')", 15), _error("ktb", "connect", "AnswerTimeout()", 5)]
    warned: set = set()
    assert all_failing(entries, errors, warned) == [
        "loadkit: ktb connect has failed every time so far (20 of 20): ConnectionFailed('refused')"]
    assert all_failing(entries, errors, warned) == []  # said once
    entries[2].num_requests = entries[2].num_failures = 3  # now tried often enough
    assert all_failing(entries, [], warned) == [
        "loadkit: POST /api/auth/login has failed every time so far (3 of 3): no error text"]


@pytest.mark.timeout(60)
def test_a_closed_port_is_named_within_seconds(tmp_path):
    port = free_port()  # nothing listens there
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "ktb_chat.py"), "--headless",
                        "-u", "3", "-r", "3", "-t", "6s", "--host", f"http://127.0.0.1:{port}", "--only-summary"],
                       capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert "POST /api/auth/register has failed every time so far" in r.stderr, r.stderr[-3000:]
    assert "connection refused" in r.stderr.lower() and "Traceback" not in r.stderr
