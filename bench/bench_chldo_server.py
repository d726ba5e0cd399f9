"""Timing accuracy of the chldo reference server with many connections open at once.

Starts ``loadkit serve chldo`` (first token 300 ms, 20 ms/token by default) and holds N gevent
connections (this process), each doing turn after turn with a think time, for a bounded time. Prints
how far the server's delays were from the configured ones, as the client saw them:

* first-token error = (ttft − time_to_start) − first_token_ms   (START leaves at receipt)
* gap error         = per-turn mean inter-token gap − token_ms, and the per-turn max gap
* server CPU share, from /proc

    python bench/bench_chldo_server.py [--connections 1000] [--seconds 20] [--pin]

``--pin`` puts the server on CPU 1 and this client on CPU 0 (``taskset``), so that "client CPU per
frame" is one core's figure with the target on the other core (the chldo client's speed goal,
>= 60k frames/s per core, is measured that way).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_chldo_frames import RecvCounter  # noqa: E402
from loadkit.clients.chldo import ChldoClient  # noqa: E402
from loadkit.procs import ManagedProcess, free_port, loadkit_argv  # noqa: E402
from loadkit.protocols.chldo import build_sendmsg  # noqa: E402


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and its children (the pre-forked server processes)."""
    total = proc_cpu_seconds(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        kids = []
    for kid in kids:
        try:
            total += proc_cpu_seconds(kid)
        except OSError:
            pass
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--first-token-ms", type=float, default=300.0)
    ap.add_argument("--token-ms", type=float, default=20.0)
    ap.add_argument("--answer-tokens", type=int, default=40)
    ap.add_argument("--think", type=float, default=1.0)
    ap.add_argument("--server-processes", type=int, default=1, help="loadkit serve chldo --processes")
    ap.add_argument("--url", help="measure an already running server (first token/token delays must match)")
    ap.add_argument("--ramp-per-s", type=float, default=500.0, help="new connections per second")
    ap.add_argument("--pin", action="store_true", help="server on CPU 1, this client on CPU 0 (taskset)")
    args = ap.parse_args()
    pin: list[str] = []
    if args.pin:
        if not shutil.which("taskset") or (os.cpu_count() or 1) < 2:
            print("--pin needs taskset and two CPUs", file=sys.stderr)
            return 2
        os.sched_setaffinity(0, {0})
        pin = ["taskset", "-c", "1"]

    port = free_port()
    server = None if args.url else ManagedProcess(
        pin + loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", str(args.first_token_ms),
                     "--token-ms", str(args.token_ms), "--answer-tokens", str(args.answer_tokens),
                     "--processes", str(args.server_processes)),
        log_path="/tmp/bench_chldo_server_timing.log", wait_port=("127.0.0.1", port),
    )
    if server is not None:
        server.start()
    url = args.url or f"ws://127.0.0.1:{port}"
    server_pid = server.proc.pid if server is not None else None  # CPU unknown for a server we did not start
    first_err: list[float] = []
    gap_err: list[float] = []
    gap_max: list[float] = []
    failures: dict[str, int] = {}
    open_now = [0, 0]  # current, peak
    stop_at = time.perf_counter() + args.seconds
    frames_after_ramp = [0]  # every frame the clients classified after the ramp (for the CPU per frame)
    clients: list[ChldoClient] = []
    frames_at_ramp = [0]
    measure_from = [stop_at]  # set when the ramp is over: turns of the ramp are not measured

    def visitor(i: int) -> None:
        client = ChldoClient(url, connect_timeout=30)
        clients.append(client)
        try:
            client.connect()
        except Exception as exc:  # counted, not fatal
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            return
        open_now[0] += 1
        open_now[1] = max(open_now[1], open_now[0])
        req = build_sendmsg(api_key="demo-key", room_uid=f"t{i}", user_id=f"u{i}", msg=f"timing {i % 7}")
        try:
            while time.perf_counter() < stop_at:
                turn = client.sendmsg(req, timeout=30)
                if turn.error is not None:
                    key = type(turn.error).__name__
                    failures[key] = failures.get(key, 0) + 1
                    if not client.connected:
                        client.connect()
                elif turn.t_send >= measure_from[0]:
                    first_err.append(turn.ttft_ms - turn.time_to_start_ms - args.first_token_ms)
                    if turn.gap_mean_ms is not None:
                        gap_err.append(turn.gap_mean_ms - args.token_ms)
                        gap_max.append(turn.gap_max_ms)
                gevent.sleep(args.think)
        finally:
            open_now[0] -= 1
            client.close()

    lag: list[float] = []

    def lag_probe() -> None:  # how late this process's own event loop wakes up (client-side stalls)
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            gevent.sleep(0.01)
            if t >= measure_from[0]:
                lag.append((time.perf_counter() - t - 0.01) * 1000.0)

    gevent.spawn(lag_probe)
    cpu0, t0 = (tree_cpu_seconds(server_pid) if server_pid else 0.0), time.perf_counter()
    my0 = proc_cpu_seconds(os.getpid())
    pool = Pool(args.connections)
    try:
        for i in range(args.connections):
            pool.spawn(visitor, i)
            gevent.sleep(1.0 / args.ramp_per_s)
        measure_from[0] = time.perf_counter()
        frames_at_ramp[0] = sum(c.session.frames for c in clients)
        my_ramp = proc_cpu_seconds(os.getpid())
        reads = RecvCounter()
        pool.join(timeout=args.seconds + 60)
        n_reads = reads.stop()
        # not the frames of the good turns that began after the ramp: the turns in flight when it
        # ended count too (their frames cost CPU in the window), and so do failed ones
        frames_after_ramp[0] = sum(c.session.frames for c in clients) - frames_at_ramp[0]
    finally:
        wall = time.perf_counter() - t0
        cpu = (tree_cpu_seconds(server_pid) - cpu0) if server_pid else float("nan")
        my_cpu = proc_cpu_seconds(os.getpid()) - my0
        if server is not None:
            server.stop()
    print(f"connections {args.connections} (peak open {open_now[1]}), {len(first_err)} good turns, "
          f"failures {failures or 'none'}")
    print(f"server CPU {cpu:.1f} s over {wall:.1f} s ({100 * cpu / wall:.0f}% of one core); client CPU {my_cpu:.1f} s "
          f"({100 * my_cpu / wall:.0f}%), of which the ramp {my_ramp - my0:.1f} s; measured after the ramp only")
    if frames_after_ramp[0]:
        per = (my_cpu - (my_ramp - my0)) / frames_after_ramp[0] * 1e6
        fpr = f"{frames_after_ramp[0] / n_reads:.2f}" if n_reads else "n/a (no perf)"
        print(f"client CPU per frame after the ramp: {per:.1f} us ({fpr} frames per recv) "
              f"-> {1e6 / per:,.0f} frames/s per client core at this spacing and this client load")
    for label, vals in (("first-token error ms", first_err), ("mean-gap error ms", gap_err),
                        ("max gap per turn ms", gap_max), ("client loop lag ms", lag)):
        if vals:
            print(f"{label:22s} median {statistics.median(vals):7.2f}  p90 {pct(vals, 0.9):7.2f}  "
                  f"p99 {pct(vals, 0.99):7.2f}  max {max(vals):7.2f}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
