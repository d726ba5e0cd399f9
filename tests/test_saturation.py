"""Generator-saturation detection as pure code: literal CPU samples in, intervals out (no clock)."""

from __future__ import annotations

import csv

import pytest

from loadkit.metrics import saturation
from loadkit.metrics.console import saturation_lines
from loadkit.metrics.saturation import COLUMNS, Detector, Interval, Record, cpu_percent, find_intervals

T0 = 1_700_000_000.0


def seconds(*percents: float, start: float = T0, step: float = 1.0) -> list[tuple[float, float, float]]:
    """One sample per ``step`` seconds from ``start`` with the given CPU percents."""
    return [(start + i * step, start + (i + 1) * step, p) for i, p in enumerate(percents)]


def test_cpu_percent_is_cpu_time_over_wall_time():
    assert cpu_percent(10.0, 10.9, 100.0, 101.0) == pytest.approx(90.0)
    assert cpu_percent(10.0, 11.0, 100.0, 102.0) == pytest.approx(50.0)
    assert cpu_percent(10.0, 11.0, 100.0, 100.0) == 0.0  # no wall time: no figure


def test_six_busy_seconds_make_one_interval_with_mean_and_peak():
    found = find_intervals("w1", seconds(20, 95, 90, 100, 92, 96, 97, 30))
    assert len(found) == 1
    i = found[0]
    assert (i.worker, i.start, i.end) == ("w1", T0 + 1, T0 + 7)
    assert i.seconds == pytest.approx(6.0)
    assert i.mean == pytest.approx((95 + 90 + 100 + 92 + 96 + 97) / 6)
    assert i.peak == 100
    assert not i.ongoing


def test_shorter_than_five_seconds_or_below_ninety_is_no_interval():
    assert find_intervals("w", seconds(99, 99, 99, 99, 10)) == []  # 4 s
    assert find_intervals("w", seconds(*[89.9] * 20)) == []  # never ≥ 90 %
    # one quiet second splits ten busy seconds into two runs of 4 and 5: only the second counts
    found = find_intervals("w", seconds(95, 95, 95, 95, 50, 95, 95, 95, 95, 95))
    assert [(i.start - T0, i.end - T0) for i in found] == [(5.0, 10.0)]


def test_exactly_five_seconds_at_exactly_ninety_percent_counts():
    found = find_intervals("w", seconds(90, 90, 90, 90, 90))
    assert len(found) == 1 and found[0].seconds == pytest.approx(5.0) and found[0].mean == pytest.approx(90.0)


def test_mean_is_weighted_by_the_length_of_each_sample():
    # a 4 s sample at 100 % and a 1 s sample at 90 %: 4.9 CPU seconds in 5 s = 98 %
    found = find_intervals("w", [(T0, T0 + 4, 100.0), (T0 + 4, T0 + 5, 90.0)])
    assert len(found) == 1 and found[0].mean == pytest.approx(98.0) and found[0].peak == 100.0


def test_a_gap_between_samples_ends_the_interval():
    # the sampler paused for 10 s between two busy runs of 5 s: two intervals, not one of 20 s
    samples = seconds(95, 95, 95, 95, 95) + seconds(95, 95, 95, 95, 95, start=T0 + 15)
    found = find_intervals("w", samples)
    assert [(i.start - T0, i.end - T0) for i in found] == [(0.0, 5.0), (15.0, 20.0)]


def test_ongoing_interval_is_reported_once_long_enough_and_closed_at_the_end():
    d = Detector("w")
    for s in seconds(95, 95, 95, 95):
        assert d.add(*s) is None
    assert d.current() is None  # 4 s: not yet
    d.add(T0 + 4, T0 + 5, 99)
    ongoing = d.current()
    assert ongoing is not None and ongoing.ongoing and ongoing.seconds == pytest.approx(5.0)
    d.add(T0 + 5, T0 + 6, 91)
    closed = d.close()
    assert closed is not None and not closed.ongoing and closed.seconds == pytest.approx(6.0)
    assert closed.start == ongoing.start
    assert d.close() is None  # nothing left


def test_record_replaces_the_ongoing_interval_by_its_final_form_and_ignores_late_copies():
    r = Record()
    r.add(Interval("w1", T0, T0 + 5, 95, 99, ongoing=True))
    r.add(Interval("w1", T0, T0 + 8, 96, 100, ongoing=False))
    r.add(Interval("w1", T0, T0 + 6, 95, 99, ongoing=True))  # a report sent before it closed, read late
    r.add(Interval("w2", T0 + 1, T0 + 7, 93, 97))
    assert [(i.worker, i.end, i.ongoing) for i in r.intervals()] == [("w1", T0 + 8, False), ("w2", T0 + 7, False)]


def test_record_drains_only_what_changed_since_the_last_report():
    r = Record()
    r.add(Interval("w1", T0, T0 + 5, 95, 99, ongoing=True))
    r.add(Interval("w1", T0, T0 + 6, 95, 99, ongoing=True))
    assert r.drain() == [["w1", T0, T0 + 6, 95, 99, True]]  # the latest state only
    assert r.drain() == []  # nothing new: the master is not sent the same interval again
    r.add(Interval("w1", T0, T0 + 7, 96, 99))
    assert r.drain() == [["w1", T0, T0 + 7, 96, 99, False]]
    assert r.drain() == [] and len(r.intervals()) == 1


def test_record_merges_wire_entries_and_drops_malformed_ones():
    r = Record()
    r.merge([Interval("w1", T0, T0 + 6, 95, 99).wire(), ["w2", T0, T0 - 1, 95, 99, False], ["short"], None])
    assert [i.worker for i in r.intervals()] == ["w1"]


def test_rows_have_the_csv_columns_and_units(tmp_path):
    r = Record()
    r.add(Interval("w1", T0 + 0.25, T0 + 7.25, 96.04, 100.0))
    rows = r.rows()
    assert rows == [{"Worker": "w1", "Start": "1700000000.250", "End": "1700000007.250", "Seconds": "7.0",
                     "Mean CPU %": "96.0", "Peak CPU %": "100.0"}]
    assert tuple(rows[0]) == COLUMNS == ("Worker", "Start", "End", "Seconds", "Mean CPU %", "Peak CPU %")


class _Env:
    """Just enough of a Locust environment for write_results: a --csv prefix and no runner."""

    def __init__(self, prefix):
        self.parsed_options = type("O", (), {"csv_prefix": str(prefix)})()
        self.runner = None


def test_saturation_csv_is_header_only_without_intervals(tmp_path):
    saturation.RECORD.clear()
    path = saturation.write_results(_Env(tmp_path / "run"))
    with open(path, newline="") as f:
        assert list(csv.reader(f)) == [list(COLUMNS)]
    saturation.RECORD.add(Interval("local", T0, T0 + 5, 95, 99))
    try:
        saturation.write_results(_Env(tmp_path / "run"))
        with open(path, newline="") as f:
            assert [r["Worker"] for r in csv.DictReader(f)] == ["local"]
    finally:
        saturation.RECORD.clear()


def test_console_says_none_or_each_interval():
    assert saturation_lines([]) == ["generator saturation: none (no load-generator process stayed "
                                    "≥ 90 % of a CPU core for ≥ 5 s)"]
    lines = saturation_lines([Interval("w1", T0, T0 + 7, 96.4, 100.0).row()])
    assert lines[0].startswith("generator saturation: 1 interval (7.0 s)") and "client-side queueing" in lines[0]
    assert lines[1] == "  w1: 22:13:20–22:13:27 UTC (7.0 s), mean 96 %, peak 100 % CPU"


# ------------------------------------------------------------------------------------ through Locust

@pytest.mark.timeout(90)
def test_distributed_run_records_each_saturated_worker_in_the_csv_and_the_console(spawn, tmp_path):
    import sys
    from pathlib import Path

    from loadkit.procs import free_port

    locustfile = str(Path(__file__).resolve().parent / "locustfile_saturation.py")
    locust = [sys.executable, "-m", "locust", "-f", locustfile]
    port, prefix = free_port(), tmp_path / "run"
    master = spawn([*locust, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                    "--headless", "--expect-workers", "2", "--expect-workers-max-wait", "60", "-u", "2", "-r", "2",
                    "--run-time", "8s", "--csv", str(prefix), "--only-summary"], name="master")
    workers = [spawn([*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)], name=f"w{i}")
               for i in range(2)]
    assert master.wait(75) == 0, master.output()[-3000:]
    for w in workers:
        w.wait(20)
    with open(f"{prefix}_saturation.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    with open(f"{prefix}_workers.csv", newline="") as f:
        worker_ids = {r["client_id"] for r in csv.DictReader(f)}
    assert {r["Worker"] for r in rows} == worker_ids and len(rows) == 2, rows
    for r in rows:
        assert 5.0 <= float(r["Seconds"]) <= 12.0, r
        assert float(r["End"]) - float(r["Start"]) == pytest.approx(float(r["Seconds"]), abs=0.05)
        assert float(r["Mean CPU %"]) == pytest.approx(95.0, abs=1.0) and float(r["Peak CPU %"]) < 100.0
    out = master.output()
    assert "generator saturation: 2 intervals" in out, out[-3000:]
    assert all(f"  {wid}: " in out for wid in worker_ids)
