"""Open-model pacing in real Locust runs (issue #16): ``--arrival-rate`` against the reference servers.

KTB with ``--delay-ms 200`` answers each chatMessage after 200 ms, so one user completes at most
5 iterations per second: 2 users cannot hold 20/s (lag, drops), 10 users can.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from ktb_server_helpers import start_ktb
from loadkit.procs import free_port, loadkit_argv

ROOT = Path(__file__).resolve().parent.parent
KTB = str(ROOT / "locustfiles" / "ktb_chat.py")
CHLDO = str(ROOT / "locustfiles" / "chldo_stream.py")
LOCUST = [sys.executable, "-m", "locust"]
ONLY_CHAT = "chatMessage=1,fetchPreviousMessages=0,markMessagesAsRead=0,messageReaction=0,rejoin=0"


def rows(path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}


def counter(prefix, name: str) -> int:
    got = rows(f"{prefix}_counters.csv").get(("loadkit", name))
    return int(got["Count"]) if got else 0


def run_ktb(spawn, tmp_path, ktb, name: str, users: int, seconds: int, *extra: str):
    prefix = tmp_path / name
    proc = spawn([*LOCUST, "-f", KTB, "--host", ktb.rest, "--ktb-socket-url", ktb.sock, "--headless",
                  "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--csv", str(prefix), "--only-summary",
                  "--ktb-weights", ONLY_CHAT, "--ktb-room-size", "5", *extra], name=name)
    proc.wait(seconds + 60)
    out = proc.output()
    assert proc.returncode == 0, out[-3000:]
    return prefix, out


@pytest.fixture
def slow_ktb(spawn):
    return start_ktb(spawn, "--delay-ms", "200")


@pytest.mark.timeout(120)
def test_too_few_users_show_schedule_lag_drops_and_latency_from_the_intended_start(spawn, tmp_path, slow_ktb):
    prefix, out = run_ktb(spawn, tmp_path, slow_ktb, "few", 2, 8, "--arrival-rate", "20/s")
    metrics, stats = rows(f"{prefix}_metrics.csv"), rows(f"{prefix}_stats.csv")
    lag = metrics[("loadkit", "schedule_lag")]
    started, dropped = counter(prefix, "iterations"), counter(prefix, "dropped_iterations")
    print(f"lag mean {lag['Mean']} ms p50 {lag['50%']} ms; started {started} dropped {dropped}")
    assert (lag["Kind"], lag["Unit"]) == ("latency", "ms")
    assert int(lag["Count"]) == started and 8 * 2 * 5 * 0.7 < started <= 8 * 2 * 5 + 2
    assert float(lag["50%"]) > 300.0  # 2 users x 5/s = 10/s offered 20/s: the queue runs ~1 s late
    assert dropped > 0.3 * (started + dropped)  # about half of the 20/s cannot start within 1 s
    assert float(lag["Max"]) <= 1000.0 + 50.0  # --arrival-max-lag 1s: later ones are dropped, not run
    sent = stats[("ktb", "chatMessage")]
    fi = metrics[("ktb", "chatMessage_from_intended")]
    assert int(fi["Count"]) == int(sent["Request Count"]) >= started - 2  # every request of an iteration
    assert 195.0 < float(sent["Average Response Time"]) < 260.0  # the server's 200 ms, not the queue
    # from the intended start = from the send + the lag (the iteration sends at once)
    gap = float(fi["Mean"]) - float(sent["Average Response Time"])
    assert abs(gap - float(lag["Mean"])) < 0.05 * float(lag["Mean"]) + 5.0, (gap, lag["Mean"])
    assert f"{started} started" in out and f"{dropped} dropped" in out


@pytest.mark.timeout(120)
def test_enough_users_hold_the_rate_with_little_lag(spawn, tmp_path, slow_ktb):
    seconds, rate = 12, 40.0  # 480 iterations: p99 is not just the two slowest
    prefix, out = run_ktb(spawn, tmp_path, slow_ktb, "enough", 16, seconds, "--arrival-rate", f"{rate:g}/s")
    metrics, stats = rows(f"{prefix}_metrics.csv"), rows(f"{prefix}_stats.csv")
    lag = metrics[("loadkit", "schedule_lag")]
    started, dropped = counter(prefix, "iterations"), counter(prefix, "dropped_iterations")
    line = next(x for x in out.splitlines() if x.startswith("loadkit pacing"))
    print(line)
    assert dropped == 0 and float(lag["99%"]) < 10.0, line
    achieved = float(line.split(" started (")[1].split("/s")[0])
    assert abs(achieved - rate) / rate < 0.02, line  # started iterations / the run's window
    sent = int(stats[("ktb", "chatMessage")]["Request Count"])
    # the iterations in flight at the stop never report: 40/s x 200 ms = about 8
    assert started - rate * 0.3 <= sent <= started, (started, sent)


@pytest.mark.timeout(150)
def test_two_workers_share_the_rate(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "50", "--answer-tokens", "3"),
          port=port, name="chldo")
    url, mport, prefix = f"ws://127.0.0.1:{port}", free_port(), tmp_path / "dist"
    master = spawn([*LOCUST, "-f", CHLDO, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(mport),
                    "--headless", "--expect-workers", "2", "--expect-workers-max-wait", "30", "-u", "8", "-r", "8",
                    "-t", "10s", "--host", url, "--csv", str(prefix), "--only-summary", "--arrival-rate", "30/s"],
                   name="master")
    workers = [spawn([*LOCUST, "-f", CHLDO, "--worker", "--master-host", "127.0.0.1", "--master-port", str(mport)],
                     name=f"worker{i}") for i in range(2)]
    master.wait(60)
    for w in workers:
        w.wait(30)
    out = master.output()
    assert master.returncode == 0, out[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("loadkit pacing"))
    print(line)
    achieved = float(line.split(" started (")[1].split("/s")[0])
    assert abs(achieved - 30.0) / 30.0 < 0.05, line  # the two workers together, not 2 x 30/s
    with open(f"{prefix}_workers.csv", newline="") as f:
        per_worker = [int(r["requests"]) for r in csv.DictReader(f)]
    assert len(per_worker) == 2 and abs(per_worker[0] - per_worker[1]) <= 0.1 * sum(per_worker), per_worker
    assert all("slot" in w.output() for w in workers)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra, words", [
    (["--arrival-rate", "fast"], "--arrival-rate: 'fast': expected a rate"),
    (["--arrival-rate", "0/s"], "must be > 0"),
    (["--arrival-stages", "30s-10/s"], "expected DURATION:RATE"),
    (["--arrival-rate", "5/s", "--arrival-pattern", "gamma"], "gamma needs a shape"),
])
def test_bad_arrival_options_are_one_line_and_exit_2(spawn, tmp_path, extra, words):
    proc = spawn([*LOCUST, "-f", CHLDO, "--headless", "-u", "1", "-r", "1", "-t", "5s", "--host", "ws://127.0.0.1:9",
                  *extra], name="bad")
    proc.wait(40)
    out = proc.output()
    assert proc.returncode == 2, out[-2000:]
    (line,) = [x for x in out.splitlines() if x.startswith("loadkit: ")]
    assert words in line and "Traceback" not in out and "Ramping to" not in out
