"""loadkit metrics of a Locust run: ``<prefix>_metrics.csv``, or the metric rows of an older ``_stats.csv``.

Why apart from requests: a metric (a phase such as ``ttft``, a receive-side latency such as
``delivery``, a per-turn figure such as ``chunks``) is not a request a user sent. Counting it as one
overstated requests/s several times over and put counts into millisecond columns (issue #13). The
master writes metrics to ``_metrics.csv`` (columns :data:`CSV_COLUMNS`; value columns in the row's
``Unit``; ``Histogram`` a base64 HdrHistogram of value × 1000, the ``_hdr.csv`` layout). Runs
recorded before that carried them as Locust requests: :func:`split_stats` takes them out by the
list in :mod:`.metric_names`.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from . import csvutil
from .errors import ReportInputError
from .metric_names import KINDS, lookup
from .model import METRIC_COLUMNS

SUFFIX = "_metrics.csv"
CSV_COLUMNS = ["Type", "Name", "Kind", "Unit", "Count", "Min", "Mean", "Max", "50%", "75%", "90%", "95%", "99%", "99.9%",
               "99.99%", "Histogram"]
_PCT = {"p50": "50%", "p75": "75%", "p90": "90%", "p95": "95%", "p99": "99%", "p99.9": "99.9%", "p99.99": "99.99%"}
NEEDED = ["Type", "Name", "Kind", "Unit", "Count", "Max", "50%", "90%", "95%", "99%"]


def decode_histogram(path, where: str, enc: str) -> tuple[np.ndarray, np.ndarray]:
    """(values / 1000, counts) of a base64 HdrHistogram: ms for µs histograms, the unit for × 1000 ones."""
    from hdrh.histogram import HdrHistogram

    try:
        hist = HdrHistogram.decode(enc)
    except Exception as exc:  # hdrh raises bare zlib/struct/Value errors
        raise ReportInputError(path, f"{where}: Histogram column is not a base64 HdrHistogram ({type(exc).__name__})") from None
    vals, counts = [], []
    for item in hist.get_recorded_iterator():
        vals.append(item.value_iterated_to / 1000.0)
        counts.append(item.count_added_in_this_iter_step)
    return np.asarray(vals, dtype=float), np.asarray(counts, dtype=np.int64)


def pooled_percentiles(hists: list[tuple[np.ndarray, np.ndarray]], pcts=(50, 90, 95, 99, 99.9)) -> list[float]:
    """Percentiles of several same-layout HDR histograms added together, by HdrHistogram's own rule
    (``get_value_at_percentile``: the first bucket whose cumulative count reaches
    ``max(1, int(q / 100 * total + 0.5))``), so they equal what ``hdrh``'s ``add`` would give."""
    if not hists:
        return [np.nan] * len(pcts)
    vals = np.concatenate([v for v, _ in hists])
    counts = np.concatenate([c for _, c in hists])
    if counts.sum() <= 0:
        return [np.nan] * len(pcts)
    uniq, inv = np.unique(vals, return_inverse=True)
    summed = np.bincount(inv, weights=counts)
    cum = np.cumsum(summed)
    total = cum[-1]
    out = []
    for q in pcts:
        target = max(1, int(min(q, 100.0) * total / 100.0 + 0.5))
        out.append(float(uniq[np.searchsorted(cum, target - 0.5)]))
    return out


def read_metrics(path: str) -> tuple[pd.DataFrame, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """METRIC_COLUMNS rows and the decoded histograms ((type, name) -> values in the unit, counts).

    A name is not unique on its own: ``unfinished_age`` is both ktb's and chldo's.

    A file with only its header is a run without metrics; a bad Kind, a missing column or a
    non-number is an input error naming the line.
    """
    text = csvutil.read_text(path)
    header = csvutil.header_of(path, text)
    csvutil.require_columns(path, header, NEEDED, "loadkit _metrics.csv")
    if not text.strip().count("\n"):
        return pd.DataFrame(columns=METRIC_COLUMNS), {}
    df = csvutil.read_typed(path, text, header, ["Type", "Name", "Kind", "Unit", "Histogram"])
    df["Type"] = df["Type"].fillna("")
    csvutil.incomplete_rows(path, df, ["Count"])
    csvutil.unique_keys(path, df, ["Type", "Name"])
    for i, (kind, unit) in enumerate(zip(df["Kind"].fillna(""), df["Unit"].fillna(""))):
        if kind not in KINDS:
            raise ReportInputError(path, f"line {i + 2}, 'Kind': {kind!r} is not one of {', '.join(KINDS)}")
        if not unit.strip():
            raise ReportInputError(path, f"line {i + 2}: empty Unit")
    out = pd.DataFrame({"type": df["Type"], "name": df["Name"], "kind": df["Kind"], "unit": df["Unit"].str.strip(),
                        "count": df["Count"].astype("int64")})  # fmt: skip
    for col in ("min", "mean", "max"):
        out[col] = df[col.capitalize()] if col.capitalize() in df else np.nan
    for col, src in _PCT.items():
        out[col] = df[src] if src in df else np.nan
    out["source"] = "hdr exact"
    hists: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    if "Histogram" in df:
        for i, (typ, name, enc) in enumerate(zip(df["Type"], df["Name"], df["Histogram"])):
            if isinstance(enc, str) and enc:
                hists[(typ, name)] = decode_histogram(path, f"line {i + 2} ({name})", enc)
    return out[METRIC_COLUMNS], hists


def read_prefix(prefix: str) -> tuple[pd.DataFrame, dict, str] | None:
    """``prefix``'s metrics file, if it has one: (rows, histograms, path)."""
    path = prefix + SUFFIX
    if not os.path.exists(path):
        return None
    df, hists = read_metrics(path)
    return df, hists, path


def from_summary_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Metric rows of an older run, taken from its per-operation summary (exact where ``_hdr.csv`` had them)."""
    out = []
    for _, r in rows.iterrows():
        unit, kind = lookup(r["type"], r["name"]) or ("ms", "latency")
        rec = {"type": r["type"], "name": r["name"], "kind": kind, "unit": unit, "count": int(r["count"]),
               "source": r.get("pct_source", "")}  # fmt: skip
        for col in ("min", "mean", "max", *_PCT):
            rec[col] = r[col] if col in r and pd.notna(r[col]) else np.nan
        out.append(rec)
    return pd.DataFrame(out, columns=METRIC_COLUMNS)
