"""Acceptance of issue #4: the reference server and a headless ``locust --csv`` run as subprocesses.

First token after 300 ms, 20 ms between tokens, 20 tokens per answer. The phases and per-turn
figures are loadkit metrics: checked from ``<prefix>_metrics.csv`` (exact mean, HDR percentiles
within 0.1 %); requests (``connect``, ``sendmsg``) from Locust's CSV and from a per-event JSONL
written by the fixture locustfile.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadkit.procs import free_port, loadkit_argv, own_master_port_args
from loadkit.protocols.chldo import (
    ERR_API_KEY_NOT_EXIST,
    ERR_API_KEY_NOT_USABLE,
    ERR_API_KEY_REQUIRED,
    ERR_MSG_REQUIRED,
    ERR_RETURN_VOICE,
    ERR_ROOM_UID_REQUIRED,
    ERR_USER_ID_REQUIRED,
)



FIX = Path(__file__).parent / "fixtures" / "chldo"
FIRST_MS, TOKEN_MS, TOKENS = 300.0, 20.0, 20
LLM_FAILURE = "Error code: 503 - {'status': 'failure', 'message': 'simulated LLM failure (loadkit)'}"
CREDIT = "현재 크레딧은 50 입니다. 크레딧이 100원 이상 필요합니다."


def run_locust(tmp_path: Path, url: str, mode: str, users: int, seconds: int, *extra: str):
    prefix = tmp_path / f"locust-{mode}"
    events_file = tmp_path / f"events-{mode}.jsonl"
    env = dict(os.environ, CHLDO_EVENTS_FILE=str(events_file), CHLDO_ACCEPTANCE_MODE=mode, PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "locust", "-f", str(FIX / "locust_acceptance.py"), "--headless",
            "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url, "--csv", str(prefix),
            "--only-summary", "--exit-code-on-error", "0", "--stop-timeout", "0",
            "--chldo-think-time", "0.2", "--chldo-return-voice", "1", "--chldo-turn-timeout", "10", *extra]
    r = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=seconds + 60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f) if row["Type"] == "chldo"}
    with open(f"{prefix}_failures.csv", newline="", encoding="utf-8") as f:
        failures = list(csv.DictReader(f))
    with open(f"{prefix}_metrics.csv", newline="", encoding="utf-8") as f:
        metrics = {row["Name"]: row for row in csv.DictReader(f) if row["Type"] == "chldo"}
    events = [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines()]
    # the contract: Locust's request rows are the requests users sent, nothing else
    assert set(stats) <= {"connect", "sendmsg"}, sorted(stats)
    assert {e["name"] for e in events} <= {"connect", "sendmsg"}
    return stats, metrics, failures, events, r.stderr


def check_timing(metrics: dict, events: list[dict]) -> None:
    def m(name: str, column: str) -> float:
        return float(metrics[name][column])

    assert {(r["Name"], r["Kind"], r["Unit"]) for r in metrics.values()} >= {
        ("ttft", "latency", "ms"), ("chunks", "count", "count"), ("chunks_per_s", "rate", "1/s")}
    base = m("time_to_start", "Mean")  # send -> START: loopback + server work
    ttft_avg, ttft_median = m("ttft", "Mean"), m("ttft", "50%")
    print(f"time_to_start mean {base:.2f} ms, ttft mean {ttft_avg:.2f} ms, ttft median {ttft_median:.2f} ms")
    assert abs(ttft_avg - (FIRST_MS + base)) < 5.0, (ttft_avg, base)
    assert abs(ttft_median - (FIRST_MS + base)) < 5.0, (ttft_median, base)
    sendmsg = [e for e in events if e["name"] == "sendmsg" and e["exc"] is None]
    assert int(metrics["ttft"]["Count"]) == len(sendmsg) >= 15  # one sample per successful turn
    # START -> END = first-token delay + (tokens - 1) x token delay
    expect = FIRST_MS + (TOKENS - 1) * TOKEN_MS
    som = m("som_to_eom", "50%")
    print(f"som_to_eom median {som:.2f} ms (expected {expect:.0f} ms)")
    assert abs(som - expect) < 10.0, (som, expect)
    assert abs(m("som_to_eom", "Mean") - expect) < 10.0
    assert m("chunks", "Min") == m("chunks", "Max") == float(TOKENS)
    assert abs(m("chunk_gap", "50%") - TOKEN_MS) < 1.0
    assert abs(m("chunks_per_s", "50%") - 1000.0 / TOKEN_MS) < 3.0
    assert sendmsg and all(e["len"] > 0 for e in sendmsg)  # response_length = characters received
    lengths = [e["len"] for e in sendmsg]
    assert m("chars", "Min") == min(lengths) and m("chars", "Max") == max(lengths)
    assert int(metrics["first_voice"]["Count"]) > 0 and int(metrics["voice_ms"]["Count"]) > 0
    assert m("first_voice", "Min") > m("ttft", "Min")


@pytest.mark.timeout(150)
def test_headless_locust_against_reference_server(spawn, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({
        "demo-key": {"usable": True, "credit": 10000, "return_voice": 0},
        "off": {"usable": False, "credit": 10000, "return_voice": 0},
        "broke": {"usable": True, "credit": 50, "return_voice": 0},
    }))
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", str(FIRST_MS), "--token-ms",
                       str(TOKEN_MS), "--answer-tokens", str(TOKENS), "--api-keys", str(keys), "--require-msg",
                       "--llm-failure-rate", "0.1"), port=port, name="chldo")
    stats, metrics, failures, events, stderr = run_locust(tmp_path, f"ws://127.0.0.1:{port}", "full", 14, 9)
    check_timing(metrics, events)
    errors = {(row["Name"], row["Error"]) for row in failures}
    for text in (ERR_API_KEY_REQUIRED, ERR_MSG_REQUIRED, ERR_ROOM_UID_REQUIRED, ERR_USER_ID_REQUIRED,
                 ERR_API_KEY_NOT_EXIST, ERR_API_KEY_NOT_USABLE, ERR_RETURN_VOICE):
        assert ("sendmsg", f"ChldoValidationError({text!r})") in errors, (text, errors)
    assert ("sendmsg", f"ChldoStreamError({CREDIT!r})") in errors
    assert ("sendmsg", f"ChldoStreamError({LLM_FAILURE!r})") in errors
    assert not [e for e in errors if not e[1].startswith(("ChldoValidationError", "ChldoStreamError"))], errors
    # ids: one room and one user per Locust user
    rooms = {e["ctx"]["room_uid"] for e in events}
    users = {e["ctx"]["user_id"] for e in events}
    assert len(rooms) == len(users) == 14


@pytest.mark.timeout(150)
def test_langchain_mode_measures_the_same_with_worker_processes(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", str(FIRST_MS), "--token-ms",
                       str(TOKEN_MS), "--answer-tokens", str(TOKENS), "--langchain-events"), port=port, name="chldo")
    stats, metrics, failures, events, stderr = run_locust(tmp_path, f"ws://127.0.0.1:{port}", "plain", 8, 8,
                                                          "--processes", "2", *own_master_port_args())
    assert not failures, failures
    check_timing(metrics, events)
    pids = {e["pid"] for e in events}
    assert len(pids) == 2, pids  # options reached both worker processes
    by_user: dict[str, set] = {}
    for e in events:
        by_user.setdefault(e["ctx"]["user_id"], set()).add(e["pid"])
    assert len(by_user) == 8 and all(len(p) == 1 for p in by_user.values())  # unique across processes
