"""A distributed run across hosts: network namespaces joined by veth links on a private subnet.

Four "hosts" — targets, master, two workers — each a network namespace with its own address on
a /24 that only exists inside the namespaces (a fifth namespace holds the bridge joining them,
so nothing is added to the machine's own network). The workers reach the master by its address
and the users reach the KTB and chldo targets across the veth links over real TCP; nothing listens
on a loopback that two hosts share. Mid-run one worker host is cut off (its link goes down): the
master carries on with the other, names the lost worker (host name, pid) and keeps what it had
reported; the run ends with merged exact percentiles and the HTML report.

Needs root (CAP_NET_ADMIN) and ``ip`` (iproute2) and ``unshare`` (util-linux): otherwise the test
is skipped with the reason. Every namespace is deleted at the end, also when the test fails.

    sudo python3 -m pytest tests/test_multihost.py
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from test_distributed import CORE_OPERATIONS, assert_hdr_matches_locust, locust_stats

ROOT = Path(__file__).resolve().parent.parent
SUBNET = "10.213.17"  # a /24 that lives only inside the test's namespaces
HOSTS = {"targets": 1, "master": 2, "w0": 3, "w1": 4}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


class Net:
    """The namespaces, the bridge and the veth links of one test; ``remove()`` deletes them all."""

    def __init__(self) -> None:
        self.tag = f"lk{uuid.uuid4().hex[:6]}"  # interface names must stay within 15 characters
        self.hub = f"{self.tag}hub"
        self.ns = {host: f"{self.tag}{host}" for host in HOSTS}
        self.created: list[str] = []

    def addr(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS[host]}"

    def link(self, host: str) -> str:
        """The hub side of ``host``'s veth pair (down = the host is cut off)."""
        return f"{self.tag}{HOSTS[host]}h"

    def create(self) -> None:
        for name in (self.hub, *self.ns.values()):
            _ip("netns", "add", name)
            self.created.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for host, ns in self.ns.items():
            inner = f"{self.tag}{HOSTS[host]}n"
            _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", "name", self.link(host), "netns", self.hub)
            _ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", self.hub, "link", "set", self.link(host), "master", "br0")
            _ip("-n", self.hub, "link", "set", self.link(host), "up")

    def remove(self) -> None:
        for name in reversed(self.created):  # deleting a namespace deletes the veth ends inside it
            _ip("netns", "delete", name, check=False)
        self.created.clear()

    def argv(self, host: str, argv: list[str]) -> list[str]:
        """Run ``argv`` on ``host``: in its namespace, with its own host name (Locust's worker ids use it)."""
        return ["ip", "netns", "exec", self.ns[host], "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', f"lk-{host}", *argv]

    def wait_port(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Wait until ``host``'s address answers on ``port``, connecting from the master's host."""
        probe = ("import socket, sys, time\n"
                 "deadline = time.monotonic() + float(sys.argv[3])\n"
                 "while True:\n"
                 "    try:\n"
                 "        socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close(); break\n"
                 "    except OSError:\n"
                 "        if time.monotonic() > deadline: sys.exit(1)\n"
                 "        time.sleep(0.2)\n")
        out = subprocess.run(["ip", "netns", "exec", self.ns["master"], sys.executable, "-c", probe,
                              self.addr(host), str(port), str(timeout)], timeout=timeout + 10)
        assert out.returncode == 0, f"{host} {self.addr(host)}:{port} did not answer within {timeout}s"


@pytest.fixture
def net():
    missing = [tool for tool in ("ip", "unshare") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install iproute2 util-linux)")
    n = Net()
    try:
        n.create()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        n.remove()
        pytest.skip(f"cannot create network namespaces here (needs root / CAP_NET_ADMIN): {exc}")
    try:
        yield n
    finally:
        n.remove()


def _history_users(prefix: Path) -> int:
    try:
        with open(f"{prefix}_stats_history.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    except OSError:
        return 0
    return int(float(rows[-1]["User Count"])) if rows else 0


@pytest.mark.timeout(150)
def test_distributed_run_across_namespaces_survives_a_cut_off_worker_host(net, spawn, tmp_path):
    # `net` first: its cleanup runs after `spawn` has stopped every process
    py = sys.executable
    t = net.addr("targets")
    spawn(net.argv("targets", [py, "-m", "loadkit", "serve", "ktb", "--host", "0.0.0.0", "--port", "5002",
                               "--rest-port", "5001"]), name="ktb")
    spawn(net.argv("targets", [py, "-m", "loadkit", "serve", "chldo", "--host", "0.0.0.0", "--port", "8765"]),
          name="chldo")
    for port in (5001, 5002, 8765):
        net.wait_port("targets", port)
    out = tmp_path / "run"
    users = 6
    demo = spawn(net.argv("master", [
        py, "-m", "loadkit", "demo", "--workers", "0", "--expect-workers", "2",
        "--master-bind-host", net.addr("master"), "--master-port", "5557", "--wait-workers", "40",
        "--run-time", "18s", "--users", str(users), "--spawn-rate", str(users), "--out", str(out),
        "--ktb-url", f"http://{t}:5001", "--ktb-socket-url", f"http://{t}:5002", "--chldo-url", f"ws://{t}:8765",
    ]), name="master", cwd=ROOT)
    worker_env = {"LOADKIT_MASTER_WAIT": "40", "LOADKIT_MASTER_TIMEOUT": "5"}
    workers = {host: spawn(net.argv(host, [py, "-m", "locust", "-f", str(ROOT / "locustfiles" / "mixed.py"),
                                           "--worker", "--master-host", net.addr("master"), "--master-port", "5557"]),
                           name=host, env=worker_env, cwd=ROOT)
               for host in ("w0", "w1")}

    # both workers run their users and report (every 3 s) at least twice, then w1's host is cut off
    prefix = out / "locust"
    deadline = time.monotonic() + 60
    while _history_users(prefix) < users:
        assert time.monotonic() < deadline and demo.returncode is None, demo.output()[-3000:]
        time.sleep(0.3)
    time.sleep(7)
    _ip("-n", net.hub, "link", "set", net.link("w1"), "down")
    cut_at = time.monotonic()

    assert demo.wait(90) == 1, demo.output()[-4000:]  # 1: a worker was lost (the run itself completed)
    assert time.monotonic() - cut_at > 3  # the run went on after the cut
    # the cut-off worker hears no master heartbeat and gives up; the other is told to quit
    assert workers["w1"].wait(30) == 3, workers["w1"].output()[-2000:]
    assert "lost the Locust master at " + net.addr("master") in workers["w1"].output()
    assert workers["w0"].wait(30) == 0, workers["w0"].output()[-2000:]

    # merged exact percentiles: Locust's counts = HDR counts = what the two workers reported
    hdr = assert_hdr_matches_locust(prefix)
    stats = locust_stats(prefix)
    assert CORE_OPERATIONS <= set(stats), CORE_OPERATIONS - set(stats)
    assert int(stats[("", "Aggregated")]["Failure Count"]) == 0, (out / "locust_failures.csv").read_text()
    detail = {w["hostname"]: w for w in json.loads(Path(f"{prefix}_workers.json").read_text())["workers"]}
    assert set(detail) == {"lk-w0", "lk-w1"}
    lost, kept = detail["lk-w1"], detail["lk-w0"]
    assert lost["lost"] == "true" and lost["state"] == "missing" and lost["final_report"] == "false"
    assert int(lost["reports"]) >= 2 and int(lost["requests"]) > 0  # what it contributed is kept
    assert kept["lost"] == "false" and int(kept["requests"]) > 0
    assert kept["last_seen"] > lost["last_seen"]  # the other worker went on reporting after the cut
    assert int(lost["pid"]) == workers["w1"].proc.pid and int(kept["pid"]) == workers["w0"].proc.pid
    assert int(lost["requests"]) + int(kept["requests"]) == hdr[("", "Aggregated")]["Count"]

    # the master says which worker and what it contributed, the demo repeats it, the report opens with it
    master_log = (out / "logs" / "master.log").read_text()
    assert f"worker {lost['client_id']} (index" in master_log and "went missing; keeping the" in master_log
    assert lost["client_id"].startswith("lk-w1_")
    summary = demo.output()
    assert f"LOST 1: {lost['client_id']}" in summary and f"{lost['requests']} requests kept" in summary
    html = (out / "report.html").read_text(encoding="utf-8")
    assert lost["client_id"] in html and "exact" in html
