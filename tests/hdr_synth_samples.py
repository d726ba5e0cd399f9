"""Deterministic synthetic latencies (ms) shared by the synthetic locustfile and the HDR tests.

A mixture that exercises what Locust's rounding loses: mostly sub-millisecond values, a body of
1-150 ms values and a heavy tail up to seconds.
"""

from __future__ import annotations

import random


def samples(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.6:
            out.append(rng.lognormvariate(-1.4, 0.5))  # ~0.25 ms median
        elif u < 0.95:
            out.append(rng.uniform(1.0, 150.0))
        else:
            out.append(100.0 + rng.expovariate(1 / 400.0))
    return out


def seed_for(worker_index: int, local_index: int, stride: int) -> int:
    """Global user number: the same set of seeds whether users run in 1 process or ``stride`` workers."""
    return worker_index + stride * local_index
