"""Open-model arrival schedules (``loadkit.pacing``): literal profiles in, intended times out."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from loadkit.pacing import (PacingError, arrival_times, expected_arrivals, parse_duration, parse_pattern, parse_rate,
                            parse_stages, profile, rate_at, time_of_arrival)


def take_until(it, t_end):
    return list(itertools.takewhile(lambda t: t < t_end, it))


def test_parse_rates_durations_stages_patterns():
    assert parse_rate("20/s") == 20 and parse_rate("20") == 20 and parse_rate("1200/m") == 20
    assert parse_rate("0.5/s") == 0.5 and parse_rate("7200/h") == 2
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5 and parse_duration("2") == 2
    assert parse_stages("30s:10/s, 60s:50/s") == [(30.0, 10.0), (60.0, 50.0)]
    assert parse_pattern("constant") == ("constant", 1.0) and parse_pattern("gamma:0.5") == ("gamma", 0.5)
    for bad, call in (("fast", parse_rate), ("20/day", parse_rate), ("30s", parse_stages), ("0s:10/s", parse_stages),
                      ("30x:1/s", parse_stages), ("", parse_stages), ("uniform", parse_pattern), ("gamma", parse_pattern),
                      ("gamma:-1", parse_pattern), ("poisson:2", parse_pattern)):
        with pytest.raises(PacingError) as info:
            call(bad)
        assert "\n" not in str(info.value) and str(info.value).startswith("--arrival-")


def test_constant_rate_is_evenly_spaced_and_shared_exactly_between_processes():
    segs = profile(20.0, None)
    times = take_until(arrival_times(segs), 10.0)
    assert len(times) == 200 and times[:3] == [0.0, 0.05, 0.1]
    assert all(abs(b - a - 0.05) < 1e-9 for a, b in zip(times, times[1:]))
    shares = [take_until(arrival_times(segs, share=3, slot=k), 10.0) for k in range(3)]
    merged = sorted(t for s in shares for t in s)
    assert merged == pytest.approx(times)  # three workers together = one process at the full rate
    assert [len(s) for s in shares] == [67, 67, 66]


def test_ramping_stages_follow_the_integral_of_the_rate():
    segs = profile(0.0, [(10.0, 100.0), (10.0, 100.0), (5.0, 0.0)])
    assert rate_at(segs, 5.0) == 50.0 and rate_at(segs, 15.0) == 100.0 and rate_at(segs, 22.5) == 50.0
    assert expected_arrivals(segs, 10.0) == pytest.approx(500.0)  # ramp 0 -> 100/s over 10 s
    assert expected_arrivals(segs, 25.0) == pytest.approx(500 + 1000 + 250)
    times = list(arrival_times(segs))  # the last rate is 0: the schedule ends
    assert len(times) == 1751  # arrivals 0..1750
    assert len([t for t in times if t < 10.0]) == 500
    for a in (1.0, 250.0, 499.0, 1200.0, 1600.0):
        assert expected_arrivals(segs, time_of_arrival(segs, a)) == pytest.approx(a)
    # after the last stage the last target rate holds
    held = take_until(arrival_times(profile(5.0, [(2.0, 10.0)])), 12.0)
    assert len(held) == pytest.approx(15 + 100, abs=1)


def test_poisson_and_gamma_are_seeded_and_have_the_rate_and_burstiness_asked_for():
    segs = profile(50.0, None)
    a = take_until(arrival_times(segs, "poisson", seed=7), 200.0)
    b = take_until(arrival_times(segs, "poisson", seed=7), 200.0)
    assert a == b and a != take_until(arrival_times(segs, "poisson", seed=8), 200.0)
    assert len(a) == pytest.approx(10000, rel=0.03)
    def cv(times):
        gaps = [y - x for x, y in zip(times, times[1:])]
        return statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv(a) == pytest.approx(1.0, abs=0.05)  # exponential gaps
    bursty = take_until(arrival_times(segs, "gamma", 0.25, seed=1), 200.0)
    smooth = take_until(arrival_times(segs, "gamma", 4.0, seed=1), 200.0)
    assert len(bursty) == pytest.approx(10000, rel=0.1) and len(smooth) == pytest.approx(10000, rel=0.03)
    assert cv(bursty) == pytest.approx(math.sqrt(1 / 0.25), rel=0.1) and cv(smooth) == pytest.approx(0.5, rel=0.05)
    shared = [take_until(arrival_times(segs, "poisson", share=4, slot=k, seed=3), 200.0) for k in range(4)]
    assert sum(map(len, shared)) == pytest.approx(10000, rel=0.03)
    assert len({tuple(s[:5]) for s in shared}) == 4  # each worker its own stream


def test_pacer_hands_out_each_start_time_once_and_drops_the_ones_too_late():
    from types import SimpleNamespace

    from loadkit.users.pacer import Pacer
    from loadkit.users.pacing_options import Settings

    settings = Settings(SimpleNamespace(arrival_rate="10/s", arrival_stages="", arrival_pattern="constant",
                                        arrival_seed="1", arrival_max_lag="0.25s"))
    p = Pacer()
    p.begin(settings, share=1, slot=0)
    assert p.take(100.0) == 100.0  # the first ask starts the schedule: t = 0 is now
    assert p.take(100.0) == pytest.approx(100.1)  # a second free user takes the next one (and sleeps)
    assert p.take(100.45) == pytest.approx(100.2)  # 0.25 s late: still run (lag 250 ms)
    assert p.dropped == 0
    assert p.take(100.71) == pytest.approx(100.5)  # 100.3 and 100.4 are more than 0.25 s late: dropped
    assert p.dropped == 2
    p.sweep(101.0)  # nobody free: start times older than the max lag are dropped as time passes
    assert p.dropped == 4  # 100.6, 100.7
    p.finish(101.05)  # at the stop, the due ones nobody took are dropped too (100.8 .. 101.0)
    assert p.dropped == 7 and not p.active
    assert p.wall[0] is not None and p.wall[1] - p.wall[0] == pytest.approx(1.05, abs=0.01)


def test_pacing_settings_describe_and_refuse():
    from types import SimpleNamespace

    from loadkit.users.pacing_options import Settings, options_problem

    def opts(**kw):
        base = dict(arrival_rate="", arrival_stages="", arrival_pattern="constant", arrival_seed="1", arrival_max_lag="1s")
        return SimpleNamespace(**{**base, **kw})

    assert Settings(opts()).segments is None  # no pacing: the closed model
    assert Settings(opts(arrival_rate="20/s", arrival_pattern="gamma:0.5")).describe() == "20/s, gamma:0.5"
    assert Settings(opts(arrival_stages="30s:10/s,60s:50/s")).describe() == "stages 30s:10/s, 60s:50/s from 0/s, constant"
    assert options_problem(opts(arrival_rate="20/s")) is None
    assert options_problem(opts(arrival_rate="20/s", arrival_seed="x")) == "loadkit: --arrival-seed 'x': expected a whole number"
    assert "--arrival-max-lag" in options_problem(opts(arrival_rate="20/s", arrival_max_lag="soon"))


def test_sweep_rates_and_capacity():
    from loadkit.pacing import capacity, sweep_rates

    assert sweep_rates(2.0, 11.0, 3) == pytest.approx([5.0, 8.0, 11.0])
    assert sweep_rates(2.0, 2.0, 2) == pytest.approx([2.5, 3.0])  # no headroom measured: probe above
    with pytest.raises(ValueError):
        sweep_rates(1.0, 2.0, 0)
    stages = [{"kind": "synchronous", "offered": 2.7, "passed": True},
              {"kind": "throughput", "offered": 11.0, "passed": True},
              {"kind": "constant", "offered": 5.0, "passed": True},
              {"kind": "constant", "offered": 8.0, "passed": True},
              {"kind": "constant", "offered": 11.0, "passed": False}]
    assert capacity(stages) == 8.0  # only constant (open-model) stages count
    assert capacity(stages[:2]) is None
