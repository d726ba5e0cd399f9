"""CPU per reported chldo turn: one request event + eight loadkit metrics vs nine request events.

Issue #13 moved the phases and per-turn figures of a chldo turn out of Locust's request statistics
into loadkit's metric histograms. This prints what reporting one successful turn costs in the
generator, both ways, on a real Locust ``Environment`` with loadkit's listeners installed (Locust's
stats entry + loadkit's exact histogram per event, as in a run). Interleaved rounds; the ratio is
the figure (this machine is shared and noisy).

    python bench/bench_measure.py [--turns 20000] [--rounds 5]
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from locust.env import Environment  # noqa: E402
from locust.event import Events  # noqa: E402

from loadkit import plugin  # noqa: E402
from loadkit.metrics import hdr  # noqa: E402
from loadkit.users.measure import Measure  # noqa: E402

FIGURES = (("time_to_start", 1.2), ("som_to_eom", 680.4), ("ttft", 301.3), ("chunks", 40.0), ("chars", 180.0),
           ("chunks_per_s", 49.9), ("chunk_gap", 20.1), ("chunk_gap_max", 24.6))


def as_request_events(env: Environment, turns: int) -> float:
    """Before issue #13: every figure a request event (Locust stats + loadkit's request histogram)."""
    fire = env.events.request.fire
    t0 = time.process_time()
    for _ in range(turns):
        fire(request_type="chldo", name="sendmsg", response_time=812.5, response_length=180, exception=None, context={})
        for name, value in FIGURES:
            fire(request_type="chldo", name=name, response_time=value, response_length=0, exception=None, context={})
    hdr.STORE.flush()
    return (time.process_time() - t0) / turns * 1e6


def as_metrics(measure: Measure, turns: int) -> float:
    """Now: one request event, eight metric samples."""
    t0 = time.process_time()
    for _ in range(turns):
        measure.request("sendmsg", 812.5, 180, None)
        for name, value in FIGURES:
            measure.metric(name, value)
    hdr.METRICS.flush()
    hdr.STORE.flush()
    return (time.process_time() - t0) / turns * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    env = Environment(events=Events())
    env.create_local_runner()
    plugin.install(env)
    measure = Measure(env, "chldo")
    old, new = [], []
    for _ in range(args.rounds):
        old.append(as_request_events(env, args.turns))
        new.append(as_metrics(measure, args.turns))
        env.stats.reset_all()
        hdr.STORE.clear()
        hdr.METRICS.clear()
    o, n = statistics.median(old), statistics.median(new)
    print(f"per turn, median of {args.rounds} interleaved rounds of {args.turns} turns (CPU µs):")
    print(f"  9 request events (before): {o:7.2f} µs   rounds {', '.join(f'{v:.2f}' for v in old)}")
    print(f"  1 request + 8 metrics:     {n:7.2f} µs   rounds {', '.join(f'{v:.2f}' for v in new)}")
    print(f"  ratio new/old: {n / o:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
