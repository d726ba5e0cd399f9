"""Benchmark: generator CPU per chat round trip over a fixed number of round trips, interleaved.

    python bench/bench_ktb_cpu.py [--users 500] [--round-trips 60000] [--repeat 4]
                                  [--classes LoadkitChat,MinimalChat] [--opcodes]
                                  [--trees /work/main,.]

Why next to bench_ktb_users.py: round trips/s on a shared VM swing by ±30 % from one minute to the
next, so a change worth 10 % is invisible in single runs. Here each measurement is one fresh
process (pinned to CPU 0, the Node echo target of bench_ktb_users.py on CPU 1) that runs the
users in-process until they are all connected and warm, then counts ``time.process_time()`` over
exactly ``--round-trips`` chat round trips; the classes take turns ``--repeat`` times and the
medians are printed.

``--trees A,B`` compares code trees instead of (or as well as) classes: each measurement runs
``A/bench/bench_ktb_cpu.py`` with ``PYTHONPATH=A`` (so it imports A's ``loadkit``), the trees take
turns like the classes, and the medians are printed per tree and class (an A/B of a refactor:
``--trees /path/to/main,. --classes LoadkitChat``).

``--opcodes`` instead traces one process and prints the Python bytecodes executed per round trip,
per function (deterministic: the same code gives the same counts on any machine, so it shows
where Python work goes without timing noise).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from opcount import opcode_tracer, print_top  # noqa: E402

CHAT_ONLY = "chatMessage=1,fetchPreviousMessages=0,markMessagesAsRead=0,messageReaction=0,rejoin=0"


def measure(cls_name: str, users: int, round_trips: int, url: str, warm_s: float, opcodes: bool) -> None:
    """Runs inside the measuring process (``--measure``); prints one result line."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from locust import events
    from locust.argument_parser import parse_options
    from locust.env import Environment

    import locust_bench_ktb as bench

    opts = parse_options(["-f", str(HERE / "locust_bench_ktb.py"), "--host", url, "--ktb-wait-min", "0",
                          "--ktb-wait-max", "0", "--ktb-room-size", "1", "--ktb-weights", CHAT_ONLY])
    env = Environment(user_classes=[getattr(bench, cls_name)], events=events, host=url, parsed_options=opts)
    runner = env.create_local_runner()
    events.init.fire(environment=env, runner=runner, web_ui=None)
    runner.start(users, spawn_rate=users)
    deadline = time.monotonic() + 120
    while bench.ROUND_TRIPS[0] < users * 3 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    gevent.sleep(warm_s)  # every user connected and in its steady loop
    counts: collections.Counter = collections.Counter()

    tracer = opcode_tracer(counts)

    start = bench.ROUND_TRIPS[0]
    cpu0 = time.process_time()
    if opcodes:
        sys.settrace(tracer)
    while bench.ROUND_TRIPS[0] < start + round_trips and time.monotonic() < deadline + 600:
        gevent.sleep(0.001)
    sys.settrace(None)
    cpu = time.process_time() - cpu0
    n = max(1, bench.ROUND_TRIPS[0] - start)
    if opcodes:
        print(f"{cls_name} {users} users: {n} round trips, {sum(counts.values()) / n:.0f} bytecodes per round trip")
        print_top(counts, n, 40, digits=1)
    else:
        print(f"RESULT {cls_name} {n} {cpu / n * 1e6:.2f}")
    sys.stdout.flush()
    os._exit(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--round-trips", type=int, default=60_000)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--classes", default="LoadkitChat,MinimalChat")
    ap.add_argument("--warm", type=float, default=2.0, help="seconds of steady state before counting")
    ap.add_argument("--opcodes", action="store_true", help="count bytecodes per round trip instead (one run)")
    ap.add_argument("--trees", default="", help="comma-separated code trees to compare (each run imports that "
                    "tree's loadkit and bench scripts); default: this script's own tree")
    ap.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        measure(args.measure[0], args.users, args.round_trips, args.measure[1], args.warm, args.opcodes)
        return 0

    from bench_ktb_users import pinned, start_target

    logdir = Path(tempfile.mkdtemp(prefix="bench-ktb-cpu-"))
    target, url, _ = start_target("node", logdir)
    classes = [c for c in args.classes.split(",") if c]
    trees = [Path(t).resolve() for t in args.trees.split(",") if t] or [ROOT]
    runs = [(t, c) for c in classes for t in trees]

    def label(tree: Path, cls: str) -> str:
        return cls if len(trees) == 1 else f"{tree}:{cls}"

    results: dict[str, list[float]] = {label(t, c): [] for t, c in runs}
    try:
        for i in range(1 if args.opcodes else max(1, args.repeat)):
            for tree, cls in runs:
                script = tree / "bench" / "bench_ktb_cpu.py"
                argv = pinned("0", [sys.executable, str(script), "--users", str(args.users), "--round-trips",
                                    str(args.round_trips), "--warm", str(args.warm), "--measure", cls, url]
                              + (["--opcodes"] if args.opcodes else []))
                env = dict(os.environ, PYTHONPATH=str(tree))
                res = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, cwd=str(tree))
                cls = label(tree, cls)
                if args.opcodes:
                    print(res.stdout.strip() or res.stderr[-2000:])
                    continue
                line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(f"{cls}: no result\n{res.stderr[-2000:]}")
                    continue
                us = float(line.split()[3])
                results[cls].append(us)
                print(f"run {i + 1} {cls:12s} {us:6.1f} CPU us per round trip", flush=True)
    finally:
        target.stop()
    if not args.opcodes:
        print(f"{args.users} users, {args.round_trips} round trips per run, load {os.getloadavg()[0]:.2f}:")
        for cls, values in results.items():
            if values:
                print(f"  {cls:12s} median {statistics.median(values):6.1f} CPU us per round trip "
                      f"(runs: {', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
