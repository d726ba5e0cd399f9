"""Benchmark: loadkit's KtbChatUser vs Locust's built-in SocketIOUser, same target, one core each.

    python bench/bench_ktb_users.py [--seconds 12] [--scenarios 50x1,500x1,500x10] [--idle 19000]
                                    [--target node|python]

Target: a minimal Node socket.io 4 echo server speaking the KTB subset (bench/node_echo/server.js;
socket.io is npm-installed into bench/node_modules on first use) pinned to CPU 1; ``--target
python`` uses ``loadkit serve ktb`` instead (much slower server). Each Locust run is one process
pinned to CPU 0 (``taskset``), every user sending a chat message and waiting for its own echo
(rooms of 1, or rooms of 10 where each message is also delivered to 9 others), no wait time.

Prints, per scenario: round trips/s for both users (steady state: samples after the first third
of the run), the ratio, and Locust's own request count for loadkit; then the idle-connection
test: N idle loadkit connections in ONE process (limited by RLIMIT_NOFILE), RSS per connection.
The machine may be shared: figures are noisy, run it more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from loadkit.procs import ManagedProcess, free_port, loadkit_argv  # noqa: E402

CHAT_ONLY = "chatMessage=1,fetchPreviousMessages=0,markMessagesAsRead=0,messageReaction=0,rejoin=0"


def pinned(cpu: str, argv: list[str]) -> list[str]:
    return (["taskset", "-c", cpu] if shutil.which("taskset") else []) + argv


def ensure_node_echo() -> None:
    if (HERE / "node_modules" / "socket.io").exists():
        return
    print("installing socket.io@4 into bench/node_modules (benchmark only) ...", flush=True)
    subprocess.run(["npm", "install", "--no-save", "--no-package-lock", "--no-audit", "--no-fund", "--prefix",
                    str(HERE), "socket.io@4"], check=True)


def start_target(kind: str, logdir: Path, cpu: str = "1", env: dict[str, str] | None = None,
                 tag: str = "") -> tuple[ManagedProcess, str, str]:
    port = free_port()
    if kind == "node":
        ensure_node_echo()
        argv = pinned(cpu, ["node", str(HERE / "node_echo" / "server.js"), str(port)])
    else:
        argv = pinned(cpu, loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(port)))
    p = ManagedProcess(argv, log_path=logdir / f"target-{kind}{tag}.log", env=env,
                       wait_port=("127.0.0.1", port)).start()
    url = f"http://127.0.0.1:{port}"
    return p, url, url


def run_locust(cls: str, users: int, room: int, seconds: int, url: str, logdir: Path) -> dict:
    out = logdir / f"{cls}-{users}x{room}.json"
    prefix = logdir / f"{cls}-{users}x{room}"
    argv = pinned("0", [sys.executable, "-m", "locust", "-f", str(HERE / "locust_bench_ktb.py"), "--headless",
                        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", url, "--csv", str(prefix),
                        "--only-summary", "--stop-timeout", "3", "--ktb-wait-min", "0", "--ktb-wait-max", "0",
                        "--ktb-room-size", str(room), "--ktb-weights", CHAT_ONLY, "--ktb-timeout", "30", cls])
    env = {"BENCH_OUT": str(out), "BENCH_ROOM_SIZE": str(room)}
    p = ManagedProcess(argv, log_path=logdir / f"{cls}-{users}x{room}.log", env=env).start()
    p.wait(timeout=seconds + 120)
    p.stop()
    samples = json.loads(out.read_text()) if out.exists() else []
    rate = cpu_us = 0.0
    if len(samples) >= 4:
        k = len(samples) // 3
        (t0, c0, p0), (t1, c1, p1) = samples[k], samples[-2]
        rate = (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
        cpu_us = (p1 - p0) / (c1 - c0) * 1e6 if c1 > c0 else 0.0
    return {"rate": rate, "cpu_us": cpu_us, "total": samples[-1][1] if samples else 0}


FD_LIMIT_ERROR = ["not tried"]


def raise_fd_limit(want: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE (inherited by the probe process) to ``want`` if the machine lets us.

    Raising the hard limit needs CAP_SYS_RESOURCE; without it only the soft limit can move, up
    to the hard one. Returns the (soft, hard) limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
        FD_LIMIT_ERROR[0] = "raised"
    except (ValueError, OSError) as exc:
        FD_LIMIT_ERROR[0] = f"setrlimit({want}): {exc}; CAP_SYS_RESOURCE: {has_cap_sys_resource()}"
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def has_cap_sys_resource() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)  # CAP_SYS_RESOURCE is bit 24
    except OSError:
        pass
    return False


def median_run(runs: list[dict]) -> dict:
    """The run with the median rate (a real run, so its CPU figure belongs to its rate)."""
    if not runs:
        return {"rate": 0.0, "cpu_us": 0.0, "total": 0}
    return sorted(runs, key=lambda r: r["rate"])[(len(runs) - 1) // 2]


IDLE_PING_MS = 4000  # the targets ping every 4 s and drop a client that has not answered 4 s later
IDLE_HOLD_S = 12.0  # so a hold of 12 s spans at least two ping rounds for every connection


def idle_capacity(urls: list[str], n: int, logdir: Path) -> dict:
    """N idle connections in one fresh process, spread over ``urls``; see idle_probe."""
    argv = pinned("0", [sys.executable, str(Path(__file__)), "--idle-probe", ",".join(urls), str(n)])
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    (logdir / "idle.log").write_text(res.stdout + res.stderr)
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    return {"error": (res.stdout + res.stderr)[-1500:]}


def idle_probe(urls: list[str], n: int) -> None:
    """Open N idle loadkit connections in this process and hold them through two ping rounds.

    N = 0 means: every descriptor this process may still open (RLIMIT_NOFILE minus the ones it
    already holds: stdio, the event loop's epoll and eventfd). RSS is read with getrusage (peak
    RSS, which needs no file descriptor: at the limit, even reading /proc would fail).
    """
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.pool import Pool

    from loadkit.clients.socketio import SocketIOClient

    gevent.sleep(0)  # the hub (and its descriptors) exists from here on
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    own_fds = len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir used
    if n <= 0:
        n = soft - own_fds
    clients: list = []
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    errors: dict[str, int] = {}

    def one(i: int) -> None:
        c = SocketIOClient(urls[i % len(urls)], auth={"token": f"t{i:024x}", "sessionId": "s"}, connect_timeout=60)
        try:
            c.connect()
            clients.append(c)
        except Exception as exc:  # noqa: BLE001 - counted, reported
            key = type(exc).__name__ + ": " + str(exc)[:80]
            errors[key] = errors.get(key, 0) + 1

    t = time.time()
    pool = Pool(200)
    for i in range(n):
        pool.spawn(one, i)
    pool.join()
    elapsed = time.time() - t
    connected_now = sum(1 for c in clients if c.connected)
    gevent.sleep(IDLE_HOLD_S)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    alive = sum(1 for c in clients if c.connected)
    pongs_ok = all(c.connected for c in clients)
    print(json.dumps({"requested": n, "connected": connected_now, f"alive_after_{IDLE_HOLD_S:g}s": alive,
                      "all_alive": pongs_ok, "rlimit_nofile": soft, "own_fds": own_fds,
                      "connect_s": round(elapsed, 1), "rss_base_mb": round(base_kb / 1024, 1),
                      "rss_mb": round(rss_kb / 1024, 1),
                      "kb_per_conn": round((rss_kb - base_kb) / max(1, len(clients)), 2),
                      "errors": errors}), flush=True)
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--scenarios", default="50x1,500x1,500x10", help="USERSxROOMSIZE,...")
    ap.add_argument("--idle", type=int, default=0,
                    help="idle connections to open in one process (0: every descriptor the process may still open)")
    ap.add_argument("--no-idle", action="store_true")
    ap.add_argument("--no-builtin", action="store_true")
    ap.add_argument("--minimal", action="store_true", help="also run the minimal websocket-client loop (reference)")
    ap.add_argument("--target", choices=["node", "python"], default="node")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per user class and scenario, interleaved (the machine's speed drifts: "
                         "compare medians of interleaved runs, not single runs)")
    ap.add_argument("--idle-probe", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.idle_probe:
        idle_probe(args.idle_probe[0].split(","), int(args.idle_probe[1]))
        return 0
    logdir = Path(tempfile.mkdtemp(prefix="bench-ktb-"))
    print(f"logs: {logdir}   (generator: CPU 0, target: CPU 1, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})")
    rows = []
    for spec in filter(None, args.scenarios.split(",")):
        users, room = (int(x) for x in spec.split("x"))
        runs: dict[str, list[dict]] = {"LoadkitChat": [], "BuiltinChat": [], "MinimalChat": []}
        classes = ["LoadkitChat"] + ([] if args.no_builtin else ["BuiltinChat"]) + (["MinimalChat"] if args.minimal else [])
        target, url, _ = start_target(args.target, logdir)
        try:
            for _ in range(max(1, args.repeat)):
                for cls in classes:
                    runs[cls].append(run_locust(cls, users, room, args.seconds, url, logdir))
        finally:
            target.stop()
        lk, bi, mi = (median_run(runs[c]) for c in ("LoadkitChat", "BuiltinChat", "MinimalChat"))
        ratio = lk["rate"] / bi["rate"] if bi["rate"] else float("nan")
        rows.append((users, room, lk["rate"], bi["rate"], ratio))
        cpu_ratio = bi["cpu_us"] / lk["cpu_us"] if lk["cpu_us"] else float("nan")
        print(f"{users:4d} users, rooms of {room:2d}: loadkit {lk['rate']:8.0f} rt/s ({lk['cpu_us']:5.1f} CPU us/rt)   "
              f"built-in {bi['rate']:8.0f} rt/s ({bi['cpu_us']:5.1f} CPU us/rt)   ratio {ratio:5.2f}x "
              f"(CPU/rt ratio {cpu_ratio:4.2f}x)   load {os.getloadavg()[0]:.2f}", flush=True)
        if args.minimal:
            print(f"{'':24s}minimal websocket-client loop (reference): {mi['rate']:8.0f} rt/s ({mi['cpu_us']:5.1f} CPU us/rt)",
                  flush=True)
        if args.repeat > 1:
            for cls in classes:
                rates = ", ".join(f"{r['rate']:.0f}" for r in runs[cls])
                print(f"{'':24s}{cls} runs (rt/s, in run order): {rates}", flush=True)
    if not args.no_idle:
        soft, hard = raise_fd_limit(20_200)
        # two targets, each holding half: a Node process is bound by the same descriptor limit
        env = {"PING_MS": str(IDLE_PING_MS)}
        targets = [start_target("node", logdir, cpu, env, tag=f"-idle{cpu}") for cpu in ("1", "1")]
        try:
            res = idle_capacity([url for _, url, _ in targets], args.idle, logdir)
        finally:
            for t, _, _ in targets:
                t.stop()
        print(f"idle connections in one process: {json.dumps(res)}")
        if soft < 20_100:
            print(f"  note: RLIMIT_NOFILE is {soft} (hard limit {hard}) and could not be raised "
                  f"({FD_LIMIT_ERROR[0]}): a process here can hold at most {soft} descriptors, "
                  f"{res.get('own_fds', '?')} of which the probe needs for itself (stdio, epoll, eventfd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
