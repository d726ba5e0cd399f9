"""Client-side frame throughput of the chldo stream on one generator core.

Starts ``loadkit serve chldo`` with zero delays in another process, then drives N gevent connections
(this process, one core) turn after turn for a bounded time, and prints frames processed per second
of wall time and per second of this process's CPU time (the figure that says what one Locust worker
core can absorb; the wall-clock rate is capped by the server when it is the slower side).

    python bench/bench_chldo_client.py [--connections 20] [--seconds 10] [--answer-tokens 400]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from loadkit.clients.chldo import ChldoClient  # noqa: E402
from loadkit.procs import ManagedProcess, free_port, loadkit_argv  # noqa: E402
from loadkit.protocols.chldo import build_sendmsg  # noqa: E402
from loadkit.protocols.chldo_turn import _loads  # noqa: E402


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--answer-tokens", type=int, default=400)
    ap.add_argument("--max-turns", type=int, default=100000, help="bound on turns in total")
    ap.add_argument("--url", help="use an already running server instead of starting one")
    args = ap.parse_args()

    server = None
    url = args.url
    if url is None:
        port = free_port()
        server = ManagedProcess(
            loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "0", "--token-ms", "0",
                         "--answer-tokens", str(args.answer_tokens), "--ping-interval", "0"),
            log_path="/tmp/bench_chldo_server.log", wait_port=("127.0.0.1", port),
        ).start()
        url = f"ws://127.0.0.1:{port}"
    totals = {"frames": 0, "turns": 0, "failed": 0, "chunks": 0}
    stop_at = time.perf_counter() + args.seconds

    def worker(i: int) -> None:
        client = ChldoClient(url)
        client.connect()
        req = build_sendmsg(api_key="demo-key", room_uid=f"bench{i}", user_id=f"u{i}", msg=f"benchmark {i}")
        try:
            while time.perf_counter() < stop_at and totals["turns"] < args.max_turns:
                before = client.session.frames
                turn = client.sendmsg(req, timeout=30)
                totals["frames"] += client.session.frames - before
                totals["turns"] += 1
                totals["chunks"] += turn.chunks
                if turn.error is not None:
                    totals["failed"] += 1
                    print(f"turn failed: {turn.error!r}", file=sys.stderr)
                    client.connect()
        finally:
            client.close()

    try:
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        gevent.joinall([gevent.spawn(worker, i) for i in range(args.connections)], raise_error=True)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    finally:
        if server is not None:
            server.stop()
    f = totals["frames"]
    print(f"json: {_loads.__module__}; connections {args.connections}; answer tokens {args.answer_tokens}; "
          f"pid {os.getpid()}")
    print(f"turns {totals['turns']} (failed {totals['failed']}), frames {f}, token frames {totals['chunks']}")
    print(f"wall {wall:.2f} s, client CPU {cpu:.2f} s ({100 * cpu / wall:.0f}% of one core)")
    print(f"frames/s (wall clock)          : {f / wall:,.0f}")
    print(f"frames/s per client CPU second : {f / cpu:,.0f}   <- capacity of one generator core")
    return 0 if totals["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
