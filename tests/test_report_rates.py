"""Throughput from a distributed master's history: totals grow in steps, the rate must not."""

from __future__ import annotations

import numpy as np

from loadkit.reports.locust_csv import _lagged_diff, _report_lag


def test_steps_every_three_rows_give_a_steady_rate():
    ts = np.arange(30, dtype=float)  # one history row a second
    totals = np.repeat(np.arange(10) * 300.0, 3)  # a worker report of 300 requests every 3 s
    k = _report_lag(ts, totals)
    assert k == 3
    rate = _lagged_diff(totals, k) / _lagged_diff(ts, k)
    assert np.allclose(rate[k:], 100.0)  # 300 requests / 3 s, in every row: no 0, 0, 300 saw-tooth


def test_smooth_totals_keep_the_per_row_rate():
    ts = np.arange(20, dtype=float)
    totals = ts * 50.0
    assert _report_lag(ts, totals) == 1


def test_short_or_flat_histories_fall_back_to_one_row():
    assert _report_lag(np.arange(3, dtype=float), np.arange(3, dtype=float)) == 1
    assert _report_lag(np.arange(10, dtype=float), np.zeros(10)) == 1
