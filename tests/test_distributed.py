"""Distributed runs with the synthetic locustfile: merged HDR files, worker bookkeeping, faults.

Every process is a real Locust master/worker on 127.0.0.1 (``--master-bind-host 127.0.0.1``).
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hdr_synth_samples import samples, seed_for
from loadkit.metrics.histograms import AGGREGATED_NAME, PERCENTILE_COLUMNS, PERCENTILES, read_csv
from loadkit.procs import free_port

TESTS = Path(__file__).resolve().parent
SYNTH = str(TESTS / "locustfile_hdr_synth.py")
LOCUST = [sys.executable, "-m", "locust"]


def locust_stats(prefix: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}


def workers_rows(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_workers.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_hdr_matches_locust(prefix: Path) -> dict:
    """Every Locust stats row has an HDR row with the same count (and vice versa)."""
    hdr = read_csv(f"{prefix}_hdr.csv")
    stats = locust_stats(prefix)
    assert set(hdr) == set(stats), (set(hdr) ^ set(stats))
    for key, row in stats.items():
        assert hdr[key]["Count"] == int(row["Request Count"]), key
        assert hdr[key]["hist"].get_total_count() == hdr[key]["Count"], key
    return hdr


def master_argv(locustfile: str, port: int, prefix: Path, workers: int, *extra: str) -> list[str]:
    return [
        *LOCUST, "-f", locustfile, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
        "--headless", "--expect-workers", str(workers), "--expect-workers-max-wait", "60",
        "--csv", str(prefix), "--only-summary", *extra,
    ]


def worker_argv(locustfile: str, port: int) -> list[str]:
    return [*LOCUST, "-f", locustfile, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]


def exact_ms(values: list[float], p: float) -> float:
    us = np.sort(np.rint(np.asarray(values) * 1000.0))
    return float(us[max(1, int(p * len(us) / 100.0 + 0.5)) - 1]) / 1000.0


@pytest.mark.timeout(120)
def test_four_workers_and_one_process_give_the_same_percentiles(spawn, tmp_path):
    n, users = 1500, 4
    common = ["-u", str(users), "-r", str(users), "--run-time", "5s", "--synth-samples", str(n)]
    local_prefix = tmp_path / "local"
    local = spawn([*LOCUST, "-f", SYNTH, "--headless", "--csv", str(local_prefix), "--only-summary", *common,
                   "--synth-stride", "1"], name="local")
    port = free_port()
    dist_prefix = tmp_path / "dist"
    master = spawn(master_argv(SYNTH, port, dist_prefix, 4, *common, "--synth-stride", "4"), name="master")
    workers = [spawn(worker_argv(SYNTH, port), name=f"worker{i}") for i in range(4)]
    for p in (local, master):
        p.wait(90)
    for w in workers:
        w.wait(30)
    assert local.returncode == 1 and master.returncode == 1, master.output()[-2000:]  # synthetic failures

    local_hdr = assert_hdr_matches_locust(local_prefix)
    dist_hdr = assert_hdr_matches_locust(dist_prefix)
    # the same samples went in: regenerate them and compare with exact percentiles
    values = [v for k in range(users) for v in samples(seed_for(k % 4, k // 4, 4), n)]
    assert sorted(values) == sorted(v for k in range(users) for v in samples(seed_for(0, k, 1), n))
    by_name = {"fast": [v for v in values if v < 1.0], "slow": [v for v in values if v >= 1.0]}
    by_name[AGGREGATED_NAME] = values
    for key in dist_hdr:
        assert dist_hdr[key]["Count"] == local_hdr[key]["Count"] == len(by_name[key[1]])
        for p, column in zip(PERCENTILES, PERCENTILE_COLUMNS):
            assert dist_hdr[key][column] == pytest.approx(local_hdr[key][column], rel=0.01), (key, column)
            assert dist_hdr[key][column] == pytest.approx(exact_ms(by_name[key[1]], p), rel=0.01, abs=0.001)
    # the point of it all: sub-millisecond percentiles that Locust's own CSV rounds to 0 or 1 ms
    assert 0.1 < dist_hdr[("synth", "fast")]["50%"] < 0.5
    assert float(locust_stats(dist_prefix)[("synth", "fast")]["50%"]) in (0.0, 1.0)

    rows = workers_rows(dist_prefix)
    assert len(rows) == 4
    assert sorted(r["index"] for r in rows) == ["0", "1", "2", "3"]
    assert all(r["lost"] == "false" and r["final_report"] == "true" and int(r["reports"]) >= 1 for r in rows)
    assert sum(int(r["requests"]) for r in rows) == dist_hdr[("", AGGREGATED_NAME)]["Count"]
    assert {r["pid"] for r in rows} == {str(w.proc.pid) for w in workers}
    detail = json.loads(Path(f"{dist_prefix}_workers.json").read_text())["workers"]
    assert all(sum(w["ops"].values()) == int(w["requests"]) == n for w in detail)  # one user each


def run_and_kill_one_worker(spawn, prefix: Path, run_time: str = "14s", *extra: str, expect_code: int = 5):
    """Master + 2 synthetic continuous workers; SIGKILL worker 1 once both have reported; master finishes.

    Returns ``(master, workers, victim)`` after the master and the surviving worker have exited.
    Shared with tests/test_report_workers.py.
    """
    port = free_port()
    master = spawn(master_argv(SYNTH, port, prefix, 2, "-u", "2", "-r", "2", "--run-time", run_time,
                               "--synth-continuous", *extra), name="master")
    workers = [spawn(worker_argv(SYNTH, port), name=f"worker{i}") for i in range(2)]
    # wait until the master has merged data (both workers report every 3 s), then one more interval
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        stats = Path(f"{prefix}_stats.csv")
        if stats.exists() and ("synth", "tick") in locust_stats(prefix):
            break
        time.sleep(0.5)
    else:
        pytest.fail("no stats reached the master\n" + master.output()[-3000:])
    time.sleep(3.5)
    victim = workers[1]
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    # the run ended with 1 of 2 users (no --enable-rebalancing): loadkit's documented exit code 5
    assert master.wait(90) == expect_code, master.output()[-3000:]
    workers[0].wait(30)
    return master, workers, victim


@pytest.mark.timeout(120)
def test_master_finishes_and_reports_a_worker_killed_mid_run(spawn, tmp_path):
    """Worker 1 is SIGKILLed mid-run; worker 0 is slow to stop at the end."""
    prefix = tmp_path / "kill"
    master, workers, victim = run_and_kill_one_worker(spawn, prefix, "14s", "--synth-stop-delay", "1.5")

    hdr = assert_hdr_matches_locust(prefix)
    rows = {int(r["pid"]): r for r in workers_rows(prefix)}
    assert set(rows) == {w.proc.pid for w in workers}
    lost, survivor = rows[victim.proc.pid], rows[workers[0].proc.pid]
    assert lost["lost"] == "true" and lost["final_report"] == "false"
    assert int(lost["reports"]) >= 1 and int(lost["requests"]) > 0  # what it did send is kept
    assert survivor["lost"] == "false" and survivor["final_report"] == "true"
    assert int(lost["requests"]) + int(survivor["requests"]) == hdr[("", AGGREGATED_NAME)]["Count"]
    # the survivor needed 1.5 s to stop (Locust's master alone waits 0.5 s): its last report still counts
    assert hdr[("synth", "on_stop")]["Count"] == 1
    assert "went missing" in master.output()
    assert "the run ended with less load than asked: 1 of 2 users; lost worker(s)" in master.output()


@pytest.mark.timeout(120)
def test_with_rebalancing_the_survivor_takes_the_lost_workers_users_and_the_run_passes(spawn, tmp_path):
    """Locust's --enable-rebalancing moves a lost worker's users to the others: the load asked for
    is back, the loss is still said, and the run exits 0."""
    master, workers, victim = run_and_kill_one_worker(spawn, tmp_path / "rebalanced", "16s", "--enable-rebalancing",
                                                      expect_code=0)
    out = master.output()
    assert "went missing" in out and "the others carried the full load (2 users) to the end" in out, out[-3000:]
    assert "less load than asked" not in out


@pytest.mark.timeout(60)
def test_worker_without_master_gives_up_with_a_clear_message(spawn):
    port = free_port()  # nothing listens here
    started = time.monotonic()
    worker = spawn(worker_argv(SYNTH, port), name="orphan", env={"LOADKIT_MASTER_WAIT": "2"})
    code = worker.wait(45)
    assert code != 0
    assert time.monotonic() - started < 40
    out = worker.output()
    assert f"no Locust master answered at 127.0.0.1:{port} within 2s" in out, out[-2000:]


@pytest.mark.timeout(60)
def test_worker_exits_when_the_master_disappears(spawn, tmp_path):
    port = free_port()
    master = spawn(master_argv(SYNTH, port, tmp_path / "gone", 1, "-u", "1", "-r", "1", "--synth-continuous"),
                   name="master")
    worker = spawn(worker_argv(SYNTH, port), name="worker", env={"LOADKIT_MASTER_TIMEOUT": "3"})
    deadline = time.monotonic() + 30
    while "1 workers connected" not in master.output() and "Ramping to 1 users" not in master.output():
        assert time.monotonic() < deadline, master.output()[-2000:]
        time.sleep(0.3)
    time.sleep(1.5)  # at least one heartbeat exchanged
    master.signal(signal.SIGKILL)
    assert worker.wait(30) == 3
    assert "lost the Locust master at 127.0.0.1" in worker.output()


# ------------------------------------------------------------------ shared by test_demo / test_compose

# operations every short mixed run must show (rarer KTB tasks may not come up in a few seconds)
CORE_OPERATIONS = {
    ("POST", "/api/auth/register"), ("POST", "/api/auth/login"),
    ("ktb", "connect"), ("ktb", "joinRoom"), ("ktb", "chatMessage"),
    ("chldo", "connect"), ("chldo", "sendmsg"),
}
# loadkit metrics every short mixed run must show (in <prefix>_metrics.csv, not in Locust's stats)
CORE_METRICS = {("chldo", "ttft"), ("chldo", "time_to_start"), ("chldo", "chunks")}


def assert_complete_mixed_run(out: Path, workers: int) -> None:
    """A finished distributed mixed run: every file, consistent counts, all workers' data, no dup logins."""

    prefix = out / "locust"
    for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv", "_hdr.csv", "_workers.csv", "_workers.json",
                   "_saturation.csv"):
        assert Path(f"{prefix}{suffix}").is_file(), suffix
    html = out / "report.html"
    assert html.is_file() and html.stat().st_size > 1000
    assert "exact" in html.read_text(encoding="utf-8")  # the report used locust_hdr.csv
    hdr = assert_hdr_matches_locust(prefix)
    stats = locust_stats(prefix)
    assert CORE_OPERATIONS <= set(stats), CORE_OPERATIONS - set(stats)
    metrics = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(f"{prefix}_metrics.csv"))}
    assert CORE_METRICS <= set(metrics), CORE_METRICS - set(metrics)
    assert not CORE_METRICS & set(stats), "a loadkit metric is in Locust's request stats"
    assert int(stats[("", "Aggregated")]["Failure Count"]) == 0, open(f"{prefix}_failures.csv").read()

    detail = json.loads(Path(f"{prefix}_workers.json").read_text())["workers"]
    assert len(detail) == workers
    for w in detail:  # (final_report is not required: Locust's master waits only 0.5 s for it at exit)
        assert w["lost"] == "false" and int(w["requests"]) > 0 and int(w["reports"]) >= 2, w
    # the aggregate is exactly the sum of what the workers sent, operation by operation
    per_op: dict[str, int] = {}
    for w in detail:
        for op, n in w["ops"].items():
            per_op[op] = per_op.get(op, 0) + n
    assert per_op == {f"{t} {n}": row["Count"] for (t, n), row in hdr.items() if n != AGGREGATED_NAME}
    # accounts are unique across workers: no duplicate-login kick-outs anywhere
    failures = Path(f"{prefix}_failures.csv").read_text()
    assert "duplicate" not in failures.lower()


def test_worker_tracker_marks_missing_and_silent_workers_lost(tmp_path, caplog):
    """Bookkeeping alone (no Locust): missing → lost; silent without final report → lost."""
    from types import SimpleNamespace

    from loadkit.metrics.workers import WORKER_KEY, WorkerTracker, lost_workers

    t0 = 1_000_000.0
    tracker = WorkerTracker()
    for i, cid in enumerate(("a", "b", "c")):
        tracker.on_connect(cid, i, now=t0)
    tracker.on_report("a", {WORKER_KEY: {"pid": 11, "stopped": False}}, {"ktb connect": 3}, now=t0 + 3)
    tracker.on_report("b", {WORKER_KEY: {"pid": 12, "stopped": False}}, {"ktb connect": 2, "chldo ttft": 5}, now=t0 + 3)
    tracker.on_report("c", {WORKER_KEY: {"pid": 13, "stopped": False}}, {"chldo ttft": 1}, now=t0 + 3)
    tracker.on_report("a", {WORKER_KEY: {"pid": 11, "stopped": True}}, {"ktb connect": 1}, now=t0 + 20)

    def clients(**states):
        nodes = [SimpleNamespace(id=cid, state=state) for cid, state in states.items()]
        return SimpleNamespace(all=nodes)

    tracker.poll(clients(a="stopped", b="missing", c="running"))
    assert "worker b (index 1) went missing; keeping the 7 requests" in caplog.text
    rows = {r["client_id"]: r for r in tracker.rows(now=t0 + 21)}
    assert rows["a"]["lost"] == "false" and rows["a"]["final_report"] == "true" and rows["a"]["requests"] == "4"
    assert rows["b"]["lost"] == "true" and rows["b"]["state"] == "missing"
    assert rows["c"]["lost"] == "true"  # no final report, silent for 18 s
    assert tracker.rows(now=t0 + 4)[2]["lost"] == "false"  # …but not while it was recently heard from

    tracker.on_heartbeat("b", now=t0 + 20)
    tracker.poll(clients(a="stopped", b="running"))  # b self-healed (heartbeats again), c vanished
    path = tmp_path / "run_workers.csv"
    tracker.write_csv(path, now=t0 + 21)
    assert [r["client_id"] for r in lost_workers(path)] == ["c"]
    tracker.write_json(tmp_path / "run_workers.json", now=t0 + 21)
    detail = json.loads((tmp_path / "run_workers.json").read_text())["workers"]
    assert detail[1]["ops"] == {"chldo ttft": 5, "ktb connect": 2}


@pytest.mark.timeout(90)
def test_stop_in_the_web_ui_writes_files_with_the_workers_last_reports(spawn, tmp_path):
    """Locust's master fires test_stop when it tells the workers to stop; their last samples come
    with their next report. The files written after a Stop must hold them (no wait for quitting)."""
    import urllib.parse
    import urllib.request

    port, web = free_port(), free_port()
    prefix = tmp_path / "ui"
    spawn([*LOCUST, "-f", SYNTH, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
           "--web-host", "127.0.0.1", "--web-port", str(web), "--csv", str(prefix), "--synth-continuous"],
          port=web, name="master")
    for i in range(2):
        spawn(worker_argv(SYNTH, port), name=f"worker{i}")
    base = f"http://127.0.0.1:{web}"
    deadline = time.monotonic() + 30
    while json.loads(urllib.request.urlopen(f"{base}/stats/requests", timeout=5).read()).get("worker_count", 0) < 2:
        assert time.monotonic() < deadline, "workers did not connect"
        time.sleep(0.2)
    form = urllib.parse.urlencode({"user_count": "2", "spawn_rate": "2", "host": ""}).encode()
    urllib.request.urlopen(f"{base}/swarm", data=form, timeout=10).read()
    time.sleep(5)
    urllib.request.urlopen(urllib.request.Request(f"{base}/stop", method="POST"), timeout=10).read()
    hdr_file = Path(f"{prefix}_hdr.csv")
    deadline = time.monotonic() + 15
    while not hdr_file.exists():
        assert time.monotonic() < deadline, "no _hdr.csv after Stop"
        time.sleep(0.1)
    written = read_csv(hdr_file)[("", AGGREGATED_NAME)]["Count"]
    time.sleep(4)  # any report still on its way has arrived by now
    total = json.loads(urllib.request.urlopen(f"{base}/stats/requests", timeout=5).read())["stats"][-1]["num_requests"]
    assert written == total > 0, (written, total)
