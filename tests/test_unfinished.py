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
    lines, fail = verdict({("chldo", "sendmsg"): 3}, {("chldo", "sendmsg"): 40}, {"chldo": 812.0}, {})
    assert not fail and lines == [
        "loadkit: unfinished at the end of the run (neither answered nor failed; counted, not dropped): "
        "chldo sendmsg 3; oldest chldo 812.0 ms"]
    lines, fail = verdict({("ktb", "joinRoom"): 4}, {("ktb", "connect"): 4}, {"ktb": 5000.0}, {("ktb", "joinRoom"): 4})
    assert fail and "ktb joinRoom: no request completed, 4 still waiting" in lines[1]
    assert verdict({}, {}, {}, {}) == ([], False)


def test_verdict_does_not_fail_an_operation_first_sent_a_moment_before_the_end():
    """Seen in CI: a short mixed run whose one messageReaction was sent 0.25 ms before the stop
    exited 1 with no failure. No request of it had waited 1 s: no evidence against the server."""
    unfinished = {("ktb", "messageReaction"): 1, ("ktb", "joinRoom"): 2}
    completed = {("ktb", "joinRoom"): 5, ("ktb", "connect"): 3}
    lines, fail = verdict(unfinished, completed, {"ktb": 0.251}, {})
    assert not fail
    assert "ktb messageReaction: no request completed, but its 1 unfinished were sent less than 1 s" in lines[1]
    # the same operation with one request that had waited 1 s: the server did not answer it
    lines, fail = verdict(unfinished, completed, {"ktb": 1200.0}, {("ktb", "messageReaction"): 1})
    assert fail and "ktb messageReaction: no request completed, 1 still waiting" in lines[1]


def test_measure_counts_an_unfinished_request_that_waited_1_s_twice():
    from locust.env import Environment

    from loadkit.metrics import counters as counters_mod
    from loadkit.users.measure import Measure

    m = Measure(Environment(), "ktbtest")
    before = counters_mod.snapshot().get("ktbtest", {})
    m.unfinished("messageReaction", 0.25)
    m.unfinished("joinRoom", 1000.0)
    after = counters_mod.snapshot()["ktbtest"]

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)
    assert delta("unfinished:messageReaction") == 1 and delta("unfinished_1s:messageReaction") == 0
    assert delta("unfinished:joinRoom") == 1 and delta("unfinished_1s:joinRoom") == 1


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
