"""``loadkit demo``: the end-to-end run (acceptance), Ctrl-C cleanup, and clear errors for bad options."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from loadkit.demo import parse_duration
from loadkit.procs import free_port, loadkit_argv
from test_distributed import assert_complete_mixed_run, locust_stats


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _ports_in(text: str) -> set[int]:
    """Every 127.0.0.1 port the demo announced (targets it started, the master)."""
    return {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}


def _processes_mentioning(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.timeout(150)
def test_demo_runs_master_and_two_workers_against_both_targets(spawn, tmp_path):
    """Acceptance: embedded KTB + an external chldo (--chldo-url), 2 workers, report, clean exit."""
    chldo_port = free_port()
    chldo = spawn(loadkit_argv("serve", "chldo", "--host", "127.0.0.1", "--port", str(chldo_port)), port=chldo_port,
                  name="external-chldo")
    out = tmp_path / "out"
    demo = spawn(loadkit_argv("demo", "--run-time", "8s", "--workers", "2", "--users", "6", "--spawn-rate", "6",
                              "--out", str(out), "--chldo-url", f"ws://127.0.0.1:{chldo_port}"), name="demo")
    code = demo.wait(130)
    text = demo.output()
    assert code == 0, text[-4000:]
    assert_complete_mixed_run(out, workers=2)
    # the embedded KTB target was started, the embedded chldo one was not (a URL was given)
    assert (out / "logs" / "ktb.log").is_file() and not (out / "logs" / "chldo.log").exists()
    assert "started KTB reference server" in text and f"chldo target: ws://127.0.0.1:{chldo_port}" in text
    assert "requests" in text and "req/s" in text  # progress lines while it ran
    assert f"report: {out / 'report.html'}" in text
    assert "percentiles: exact (HDR, loadkit)" in text and "none lost" in text
    # the embedded KTB server and 2 workers on this machine's cores: the tail-latency caveat
    assert ("shared" in text and "waiting for a CPU" in text) == (1 + 2 > (os.cpu_count() or 1)), text[-2000:]
    # the report names the run by its scenario and shows that caveat too, as a warning (locust_run.json)
    page = html_lib.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert json.loads((out / "locust_run.json").read_text())["scenario"] == "mixed"
    assert "locust mixed" in page and "locust · locust" not in page
    assert ("waiting for a CPU" in page[:page.index("<h2>Summary</h2>")]) == ("waiting for a CPU" in text)
    # everything it started is gone; the external target is untouched
    for port in _ports_in(text) - {chldo_port}:
        assert not _port_open(port), port
    assert _port_open(chldo_port)
    assert_rps_counts_requests_only(out / "locust", chldo, text)


def assert_rps_counts_requests_only(prefix: Path, chldo, demo_text: str) -> None:
    """Locust's request count (and so its RPS) is what the users sent, counted independently by the
    server: every chldo connection and every turn the server saw, and nothing else (the phases and
    per-turn figures of a turn are metrics, not requests)."""
    chldo.stop()
    m = re.search(r"stopped: (\d+) connections, (\d+) turns", chldo.output())
    assert m, chldo.output()[-2000:]
    connections, turns = int(m[1]), int(m[2])
    stats = locust_stats(prefix)
    assert int(stats[("chldo", "connect")]["Request Count"]) == connections
    sent = int(stats[("chldo", "sendmsg")]["Request Count"])
    assert sent <= turns <= sent + 6, (sent, turns)  # a turn cut off by the end of the run: at most one per user
    assert {name for (kind, name) in stats if kind == "chldo"} == {"connect", "sendmsg"}
    total = stats[("", "Aggregated")]
    rps, count = float(total["Requests/s"]), int(total["Request Count"])
    seconds = 8.0  # --run-time; Locust divides by the time from its first to its last request
    assert count / (seconds + 2) <= rps <= count / (seconds - 3), (rps, count)
    # the console: requests and metrics in separate blocks, metrics with their units
    requests_block = demo_text[demo_text.index("requests (what the users sent"):demo_text.index("loadkit metrics (not requests")]
    assert "ttft" not in requests_block and "chunks" not in requests_block
    assert re.search(r"chldo\s+chunks\s+count\s+\d+.*count", demo_text)
    assert re.search(r"chldo\s+ttft\s+latency\s+\d+.*ms", demo_text)


@pytest.mark.timeout(90)
def test_ctrl_c_stops_everything_the_demo_started(spawn, tmp_path):
    out = tmp_path / "out"
    demo = spawn(loadkit_argv("demo", "--run-time", "60s", "--workers", "1", "--users", "2", "--out", str(out)),
                 name="demo")
    deadline = time.monotonic() + 60
    while "Locust master on" not in demo.output() or "requests" not in demo.output():
        assert demo.returncode is None, demo.output()[-3000:]
        assert time.monotonic() < deadline, demo.output()[-3000:]
        time.sleep(0.3)
    text = demo.output()
    master_port = int(re.search(r"Locust master on 127\.0\.0\.1:(\d+)", text).group(1))
    os.kill(demo.proc.pid, signal.SIGINT)  # the demo runs in its own session: only it gets the signal
    assert demo.wait(40) == 130
    text = demo.output()
    assert "interrupted" in text
    for port in _ports_in(text):
        assert not _port_open(port), port
    time.sleep(0.5)
    assert _processes_mentioning(f"--master-port {master_port}") == []  # no orphan worker
    assert _processes_mentioning(str(out)) == []  # no orphan master


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "0"], "--workers 0 needs --expect-workers"),
        (["--run-time", "soon"], "expected a duration"),
        (["--chldo-url", "http://127.0.0.1:1"], "ws:// or wss://"),
        (["--ktb-socket-url", "http://127.0.0.1:1"], "--ktb-socket-url needs --ktb-url"),
        (["--users", "0"], "expected a number >= 1"),
        (["--locustfile", "/nonexistent/x.py"], "no such file"),
    ],
)
def test_bad_options_give_a_clear_error(argv, message, tmp_path):
    out = subprocess.run(loadkit_argv("demo", "--out", str(tmp_path / "o"), *argv), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert not list(tmp_path.glob("o/logs/*.log"))  # nothing was started


def test_parse_duration():
    assert parse_duration("60s") == 60 and parse_duration("90") == 90
    assert parse_duration("2m") == 120 and parse_duration("1h30m") == 5400
    for bad in ("", "0s", "1x", "-5s", "m"):
        with pytest.raises(Exception):
            parse_duration(bad)


def test_summary_prefers_exact_percentiles_and_names_lost_workers(tmp_path):
    from loadkit.demo_results import summary_text
    from loadkit.metrics.histograms import HdrStore

    prefix = tmp_path / "locust"
    (tmp_path / "locust_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,50%,99%,Max Response Time\n"
        "ktb,connect,3,1,1,2,2.2\n,Aggregated,3,1,1,2,2.2\n"
    )
    store = HdrStore()
    for v in (0.25, 0.5, 2.2):
        store.record("ktb", "connect", v)
    store.write_csv(f"{prefix}_hdr.csv")
    (tmp_path / "locust_workers.csv").write_text(
        "client_id,index,hostname,pid,state,reports,requests,first_seen,last_seen,final_report,lost\n"
        "w0,0,h,1,stopped,3,2,a,b,true,false\nw1,1,h,2,missing,1,1,a,2026-01-01T00:00:00Z,false,true\n"
    )
    text, total, failures, lost = summary_text(prefix)
    assert (total, failures) == (3, 1)
    assert [w["client_id"] for w in lost] == ["w1"]
    assert "0.500" in text and "percentiles: exact" in text  # HDR p50, not Locust's rounded 1 ms
    assert "LOST 1: w1 (last seen 2026-01-01T00:00:00Z, 1 requests kept)" in text
    assert "generator saturation" not in text  # no _saturation.csv: nothing claimed either way


def test_summary_states_generator_saturation_from_its_csv(tmp_path):
    from loadkit.demo_results import summary_text

    prefix = tmp_path / "locust"
    (tmp_path / "locust_stats.csv").write_text("Type,Name,Request Count,Failure Count,50%,99%,Max Response Time\n")
    (tmp_path / "locust_saturation.csv").write_text("Worker,Start,End,Seconds,Mean CPU %,Peak CPU %\n")
    assert "generator saturation: none" in summary_text(prefix)[0]
    (tmp_path / "locust_saturation.csv").write_text(
        "Worker,Start,End,Seconds,Mean CPU %,Peak CPU %\nhost_ab12,1700000000.000,1700000009.500,9.5,97.3,100.0\n")
    text = summary_text(prefix)[0]
    assert "generator saturation: 1 interval (9.5 s)" in text and "client-side queueing" in text
    assert "host_ab12: 22:13:20–22:13:29 UTC (9.5 s), mean 97 %, peak 100 % CPU" in text


def test_shared_cpu_note_only_when_servers_and_workers_outnumber_cores():
    from loadkit.demo_results import shared_cpu_note

    note = shared_cpu_note(["KTB", "chldo"], 2, 2)
    assert note and "KTB and chldo reference servers and 2 workers shared 2 CPU cores" in note
    assert "waiting for a CPU" in note
    assert shared_cpu_note(["KTB"], 1, 2) is None  # fits
    assert shared_cpu_note([], 8, 2) is None  # external targets: nothing of ours competes with them


@pytest.mark.timeout(150)
def test_demo_against_a_node_deployment_given_by_one_url(spawn, tmp_path):
    """``--ktb-url`` alone (REST and Socket.IO on one port, the Node shape): the users pick the
    Node rules themselves and the run is clean."""
    import csv

    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--variant", "node", "--host", "127.0.0.1", "--port", str(port)), port=port,
          name="external-node")
    out = tmp_path / "out"
    demo = spawn(loadkit_argv("demo", "--run-time", "8s", "--workers", "1", "--users", "6", "--spawn-rate", "6",
                              "--out", str(out), "--ktb-url", f"http://127.0.0.1:{port}"), name="demo")
    code = demo.wait(130)
    text = demo.output()
    assert code == 0, text[-4000:]
    stats = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(out / "locust_stats.csv"))}
    assert int(stats[("", "Aggregated")]["Failure Count"]) == 0, (out / "locust_failures.csv").read_text()
    assert int(stats[("ktb", "chatMessage")]["Request Count"]) > 0
    assert ("POST", "/api/auth/login") not in stats  # Node's register logs in
    logs = "".join(p.read_text(errors="replace") for p in (out / "logs").glob("*.log"))
    assert "KTB server variant node" in logs, text[-3000:]


def test_master_verdicts_say_why_the_master_exited_non_zero():
    """The demo repeats the master's own loadkit error lines: a run with no failed request may still
    exit 1 (an operation the server never answered), and a bare "exit code 1" told nobody why."""
    from loadkit.demo import master_verdicts

    out = ("[2026-12-06 19:12:30,000] h/INFO/locust.main: Shutting down (exit code 1)\n"
           "[2026-12-06 19:12:29,900] h/WARNING/loadkit.unfinished: loadkit: unfinished at the end of the run …\n"
           "[2026-12-06 19:12:29,901] h/ERROR/loadkit.unfinished: loadkit: ktb joinRoom: no request completed\n"
           "[2026-12-06 19:12:29,902] h/ERROR/loadkit.distributed: loadkit: the run ended with less load than asked\n"
           "[2026-12-06 19:12:29,903] h/ERROR/loadkit.unfinished: loadkit: ktb joinRoom: no request completed\n"
           "[2026-12-06 19:12:29,904] h/ERROR/locust.runners: not ours\n")
    assert master_verdicts(out) == ["loadkit: ktb joinRoom: no request completed",
                                    "loadkit: the run ended with less load than asked"]
    assert master_verdicts("") == []


def test_progress_shows_the_workers_the_window_counted_not_the_minimum(tmp_path):
    """External workers counted by --workers-window: the line after the window says how many the
    master counted (2), not --expect-workers' minimum of 1 (it said "1 worker(s) connected")."""
    from loadkit.cli import build_parser
    from loadkit.demo import _Demo

    args = build_parser().parse_args(["demo", "--workers", "0", "--workers-window", "5", "--out", str(tmp_path)])
    demo = _Demo(args)

    class _Master:
        text = ""

        def output(self) -> str:
            return self.text

    demo.master = _Master()
    demo.master.text = "x reported as ready\ny reported as ready\n"
    assert "waiting for workers: 2 connected (counting until none new for 5s)" in demo.progress_line(4.0)
    demo.master.text += "[t] h/INFO/loadkit.workers_window: loadkit: 2 worker(s) connected (none new for 5s); starting with 2\n"
    assert demo.progress_line(6.0).endswith("2 worker(s) connected, starting users")
