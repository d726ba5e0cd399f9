"""HDR histograms per operation: record, ship as deltas, merge losslessly, write/read ``_hdr.csv``.

Pure data code (no Locust, no gevent) so that reports and tests can read and merge the files
without importing Locust; :mod:`loadkit.metrics.hdr` wires it into Locust's events.

Layout, fixed so any two histograms merge: microseconds, 1 µs .. 1 h, 3 significant digits (each
recorded value is kept within 0.1 %). Count, sum, min and max are also kept exactly, so the Min,
Mean and Max columns are exact; the percentile columns come from the histogram.
"""

from __future__ import annotations

import csv
import ctypes
import logging
import math
import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from hdrh.histogram import HdrHistogram

logger = logging.getLogger("loadkit.hdr")

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: longer samples are clamped (and counted as clamped)
SIGNIFICANT_DIGITS = 3
PERCENTILES: tuple[float, ...] = (50, 75, 90, 95, 99, 99.9, 99.99)
PERCENTILE_COLUMNS: tuple[str, ...] = ("50%", "75%", "90%", "95%", "99%", "99.9%", "99.99%")
CSV_COLUMNS: tuple[str, ...] = ("Type", "Name", "Count", "Min", "Mean", "Max", *PERCENTILE_COLUMNS, "Histogram")
AGGREGATED_NAME = "Aggregated"  # same convention as Locust's stats CSV: Type "", Name "Aggregated"
MESSAGE_KEY = "loadkit_hdr"  # key inside Locust's worker stats message
HDR_SUFFIX = "_hdr.csv"
# loadkit metrics (see loadkit.metrics.catalog): same layout, values in the metric's own unit
# (recorded × 1000, so µs for ms and thousandths for counts and rates); no Aggregated row, as
# pooling milliseconds with counts means nothing
METRIC_MESSAGE_KEY = "loadkit_metrics"
METRIC_SUFFIX = "_metrics.csv"
METRIC_COLUMNS: tuple[str, ...] = ("Type", "Name", "Kind", "Unit", "Count", "Min", "Mean", "Max",
                                   *PERCENTILE_COLUMNS, "Histogram")


def acyclic(hist: HdrHistogram) -> HdrHistogram:
    """``hist`` with the reference cycle hdrh builds into every histogram broken, so that it is
    freed as soon as it is dropped.

    Why: an ``HdrHistogram`` and its ``HdrHistogramEncoder`` point at each other, so a dropped
    histogram (and its ~190 KB counts array) waits for CPython's cyclic collector; in a process
    that tunes the collector for speed (``loadkit.users.socketio._tune_gc``) that can be minutes,
    and a soak saw a worker grow by 250 MB that way (docs/distributed.md#soak-long-runs-stay-flat).
    The encoder only reads the histogram's attributes, so a weak proxy serves it as well.
    """
    hist.encoder.histogram = weakref.proxy(hist)
    return hist


def new_histogram() -> HdrHistogram:
    """An empty histogram with loadkit's fixed layout (µs, 1 µs .. 1 h, 3 significant digits)."""
    return acyclic(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))


def decode_histogram(encoded: str | bytes) -> HdrHistogram:
    """``HdrHistogram.decode`` (base64 V2 text), freed as soon as it is dropped (:func:`acyclic`)."""
    return acyclic(HdrHistogram.decode(encoded.encode("ascii") if isinstance(encoded, str) else encoded))


def ms_to_us(value_ms: float) -> int:
    """Locust's float milliseconds to whole microseconds (negative → 0)."""
    return max(0, int(round(value_ms * 1000.0)))


def counts_indices(hist: HdrHistogram, values_us: np.ndarray) -> np.ndarray:
    """HdrHistogram's ``counts`` index of each value, vectorised (the formula of
    ``HdrHistogram._counts_index_for``; ``tests/test_hdr.py`` checks both agree on every bucket
    boundary). Values must be ``1 <= v <= HIGHEST_US`` (or 0)."""
    # bit length of (v | sub_bucket_mask): exact through float64 frexp, as v < 2**53
    pow2ceiling = np.frexp((values_us | hist.sub_bucket_mask).astype(np.float64))[1]
    bucket = pow2ceiling - hist.unit_magnitude - (hist.sub_bucket_half_count_magnitude + 1)
    sub_bucket = values_us >> (bucket + hist.unit_magnitude)
    return ((bucket + 1) << hist.sub_bucket_half_count_magnitude) + (sub_bucket - hist.sub_bucket_half_count)


def format_ms(value_us: float) -> str:
    """Microseconds as milliseconds with µs resolution, the unit of every time column."""
    return f"{value_us / 1000.0:.3f}"


def write_csv_atomic(path: str | os.PathLike, columns: Iterable[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` via a temporary file: a reader (the report) never sees half a file."""
    path = os.fspath(path)
    if directory := os.path.dirname(path):
        os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


@dataclass
class OpHistogram:
    """One operation's samples: the HDR histogram plus the exact count, sum, min and max.

    The exact extras cost nothing and make Min/Mean/Max exact rather than bucketed.
    """

    hist: HdrHistogram = field(default_factory=new_histogram)
    count: int = 0
    sum_us: int = 0
    min_us: int = 0
    max_us: int = 0
    clamped: int = 0

    def record(self, value_us: int) -> None:
        if value_us > HIGHEST_US:
            value_us = HIGHEST_US
            self.clamped += 1
        self.hist.record_value(value_us)
        if self.count == 0 or value_us < self.min_us:
            self.min_us = value_us
        if value_us > self.max_us:
            self.max_us = value_us
        self.count += 1
        self.sum_us += value_us

    def record_many_ms(self, values_ms: list[float]) -> None:
        """Record a batch of float milliseconds at once: the same histogram, count, sum, min and
        max as ``record(ms_to_us(v))`` for each finite ``v`` (NaN and inf are dropped).

        Why: a Python ``record_value`` costs ~2.5 us per sample, a visible share of a load
        generator's ~50 us round trip; folded with numpy it is ~0.1 us.
        """
        ms = np.asarray(values_ms, dtype=np.float64)
        ms = ms[np.isfinite(ms)]
        if not ms.size:
            return
        us = np.rint(ms * 1000.0)
        np.maximum(us, 0.0, out=us)
        over = us > HIGHEST_US
        if over.any():
            self.clamped += int(np.count_nonzero(over))
            us[over] = HIGHEST_US
        values = us.astype(np.int64)
        hist = self.hist
        if hist.word_size != 8:  # not the layout the in-place view below assumes: the slow way
            for v in values.tolist():
                self.record(v)
            return
        counts = np.frombuffer(hist.counts, dtype=np.uint64)  # a view: added in place
        counts += np.bincount(counts_indices(hist, values), minlength=hist.counts_len).astype(np.uint64)
        nonzero = np.flatnonzero(counts)
        hist.set_internal_tacking_values(int(nonzero[0]), int(nonzero[-1]), hist.total_count + int(values.size))
        lo, hi = int(values.min()), int(values.max())
        self.min_us = lo if self.count == 0 else min(self.min_us, lo)
        self.max_us = max(self.max_us, hi)
        self.count += int(values.size)
        self.sum_us += int(values.sum())

    def add(self, other: "OpHistogram") -> None:
        if other.count == 0:
            return
        self.hist.add(other.hist)
        self.min_us = other.min_us if self.count == 0 else min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.sum_us += other.sum_us
        self.clamped += other.clamped

    def reset(self) -> None:
        """Empty this histogram in place, keeping its counts array (what ``HdrHistogram.reset``
        does, with one ``memset`` instead of a Python loop over 23552 counters).

        Why: a worker empties its histograms after every report (every 3 s); allocating fresh ones
        instead cost ~190 KB per operation per report.
        """
        hist = self.hist
        ctypes.memset(ctypes.addressof(hist.counts), 0, ctypes.sizeof(hist.counts))
        hist.total_count = 0
        hist.min_value = sys.maxsize
        hist.max_value = 0
        hist.start_time_stamp_msec = sys.maxsize
        hist.end_time_stamp_msec = 0
        self.count = self.sum_us = self.min_us = self.max_us = self.clamped = 0

    def encode(self) -> str:
        """The standard base64 HdrHistogram V2 encoding (compressed; readable by any HDR library)."""
        return self.hist.encode().decode("ascii")

    @classmethod
    def decode(cls, encoded: str, count: int, sum_us: int, min_us: int, max_us: int, clamped: int = 0) -> "OpHistogram":
        hist = decode_histogram(encoded)
        if hist.get_total_count() != count:
            raise ValueError(f"histogram holds {hist.get_total_count()} samples but the message says {count}")
        return cls(hist, int(count), int(sum_us), int(min_us), int(max_us), int(clamped))

    def percentiles_us(self) -> dict[float, float]:
        """Value at each of :data:`PERCENTILES`, kept within the exact [min, max] range."""
        if self.count == 0:
            return {p: 0.0 for p in PERCENTILES}
        values = self.hist.get_percentile_to_value_dict(list(PERCENTILES))
        return {p: float(min(max(values[p], self.min_us), self.max_us)) for p in PERCENTILES}

    def row(self, request_type: str, name: str) -> dict[str, str]:
        pct = self.percentiles_us()
        mean = self.sum_us / self.count if self.count else 0.0
        row = {
            "Type": request_type,
            "Name": name,
            "Count": str(self.count),
            "Min": format_ms(self.min_us),
            "Mean": format_ms(mean),
            "Max": format_ms(self.max_us),
        }
        for p, column in zip(PERCENTILES, PERCENTILE_COLUMNS):
            row[column] = format_ms(pct[p])
        row["Histogram"] = self.encode()
        return row


class HdrStore:
    """Per-process histograms keyed by ``(request_type, name)``.

    A worker records and periodically ``drain()``s its deltas; the master ``merge()``s them; a
    single local process only records. Everything runs on the gevent loop, so no locking.

    ``record`` is on every request's path, so it only appends the float to a per-operation list;
    the lists are folded into the histograms (``OpHistogram.record_many_ms``) every
    ``FOLD_EVERY`` samples and before anything reads the histograms (``ops``, ``drain``, ``rows``).
    """

    FOLD_EVERY = 4096

    def __init__(self) -> None:
        self._ops: dict[tuple[str, str], OpHistogram] = {}
        self._pending: dict[tuple[Any, Any], list[float]] = {}
        self.rejected_messages = 0

    def record(self, request_type: str, name: str, response_time_ms: float | int | None) -> None:
        if type(response_time_ms) is not float:  # Locust's own clients and loadkit's pass floats
            if response_time_ms is None or isinstance(response_time_ms, bool):
                return
            try:
                response_time_ms = float(response_time_ms)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return
        buf = self._pending.get((request_type, name))
        if buf is None:
            buf = self._pending[(request_type, name)] = []
        buf.append(response_time_ms)  # NaN and inf are dropped when folded
        if len(buf) >= self.FOLD_EVERY:
            self._fold((request_type, name), buf)

    def _fold(self, key: tuple[Any, Any], buf: list[float]) -> None:
        skey = (str(key[0]), str(key[1]))
        op = self._ops.get(skey)
        if op is None:
            op = self._ops[skey] = OpHistogram()
        op.record_many_ms(buf)
        buf.clear()
        if not op.count:  # only NaN/inf so far: no row for it
            del self._ops[skey]

    def flush(self) -> None:
        """Fold every pending sample into the histograms."""
        for key, buf in list(self._pending.items()):
            if buf:
                self._fold(key, buf)

    @property
    def ops(self) -> dict[tuple[str, str], OpHistogram]:
        self.flush()
        return self._ops

    def clear(self) -> None:
        self._ops.clear()
        self._pending.clear()

    def total_count(self) -> int:
        return sum(op.count for op in self.ops.values())

    def drain(self) -> list[list[Any]]:
        """Encode every non-empty histogram for the wire and start afresh (delta semantics).

        The histograms are emptied in place and reused for the next report (no ~190 KB
        allocation per operation per report); one that received nothing since the last report
        is dropped, so the store only holds the operations that are currently active.
        """
        payload = []
        ops = self.ops
        for key, op in list(ops.items()):
            if op.count:
                payload.append([key[0], key[1], op.encode(), op.count, op.sum_us, op.min_us, op.max_us, op.clamped])
                op.reset()
            else:
                del ops[key]
        self._pending.clear()  # flushed (empty) lists; made again on the next record
        return payload

    def merge(self, payload: Iterable[Any], source: str = "?") -> int:
        """Add a worker's drained histograms; returns how many samples were added.

        A malformed entry is logged and skipped (never crashes the master's message loop).
        """
        added = 0
        ops = self.ops
        for entry in payload or ():
            try:
                request_type, name, encoded, count, sum_us, min_us, max_us, *rest = entry
                incoming = OpHistogram.decode(encoded, count, sum_us, min_us, max_us, *(rest[:1]))
            except Exception as exc:  # noqa: BLE001 - bad input from the network
                self.rejected_messages += 1
                logger.error("loadkit hdr: dropped a malformed histogram from worker %s: %s", source, exc)
                continue
            key = (str(request_type), str(name))
            op = ops.get(key)
            if op is None:
                op = ops[key] = OpHistogram()
            op.add(incoming)
            added += incoming.count
        return added

    def aggregated(self) -> OpHistogram:
        total = OpHistogram()
        for op in self.ops.values():
            total.add(op)
        return total

    def op_rows(self) -> list[dict[str, str]]:
        """One CSV row per ``(type, name)``, sorted like Locust's stats CSV (by name, then type)."""
        return [op.row(t, n) for (t, n), op in sorted(self.ops.items(), key=lambda kv: (kv[0][1], kv[0][0]))]

    def rows(self) -> list[dict[str, str]]:
        """:meth:`op_rows`, then the Aggregated row."""
        return [*self.op_rows(), self.aggregated().row("", AGGREGATED_NAME)]

    def write_csv(self, path: str | os.PathLike) -> None:
        write_csv_atomic(path, CSV_COLUMNS, self.rows())

    def metric_rows(self) -> list[dict[str, str]]:
        """Rows of ``_metrics.csv``: :meth:`op_rows` with each metric's Kind and Unit."""
        from loadkit.metrics.catalog import metric

        rows = []
        for row in self.op_rows():
            m = metric(row["Type"], row["Name"])
            rows.append({**row, "Kind": m.kind, "Unit": m.unit})
        return rows

    def write_metrics_csv(self, path: str | os.PathLike) -> None:
        write_csv_atomic(path, METRIC_COLUMNS, self.metric_rows())


def read_csv(path: str | os.PathLike, columns: tuple[str, ...] = CSV_COLUMNS) -> dict[tuple[str, str], dict[str, Any]]:
    """Read a ``_hdr.csv`` (or, with ``columns=METRIC_COLUMNS``, a ``_metrics.csv``) back:
    ``{(type, name): row}`` with numbers parsed and ``hist`` decoded."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    text_columns = [c for c in ("Type", "Name", "Kind", "Unit", "Histogram") if c in columns]
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != columns:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {list(columns)}")
        for row in reader:
            parsed: dict[str, Any] = {k: row[k] for k in text_columns}
            parsed["Count"] = int(row["Count"])
            for column in ("Min", "Mean", "Max", *PERCENTILE_COLUMNS):
                parsed[column] = float(row[column])
            parsed["hist"] = decode_histogram(row["Histogram"])
            out[(row["Type"], row["Name"])] = parsed
    return out
