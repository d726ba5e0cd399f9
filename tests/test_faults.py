"""Fault injection in the reference servers, and faults survived by the users (issue #15 items 4, 5)."""

from __future__ import annotations

import csv
import re
import sys
import time
from pathlib import Path

import pytest

from loadkit.procs import free_port, loadkit_argv
from loadkit.targets.faults import FaultDice, parse_faults

ROOT = Path(__file__).resolve().parent.parent


def test_fault_specs_and_seeded_draws():
    assert parse_faults("drop=0.01, error=0.02") == {"drop": 0.01, "error": 0.02}
    assert parse_faults("") == {}
    for bad, text in (("explode=0.1", "KIND one of drop, error, stall, noend"), ("drop=x", "not a probability"),
                      ("drop=1.5", "between 0 and 1"), ("drop=0.6,error=0.6", "add up to 1.2")):
        with pytest.raises(ValueError, match=text):
            parse_faults(bad)
    rates = {"drop": 0.1, "error": 0.2}
    a, b = FaultDice(rates, seed=7), FaultDice(rates, seed=7)
    draws = [a.draw() for _ in range(20000)]
    assert draws[:200] == [b.draw() for _ in range(200)]  # seeded: repeatable
    assert abs(draws.count("drop") / 20000 - 0.1) < 0.01 and abs(draws.count("error") / 20000 - 0.2) < 0.015
    assert not FaultDice({}) and FaultDice({}).draw() is None


@pytest.mark.timeout(90)
def test_injected_chldo_faults_are_classified_failures_and_users_carry_on(spawn, tmp_path):
    port = free_port()
    server = spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "50", "--token-ms", "5",
                                "--fault", "drop=0.2,error=0.2,stall=0.1,noend=0.1", "--fault-seed", "3"),
                   port=port, name="chldo")
    prefix = tmp_path / "run"
    locust = spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chldo_stream.py"), "--headless",
                    "-u", "4", "-r", "4", "-t", "8s", "--host", f"ws://127.0.0.1:{port}", "--csv", str(prefix),
                    "--only-summary", "--chldo-turn-timeout", "1.5", "--chldo-think-time", "0.1"], name="locust")
    assert locust.wait(60) == 1  # failures: the injected ones
    errors = " ".join(r["Error"] for r in csv.DictReader(open(f"{prefix}_failures.csv")))
    assert "ChldoConnectionLost(" in errors  # drop
    assert "injected server fault (loadkit --fault error)" in errors and "ChldoStreamError(" in errors  # error
    assert "ChldoTimeout('no END within 1.5 s (0 chunks" in errors  # stall
    assert re.search(r"ChldoTimeout\('no END within 1.5 s \([1-9]\d* chunks", errors)  # noend
    stats = {r["Name"]: r for r in csv.DictReader(open(f"{prefix}_stats.csv")) if r["Type"] == "chldo"}
    assert int(stats["connect"]["Request Count"]) > 4  # dropped connections were opened again
    assert int(stats["sendmsg"]["Request Count"]) > int(stats["sendmsg"]["Failure Count"]) > 0
    assert "Traceback" not in locust.output() + server.output()


@pytest.mark.timeout(120)
def test_chldo_users_come_back_after_the_server_restarts(spawn, tmp_path):
    """The server is killed 4 s into the run and started again 4 s later on the same port: the
    outage shows as classified failures, and the users are back well within 30 s."""
    port = free_port()
    argv = loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "20", "--token-ms", "2")
    first = spawn(argv, port=port, name="chldo-1")
    prefix = tmp_path / "run"
    locust = spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "chldo_stream.py"), "--headless",
                    "-u", "3", "-r", "3", "-t", "20s", "--host", f"ws://127.0.0.1:{port}", "--csv", str(prefix),
                    "--only-summary", "--chldo-think-time", "0.2", "--chldo-connect-timeout", "2"], name="locust")
    time.sleep(4)
    first.stop()
    time.sleep(4)
    second = spawn(argv, port=port, name="chldo-2")
    assert locust.wait(60) == 1  # the outage's failures
    second.stop()
    m = re.search(r"stopped: (\d+) connections, (\d+) turns", second.output())
    assert m and int(m[1]) >= 3 and int(m[2]) >= 3 * 10, second.output()[-1000:]  # all 3 users back, busy
    errors = {r["Name"]: r["Error"] for r in csv.DictReader(open(f"{prefix}_failures.csv"))}
    assert set(errors) <= {"connect", "sendmsg"}, errors
    assert "Traceback" not in locust.output()


@pytest.mark.timeout(150)
def test_ktb_users_come_back_after_an_in_memory_server_restarts(spawn, tmp_path):
    """The in-memory KTB server is killed 6 s into the run and started again (empty) 4 s later:
    the users log in again, re-create the rooms the new server does not know, and chat again."""
    import sqlite3

    port = free_port()
    first = spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--single-port"), port=port, name="ktb-1")
    prefix = tmp_path / "run"
    locust = spawn([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "ktb_chat.py"), "--headless",
                    "-u", "4", "-r", "4", "-t", "30s", "--host", f"http://127.0.0.1:{port}", "--csv", str(prefix),
                    "--only-summary", "--ktb-room-size", "2", "--ktb-wait-min", "0.1", "--ktb-wait-max", "0.3",
                    "--ktb-timeout", "3"], name="locust")
    time.sleep(6)
    first.stop()
    time.sleep(4)
    db = tmp_path / "after.db"  # the restarted server keeps what it sees in a file, for this test to read
    spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--single-port", "--db", str(db)), port=port, name="ktb-2")
    assert locust.wait(90) == 1, locust.output()[-3000:]  # the outage's failures
    counters = {(r["Type"], r["Name"]): int(r["Count"]) for r in csv.DictReader(open(f"{prefix}_counters.csv"))}
    assert counters.get(("ktb", "rooms_recreated"), 0) >= 1, counters
    rooms, messages = sqlite3.connect(db).execute(
        "SELECT (SELECT COUNT(*) FROM rooms), (SELECT COUNT(*) FROM messages WHERE content LIKE 'lk %')").fetchone()
    assert rooms >= 2 and messages >= 20, (rooms, messages)  # both groups back, chatting for many seconds
    assert "Traceback" not in locust.output()
