"""The measurement contract (issue #13): requests are Locust request events, everything else is a
loadkit metric; the plugin is installed on the run's own environment; identity is per process."""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
import requests

from loadkit.procs import free_port, loadkit_argv, own_master_port_args
from loadkit.protocols import ktb_nonce



ROOT = Path(__file__).resolve().parent.parent


def _recording_env(**options):
    from locust.event import Events

    env = SimpleNamespace(events=Events(), parsed_options=SimpleNamespace(**options), runner=None)
    fired: list[dict] = []
    env.events.request.add_listener(lambda **kw: fired.append(kw))
    return env, fired


def test_metrics_are_not_request_events_unless_phase_rows_are_asked_for():
    from loadkit.metrics import hdr
    from loadkit.users.measure import Measure

    env, fired = _recording_env(loadkit_phase_rows="off")
    m = Measure(env, "chldo")
    before = {k: op.count for k, op in hdr.METRICS.ops.items()}
    m.request("sendmsg", 812.5, 120)
    m.metric("ttft", 301.25)
    m.metric("chunks", 40.0)
    assert [(e["request_type"], e["name"], e["response_time"]) for e in fired] == [("chldo", "sendmsg", 812.5)]
    after = hdr.METRICS.ops
    assert after[("chldo", "ttft")].count == before.get(("chldo", "ttft"), 0) + 1
    assert after[("chldo", "chunks")].count == before.get(("chldo", "chunks"), 0) + 1

    env, fired = _recording_env(loadkit_phase_rows="on")
    m = Measure(env, "chldo")
    m.metric("ttft", 301.25)
    m.metric("chunks", 40.0)  # a count is never shown as milliseconds, not even on request
    assert [(e["request_type"], e["name"], e["response_time"]) for e in fired] == [("chldo-phase", "ttft", 301.25)]


def test_metric_rows_carry_kind_and_unit(tmp_path):
    from loadkit.metrics.histograms import METRIC_COLUMNS, HdrStore, read_csv

    store = HdrStore()
    for v in (39.0, 40.0, 41.0):
        store.record("chldo", "chunks", v)
    store.record("chldo", "chunks_per_s", 49.5)
    store.record("ktb", "delivery", 1.234)
    path = tmp_path / "run_metrics.csv"
    store.write_metrics_csv(path)
    rows = read_csv(path, METRIC_COLUMNS)
    assert {k: (r["Kind"], r["Unit"]) for k, r in rows.items()} == {
        ("chldo", "chunks"): ("count", "count"), ("chldo", "chunks_per_s"): ("rate", "1/s"),
        ("ktb", "delivery"): ("latency", "ms")}
    assert rows[("chldo", "chunks")]["Count"] == 3 and rows[("chldo", "chunks")]["Mean"] == 40.0
    assert rows[("ktb", "delivery")]["Max"] == pytest.approx(1.234, abs=1e-3)
    assert ("", "Aggregated") not in rows  # milliseconds and counts do not add up


@pytest.mark.timeout(60)
def test_library_mode_environment_gets_requests_and_metrics(spawn):
    """``Environment(events=Events())``: no Locust ``init`` runs loadkit's listener, yet the exact
    histograms see every request and the metrics, and Locust's stats hold requests only."""
    from locust.env import Environment
    from locust.event import Events

    from loadkit.metrics import hdr
    from loadkit.users.chldo import ChldoUser

    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "20", "--token-ms", "1",
                       "--answer-tokens", "5"), port=port, name="chldo")

    class Visitor(ChldoUser):
        prompts = ["hello"]

    env = Environment(user_classes=[Visitor], events=Events(), host=f"ws://127.0.0.1:{port}")
    hdr.STORE.clear()
    hdr.METRICS.clear()
    runner = env.create_local_runner()
    runner.start(2, spawn_rate=10)
    gevent.sleep(3.5)
    runner.quit()
    entries = {(e.method, e.name): e.num_requests for e in env.stats.entries.values()}
    assert set(entries) == {("chldo", "connect"), ("chldo", "sendmsg")}, entries
    turns = entries[("chldo", "sendmsg")]
    assert turns >= 4
    assert hdr.STORE.ops[("chldo", "sendmsg")].count == turns  # listener installed on this environment
    assert hdr.METRICS.ops[("chldo", "ttft")].count == turns
    assert hdr.METRICS.ops[("chldo", "chunks")].min_us == 5000  # 5 tokens, recorded as 5 × 1000


def test_a_forked_child_makes_its_own_identity():
    # The child's answer is read before it is reaped, and reaped with the unpatched waitpid: Locust's
    # gevent monkey-patching makes os.waitpid wait for a SIGCHLD watcher, which hung this test about
    # 3 times in 100 (the main thread asleep in gevent's hub; seen once in a full suite run).
    code = (
        "import os\n"
        "import loadkit.users.ktb\n"
        "import loadkit.users.ktb_state as k\n"
        "from gevent.monkey import get_original\n"
        "parent = (k.PID, k.RUN_ID)\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, f'{k.PID} {k.RUN_ID} {os.getpid()}'.encode()); os._exit(0)\n"
        "child_pid, child_run, real = os.read(r, 100).decode().split()\n"
        "get_original('os', 'waitpid')(pid, 0)\n"
        "assert int(child_pid) == int(real) == pid != parent[0], (child_pid, real, parent)\n"
        "assert child_run != parent[1]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.timeout(120)
def test_processes_sharing_a_room_never_share_a_sender_identity(spawn, tmp_path):
    """``locust --processes 2`` forks after the locustfile was imported. Every message's nonce must
    name exactly one account: two children reusing their parent's pid would take each other's
    messages in a shared room for their own echoes."""
    port, db = free_port(), tmp_path / "ktb.db"
    spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--single-port", "--db", str(db)), port=port, name="ktb")
    base = f"http://127.0.0.1:{port}"
    owner = {"name": "owner", "email": "owner@loadkit.test", "password": "loadkit-pass-1"}
    requests.post(f"{base}/api/auth/register", json=owner, timeout=10)
    login = requests.post(f"{base}/api/auth/login", json=owner, timeout=10).json()
    headers = {"x-auth-token": login["token"], "x-session-id": login["sessionId"]}
    room = requests.post(f"{base}/api/rooms", json={"name": "shared"}, headers=headers, timeout=10).json()["data"]["_id"]
    prefix = tmp_path / "run"
    argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "ktb_chat.py"), "--headless",
            "--processes", "2", *own_master_port_args(), "-u", "4", "-r", "4", "-t", "6s", "--host", base, "--ktb-room-id", room,
            "--ktb-weights", "chatMessage=1,fetchPreviousMessages=0,markMessagesAsRead=0,messageReaction=0,rejoin=0",
            "--ktb-wait-min", "0.05", "--ktb-wait-max", "0.1", "--csv", str(prefix), "--only-summary"]
    locust = spawn(argv, name="locust")
    assert locust.wait(timeout=90) == 0, locust.output()[-3000:]
    failures = list(csv.DictReader(open(f"{prefix}_failures.csv")))
    assert not failures, failures
    con = sqlite3.connect(db)
    senders: dict[tuple, set] = {}
    for sender, content in con.execute("SELECT sender, content FROM messages WHERE room = ?", (room,)):
        n = ktb_nonce.parse_content(content)
        if n is not None:
            senders.setdefault((n.host, n.pid, n.user), set()).add(sender)
    assert len({pid for _, pid, _ in senders}) == 2, senders  # both children sent
    assert len(senders) == 4 and all(len(s) == 1 for s in senders.values()), senders
    metrics = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(f"{prefix}_metrics.csv"))}
    assert int(metrics[("ktb", "delivery")]["Count"]) > 0
