"""Nothing in flight is lost (issue #15 item 2): requests still waiting at the end of the run are
counted with their age, and a run in which an operation never completed exits non-zero."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from loadkit.metrics.unfinished import verdict
from loadkit.procs import free_port, loadkit_argv

ROOT = Path(__file__).resolve().parent.parent


def test_verdict_fails_only_an_operation_that_never_completed():
    lines, fail = verdict({("chldo", "sendmsg"): 3}, {("chldo", "sendmsg"): 40}, {"chldo": 812.0})
    assert not fail and lines == [
        "loadkit: unfinished at the end of the run (neither answered nor failed; counted, not dropped): "
        "chldo sendmsg 3; oldest chldo 812.0 ms"]
    lines, fail = verdict({("ktb", "joinRoom"): 4}, {("ktb", "connect"): 4}, {"ktb": 5000.0})
    assert fail and "ktb joinRoom: no request completed, 4 still waiting" in lines[1]
    assert verdict({}, {}, {}) == ([], False)


def _run(spawn, tmp_path, locustfile, host, *extra, users=3, seconds=5):
    prefix = tmp_path / "run"
    p = spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / locustfile), "--headless",
               "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", host, "--csv", str(prefix),
               "--only-summary", *extra], name="locust")
    rc = p.wait(timeout=seconds + 60)
    counters = {(r["Type"], r["Name"]): int(r["Count"]) for r in csv.DictReader(open(f"{prefix}_counters.csv"))}
    metrics = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(f"{prefix}_metrics.csv"))}
    return rc, p.output(), counters, metrics


@pytest.mark.timeout(90)
def test_a_stream_that_never_ends_is_unfinished_and_fails_the_run(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "60000"), port=port, name="chldo")
    rc, out, counters, metrics = _run(spawn, tmp_path, "chldo_stream.py", f"ws://127.0.0.1:{port}")
    assert rc == 1, out[-3000:]
    assert counters[("chldo", "unfinished:sendmsg")] == 3
    assert int(metrics[("chldo", "unfinished_age")]["Count"]) == 3
    assert float(metrics[("chldo", "unfinished_age")]["Min"]) > 3000.0  # waiting since the start, about 5 s
    assert "chldo sendmsg: no request completed, 3 still waiting when the run ended" in out
    assert "Traceback" not in out


@pytest.mark.timeout(90)
def test_a_ktb_server_that_never_answers_the_join_is_unfinished_and_fails_the_run(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--single-port", "--delay-ms", "30000"), port=port,
          name="ktb")
    rc, out, counters, _ = _run(spawn, tmp_path, "ktb_chat.py", f"http://127.0.0.1:{port}", "--ktb-timeout", "60",
                                seconds=6)
    assert rc == 1, out[-3000:]
    waiting = {name: n for (t, name), n in counters.items() if t == "ktb" and name.startswith("unfinished:")}
    assert sum(waiting.values()) == 3, counters  # one request per user was waiting
    assert "no request completed" in out and "Traceback" not in out


@pytest.mark.timeout(90)
def test_a_healthy_run_counts_its_last_requests_and_exits_0(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "300"), port=port, name="chldo")
    rc, out, counters, _ = _run(spawn, tmp_path, "chldo_stream.py", f"ws://127.0.0.1:{port}", "--chldo-think-time", "0")
    assert rc == 0, out[-3000:]
    assert 1 <= counters.get(("chldo", "unfinished:sendmsg"), 0) <= 3  # think time 0: users were mid-turn
    assert "unfinished at the end of the run" in out and "no request completed" not in out
