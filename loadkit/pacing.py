"""Open-model arrival schedules: when each iteration is *meant* to start, independent of responses.

Why: Locust's users are a closed loop — a user sends, waits for the answer, thinks, sends again.
When the server slows down, every user sends less, so the offered load drops exactly when it
matters and the slow responses that would have been measured are never sent (coordinated
omission). ``constant_throughput``/``constant_pacing`` only cap a user's rate: a user whose
request took longer than its pacing interval simply starts late, and nothing records how late.
An open model fixes the arrival times in advance (``--arrival-rate 20/s``); this module computes
them, :mod:`loadkit.users.pacing` hands them to the users and records how late each one started.

Schedules (all pure, so tests give literal inputs):

* a rate profile: a constant rate, or k6 ``ramping-arrival-rate``-like stages — each stage ramps
  linearly from the previous rate to its target over its duration; after the last stage the
  rate stays at its target;
* a pattern: ``constant`` (evenly spaced), ``poisson`` (exponential gaps: independent arrivals),
  ``gamma:K`` (gamma-distributed gaps with shape K: K < 1 burstier than Poisson, K = 1 Poisson,
  K > 1 smoother; as NVIDIA AIPerf's smoothness), seeded;
* a share: N processes (Locust workers) each take 1/N of the arrivals, so the total is the target.

Arrivals are drawn in "expected-arrival space" (the integral A(t) of the rate: A = 1 means one
arrival is due on average) and mapped back to times by inverting A, which makes ramps exact for
every pattern.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Iterator

PATTERNS = ("constant", "poisson", "gamma")
_RATE = re.compile(r"^\s*(?P<num>\d+\.?\d*|\.\d+)\s*(?:/\s*(?P<per>s|sec|m|min|h))?\s*$")
_PER = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_SPAN = re.compile(r"(\d+\.?\d*|\.\d+)(ms|s|m|h)")
_SPAN_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class PacingError(ValueError):
    """A bad ``--arrival-*`` value; the text is the one line to show."""


def parse_rate(text: str, option: str = "--arrival-rate") -> float:
    """``"20/s"``, ``"20"``, ``"1200/m"``, ``"0.5/s"`` → arrivals per second."""
    m = _RATE.match(text or "")
    if not m:
        raise PacingError(f"{option} {text!r}: expected a rate such as 20/s, 0.5/s or 1200/m")
    return float(m["num"]) / _PER[m["per"]]


def parse_duration(text: str, option: str = "--arrival-stages") -> float:
    """``"30s"``, ``"1m30s"``, ``"500ms"``, ``"2h"`` (a bare number is seconds) → seconds."""
    t = (text or "").strip()
    try:
        return float(t)
    except ValueError:
        pass
    parts = _SPAN.findall(t)
    if not parts or "".join(n + u for n, u in parts) != t:
        raise PacingError(f"{option}: {text!r} is not a duration such as 30s, 1m30s or 500ms")
    return sum(float(n) * _SPAN_UNIT[u] for n, u in parts)


def parse_stages(text: str) -> list[tuple[float, float]]:
    """``"30s:10/s,60s:50/s"`` → ``[(30.0, 10.0), (60.0, 50.0)]`` (duration s, target rate /s)."""
    stages = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        duration, sep, rate = part.partition(":")
        if not sep:
            raise PacingError(f"--arrival-stages {part!r}: expected DURATION:RATE, e.g. 30s:10/s")
        seconds = parse_duration(duration)
        if seconds <= 0:
            raise PacingError(f"--arrival-stages {part!r}: a stage lasts more than 0 s")
        stages.append((seconds, parse_rate(rate, "--arrival-stages")))
    if not stages:
        raise PacingError(f"--arrival-stages {text!r}: expected DURATION:RATE[,DURATION:RATE...], e.g. 30s:10/s,60s:50/s")
    return stages


def parse_pattern(text: str) -> tuple[str, float]:
    """``"constant"``, ``"poisson"``, ``"gamma:0.5"`` → (pattern, gamma shape; 1 otherwise)."""
    name, _, shape = (text or "constant").strip().partition(":")
    if name not in PATTERNS:
        raise PacingError(f"--arrival-pattern {text!r}: expected constant, poisson or gamma:K (K > 0, e.g. gamma:0.5)")
    if name != "gamma":
        if shape:
            raise PacingError(f"--arrival-pattern {text!r}: only gamma takes a parameter")
        return name, 1.0
    try:
        k = float(shape)
    except ValueError:
        raise PacingError(f"--arrival-pattern {text!r}: gamma needs a shape K > 0, e.g. gamma:0.5") from None
    if not k > 0 or not math.isfinite(k):
        raise PacingError(f"--arrival-pattern {text!r}: gamma needs a shape K > 0")
    return name, k


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the schedule's start
    duration: float  # math.inf for the last (held) segment
    r0: float  # rate at the start, per second
    r1: float  # rate at the end

    def arrivals(self) -> float:
        """A over the whole segment (inf for a held positive rate)."""
        if math.isinf(self.duration):
            return math.inf if self.r0 > 0 else 0.0
        return (self.r0 + self.r1) / 2.0 * self.duration

    def time_of(self, a: float) -> float:
        """The time within this segment at which ``a`` arrivals (since its start) are due."""
        if a <= 0:
            return self.start
        if math.isinf(self.duration) or self.r1 == self.r0:
            return self.start + a / self.r0
        c = (self.r1 - self.r0) / (2.0 * self.duration)
        disc = max(0.0, self.r0 * self.r0 + 4.0 * c * a)
        return self.start + 2.0 * a / (self.r0 + math.sqrt(disc))


def profile(rate: float | None, stages: list[tuple[float, float]] | None) -> list[Segment]:
    """Segments of a constant ``rate``, or of ``stages`` ramping from ``rate`` (default 0)."""
    start_rate = rate or 0.0
    if not stages:
        return [Segment(0.0, math.inf, start_rate, start_rate)]
    segments, t, r = [], 0.0, start_rate
    for duration, target in stages:
        segments.append(Segment(t, duration, r, target))
        t, r = t + duration, target
    segments.append(Segment(t, math.inf, r, r))
    return segments


def rate_at(segments: list[Segment], t: float) -> float:
    """The target rate (per second, all processes together) at ``t`` s from the start."""
    for s in segments:
        if t < s.start + s.duration:
            return s.r0 if math.isinf(s.duration) else s.r0 + (s.r1 - s.r0) * (t - s.start) / s.duration
    return segments[-1].r1


def expected_arrivals(segments: list[Segment], t: float) -> float:
    """A(t): arrivals due by ``t`` s (all processes together)."""
    total = 0.0
    for s in segments:
        if t <= s.start:
            break
        dt = min(t, s.start + s.duration) - s.start
        slope = 0.0 if math.isinf(s.duration) else (s.r1 - s.r0) / s.duration
        total += s.r0 * dt + slope * dt * dt / 2.0
    return total


def time_of_arrival(segments: list[Segment], a: float) -> float | None:
    """A⁻¹(a): when ``a`` arrivals are due (None: never, the rate stays at 0)."""
    done = 0.0
    for s in segments:
        n = s.arrivals()
        if a <= done + n:
            return s.time_of(a - done)
        done += n
    return None


def arrival_times(segments: list[Segment], pattern: str = "constant", shape: float = 1.0, *,
                  share: int = 1, slot: int = 0, seed: int | None = None) -> Iterator[float]:
    """Intended start times (seconds from the schedule's start) of the iterations of process
    ``slot`` out of ``share`` processes; the union over all slots has the profile's rate.

    ``constant``: the global arrivals 0, 1, 2, ... of A-space, process ``slot`` takes every
    ``share``-th starting at ``slot`` (evenly interleaved). ``poisson``/``gamma``: each process
    draws its own renewal process of rate 1/``share`` in A-space (gaps with mean ``share``),
    seeded with ``seed + slot``.
    """
    if share < 1 or not 0 <= slot < share:
        raise ValueError(f"slot {slot} of {share}")
    rng = random.Random(None if seed is None else seed * 1000003 + slot)
    if pattern == "constant":
        a = float(slot)
    elif pattern == "poisson":
        a = rng.expovariate(1.0) * share
    else:
        a = rng.gammavariate(shape, 1.0 / shape) * share
    while True:
        t = time_of_arrival(segments, a)
        if t is None:
            return
        yield t
        if pattern == "constant":
            a += share
        elif pattern == "poisson":
            a += rng.expovariate(1.0) * share
        else:
            a += rng.gammavariate(shape, 1.0 / shape) * share


# ------------------------------------------------------------------------------------ capacity sweep

SWEEP_SUFFIX = "_sweep.csv"
#: the fixed columns of ``<prefix>_sweep.csv`` (one column per SLO follows, its measured value)
SWEEP_COLUMNS = ("Stage", "Kind", "Offered/s", "Achieved/s", "Iterations", "Dropped", "Lag p99 ms",
                 "p50 ms", "p95 ms", "p99 ms", "Goodput %", "Passed", "Detail")


def sweep_rates(baseline: float, throughput: float, n: int) -> list[float]:
    """The constant rates of a sweep (GuideLLM's sweep): ``n`` rates evenly spaced above the
    synchronous ``baseline`` up to the saturated ``throughput`` (both measured), the last one
    equal to ``throughput``."""
    if n < 1:
        raise ValueError("a sweep needs at least one constant rate")
    lo, hi = max(0.0, baseline), max(0.0, throughput)
    if hi <= lo:  # no headroom measured: probe around the baseline
        hi = lo * 1.5 if lo > 0 else 1.0
    return [lo + (hi - lo) * i / n for i in range(1, n + 1)]


def capacity(stages: list[dict]) -> float | None:
    """The highest offered constant rate among ``stages`` (dicts with ``kind``, ``offered`` and
    ``passed``) at which every SLO held; None when none did."""
    ok = [s["offered"] for s in stages if s.get("kind") == "constant" and s.get("passed")]
    return max(ok) if ok else None
