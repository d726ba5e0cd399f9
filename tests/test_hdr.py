"""HDR histograms: exactness, lossless merging across workers, the _hdr.csv format, bad input."""

from __future__ import annotations

import csv
import ctypes
import gc
import subprocess
import sys
import weakref

import msgpack
import numpy as np
import pytest

from hdr_synth_samples import samples
from loadkit.metrics.histograms import (
    AGGREGATED_NAME,
    CSV_COLUMNS,
    HIGHEST_US,
    PERCENTILE_COLUMNS,
    PERCENTILES,
    HdrStore,
    OpHistogram,
    decode_histogram,
    new_histogram,
    read_csv,
)


def _exact_percentile_ms(values_ms: list[float], p: float) -> float:
    """The HDR convention: the smallest recorded value with at least p % of samples at or below it."""
    us = np.sort(np.rint(np.asarray(values_ms) * 1000.0))
    rank = max(1, int(p * len(us) / 100.0 + 0.5))
    return float(us[rank - 1]) / 1000.0


def _store_with(values_ms, request_type="synth", name="op") -> HdrStore:
    store = HdrStore()
    for v in values_ms:
        store.record(request_type, name, v)
    return store


def _row(store: HdrStore, name: str = "op") -> dict[str, str]:
    return next(r for r in store.rows() if r["Name"] == name)


def test_percentiles_match_exact_values_within_a_tenth_of_a_percent():
    values = samples(1, 20_000)
    row = _row(_store_with(values))
    assert int(row["Count"]) == len(values)
    for p, column in zip(PERCENTILES, PERCENTILE_COLUMNS):
        exact = _exact_percentile_ms(values, p)
        assert float(row[column]) == pytest.approx(exact, rel=1e-3, abs=0.001), column
    assert float(row["Min"]) == pytest.approx(min(values), abs=0.0006)
    assert float(row["Max"]) == pytest.approx(max(values), abs=0.0006)
    assert float(row["Mean"]) == pytest.approx(sum(values) / len(values), rel=1e-5)


def test_sub_millisecond_values_keep_microsecond_resolution():
    # Locust would store all of these as 0 or 1 ms; they must stay distinct here.
    values = [0.123, 0.456, 0.789] * 10
    row = _row(_store_with(values))
    assert float(row["Min"]) == pytest.approx(0.123, abs=0.0006)
    assert float(row["50%"]) == pytest.approx(0.456, abs=0.0006)
    assert float(row["Max"]) == pytest.approx(0.789, abs=0.0006)
    assert len({row["Min"], row["50%"], row["Max"]}) == 3


def test_four_workers_merged_equal_one_process_within_one_percent():
    """The same samples split over 4 "workers", shipped through msgpack like Locust's messages."""
    all_values = {name: samples(seed, 5000) for seed, name in enumerate(["connect", "chatMessage", "ttft"])}
    single = HdrStore()
    workers = [HdrStore() for _ in range(4)]
    for name, values in all_values.items():
        for i, v in enumerate(values):
            single.record("ktb", name, v)
            workers[i % 4].record("ktb", name, v)
    master = HdrStore()
    for round_ in range(2):  # two report intervals: deltas must add up
        for w in workers:
            wire = msgpack.unpackb(msgpack.packb({"loadkit_hdr": w.drain()}), raw=False)
            master.merge(wire["loadkit_hdr"])
        assert all(w.total_count() == 0 for w in workers)  # drained: only deltas are sent
    single_rows = {r["Name"]: r for r in single.rows()}
    merged_rows = {r["Name"]: r for r in master.rows()}
    assert set(single_rows) == set(merged_rows) == {*all_values, AGGREGATED_NAME}
    for name, srow in single_rows.items():
        mrow = merged_rows[name]
        assert mrow["Count"] == srow["Count"]
        for column in ("Min", "Mean", "Max", *PERCENTILE_COLUMNS):
            assert float(mrow[column]) == pytest.approx(float(srow[column]), rel=0.01), (name, column)
        if name != AGGREGATED_NAME:
            values = all_values[name]
            for p, column in zip(PERCENTILES, PERCENTILE_COLUMNS):
                assert float(mrow[column]) == pytest.approx(_exact_percentile_ms(values, p), rel=0.01, abs=0.001)
    assert int(merged_rows[AGGREGATED_NAME]["Count"]) == sum(len(v) for v in all_values.values())


def test_csv_has_exact_columns_and_round_trips(tmp_path):
    store = _store_with(samples(7, 3000), "chldo", "ttft")
    store.record("POST", "login", 12.5)
    path = tmp_path / "run_hdr.csv"
    store.write_csv(path)
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert header == list(CSV_COLUMNS) == [
        "Type", "Name", "Count", "Min", "Mean", "Max",
        "50%", "75%", "90%", "95%", "99%", "99.9%", "99.99%", "Histogram",
    ]
    rows = read_csv(path)
    assert set(rows) == {("chldo", "ttft"), ("POST", "login"), ("", AGGREGATED_NAME)}
    assert rows[("chldo", "ttft")]["Count"] == 3000
    assert rows[("", AGGREGATED_NAME)]["Count"] == 3001
    hist = rows[("chldo", "ttft")]["hist"]  # µs units in the encoded histogram
    assert hist.get_total_count() == 3000
    assert hist.get_value_at_percentile(99) / 1000.0 == pytest.approx(rows[("chldo", "ttft")]["99%"], rel=1e-3)
    assert rows[("POST", "login")]["50%"] == pytest.approx(12.5, rel=1e-3)


def test_bad_samples_and_bad_messages_are_skipped_not_fatal(caplog):
    store = HdrStore()
    for bad in (None, float("nan"), float("inf"), "x", True):
        store.record("t", "n", bad)
    store.record("t", "n", -5)  # clock weirdness: recorded as 0
    store.record("t", "n", 10 * 3600 * 1000.0)  # 10 h: clamped to the histogram's top
    op = store.ops[("t", "n")]
    assert op.count == 2 and op.min_us == 0 and op.max_us == HIGHEST_US and op.clamped == 1

    good = _store_with([1.0, 2.0]).drain()
    master = HdrStore()
    added = master.merge(
        [["t", "n", "not base64!", 3, 0, 0, 0, 0], ["short"], ["t", "n", good[0][2], 99, 0, 0, 0, 0], *good],
        source="w1",
    )
    assert added == 2
    assert master.rejected_messages == 3
    assert "malformed histogram from worker w1" in caplog.text


def test_empty_store_still_writes_an_aggregated_row(tmp_path):
    path = tmp_path / "empty_hdr.csv"
    HdrStore().write_csv(path)
    rows = read_csv(path)
    assert list(rows) == [("", AGGREGATED_NAME)] and rows[("", AGGREGATED_NAME)]["Count"] == 0


def test_plugin_installs_on_the_runs_own_environment_once():
    """Importing loadkit adds no request listener to Locust's global events; the plugin installs
    its listeners on the environment it is given (library mode: ``Environment(events=Events())``),
    once however often it is called."""
    # In a subprocess: importing Locust monkey-patches the interpreter.
    code = (
        "from locust import events\n"
        "from locust.event import Events\n"
        "from locust.env import Environment\n"
        "n_global = len(events.request._handlers)\n"
        "import loadkit.metrics.hdr, loadkit.users.chldo, loadkit.users.ktb, loadkit.plugin as p\n"
        "assert len(events.request._handlers) == n_global, 'import added a global request listener'\n"
        "env = Environment(events=Events())\n"
        "assert p.install(env) is True and p.install(env) is False\n"
        "assert sum(1 for f in env.events.request._handlers if f.__name__ == '_on_request') == 1\n"
        "assert sum(1 for f in env.events.worker_report._handlers if f.__module__ == 'loadkit.metrics.counters') == 1\n"
        "assert len(events.request._handlers) == n_global\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_batched_recording_equals_one_by_one_recording():
    """The store folds samples into the histogram with numpy; the result must be exactly what
    hdrh's own record_value gives, bucket for bucket (and the exact extras too)."""
    from loadkit.metrics.histograms import OpHistogram, counts_indices, ms_to_us

    rng = np.random.default_rng(7)
    values = list(rng.lognormal(1.0, 1.5, 30_000)) + [0.0, -3.0, 0.0004, 0.0005, 0.0015, 5e9, float("nan"), float("inf")]
    one = OpHistogram()
    for v in values:
        if np.isfinite(v):
            one.record(ms_to_us(v))
    batched = OpHistogram()
    batched.record_many_ms(values[:1000])
    batched.record_many_ms(values[1000:])
    assert batched.encode() == one.encode()
    assert (batched.count, batched.sum_us, batched.min_us, batched.max_us, batched.clamped) == (
        one.count, one.sum_us, one.min_us, one.max_us, one.clamped)
    assert batched.hist.get_total_count() == one.hist.get_total_count() == len(values) - 2
    assert batched.hist.get_min_value() == one.hist.get_min_value()
    assert batched.hist.get_max_value() == one.hist.get_max_value()
    assert batched.percentiles_us() == one.percentiles_us()

    # the vectorised index formula against hdrh's own, around every power of two up to the top
    edges = sorted({0, 1, HIGHEST_US} | {max(1, (1 << k) + d) for k in range(32) for d in (-1, 0, 1)
                                          if (1 << k) + d <= HIGHEST_US})
    hist = one.hist
    got = counts_indices(hist, np.asarray(edges, dtype=np.int64)).tolist()
    assert got == [hist._counts_index_for(v) for v in edges]


def test_store_folds_in_batches_and_before_every_read():
    store = HdrStore()
    n = HdrStore.FOLD_EVERY + 10
    for i in range(n):
        store.record("t", "n", float(i % 50))
    store.record("t", "n", 7)  # an int, as some users' code passes
    assert store.total_count() == n + 1
    payload = store.drain()
    assert payload[0][3] == n + 1 and store.total_count() == 0


def test_drain_reuses_each_histogram_and_drops_the_idle_ones():
    """A worker drains every 3 s: the histograms are emptied in place, not allocated again
    (~190 KB each; bench/soak.py saw a worker grow 250 MB), and the next report holds only the
    new samples, exactly as a fresh histogram would."""
    store = _store_with([1.0, 2.0, 3.0], name="busy")
    store.record("synth", "idle", 5.0)
    first = {entry[1]: entry for entry in store.drain()}
    assert first["busy"][3] == 3 and first["idle"][3] == 1
    busy = store.ops[("synth", "busy")]
    hist, counts = busy.hist, ctypes.addressof(busy.hist.counts)
    later = [0.25, 40.0, 40.0, 1234.5]
    for v in later:
        store.record("synth", "busy", v)
    second = store.drain()
    assert [entry[1] for entry in second] == ["busy"]  # idle sent nothing: not sent again
    assert ("synth", "idle") not in store.ops  # and its histogram was let go
    kept = store.ops[("synth", "busy")]
    assert kept is busy and kept.hist is hist and ctypes.addressof(kept.hist.counts) == counts
    assert kept.count == 0 and kept.hist.get_total_count() == 0
    fresh = _store_with(later, name="busy").drain()[0]
    assert second[0][3:] == fresh[3:]  # count, sum, min, max, clamped
    master = HdrStore()
    master.merge(second)
    assert _row(master, "busy") == _row(_store_with(later, name="busy"), "busy")
    for _ in range(3):  # bounded: an operation that stays idle leaves no histogram behind
        store.drain()
    assert store.ops == {}


def test_histograms_are_freed_without_the_cyclic_collector():
    """hdrh's histogram and its encoder point at each other; loadkit's histograms must not wait for
    a full collection (which a gc-tuned worker practically never makes) to give back their counts."""
    encoded = _store_with([1.0, 2.0]).drain()[0][2]
    gc.disable()
    try:
        made = [new_histogram(), decode_histogram(encoded), OpHistogram().hist,
                OpHistogram.decode(encoded, 2, 3000, 1000, 2000).hist]
        refs = [weakref.ref(h) for h in made]
        assert made[1].get_total_count() == 2 and made[1].encode()  # the encoder still works
        del made
        assert [r() for r in refs] == [None, None, None, None]
    finally:
        gc.enable()
