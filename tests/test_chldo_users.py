"""The Locust glue's option handling, run in subprocesses (importing locust monkey-patches gevent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LOCUSTFILE = Path(__file__).resolve().parent.parent / "locustfiles" / "chldo_stream.py"


@pytest.mark.parametrize("args,text", [
    (["--chldo-think-time", "5-1"], "--chldo-think-time: need 0 <= MIN <= MAX"),
    (["--chldo-think-time", "soon"], "--chldo-think-time: expected S or MIN-MAX"),
    (["--chldo-omit", "api_key,colour"], "--chldo-omit: unknown field(s) ['colour']"),
    (["--chldo-prompts", "|  |"], "--chldo-prompts: no prompt found"),
    (["--chldo-turn-timeout", "0"], "--chldo-turn-timeout: must be > 0, got 0.0"),
    (["--chldo-connect-timeout", "-1"], "--chldo-connect-timeout: must be > 0, got -1.0"),
])
def test_bad_options_fail_once_with_a_clear_message(args, text, tmp_path):
    r = subprocess.run([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-t", "1s",
                        "--host", "ws://127.0.0.1:9", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert f"loadkit: error: {text}" in r.stderr and "Traceback" not in r.stderr


def test_helpers_in_a_subprocess(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("하나\n\n two \n", encoding="utf-8")
    code = f"""
from loadkit.users.chldo import parse_think_time, load_prompts, parse_return_voice, parse_omit, DEFAULT_PROMPTS
assert parse_think_time("2") == (2.0, 2.0) and parse_think_time("0.5-3") == (0.5, 3.0)
assert load_prompts({str(prompts)!r}) == ["하나", "two"]
assert load_prompts("a|b") == ["a", "b"] and load_prompts("") == list(DEFAULT_PROMPTS)
assert parse_return_voice("") is None and parse_return_voice("1") == 1 and parse_return_voice("7") == "7"
assert parse_omit(" msg, api_key ") == ("msg", "api_key")
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
