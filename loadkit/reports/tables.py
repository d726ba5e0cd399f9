"""The tidy tables every chart, CSV and HTML table is drawn from.

* summary: one row per (tool, run, operation): count, failures, rps, p50, p90, p95, p99, max, then
  extras (type, mean, p99.9, pct_source, locust_p50… where an exact histogram replaced them).
* time series: one row per (tool, run, t, operation): rps, p50, p95, users, errors (failures/s),
  pct_window (what the percentiles of that row cover).
* workers: one row per (tool, run, worker) of distributed Locust runs (the master's bookkeeping).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metric_names import KINDS
from .model import AGGREGATED, METRIC_COLUMNS, SUMMARY_COLUMNS, TIMESERIES_COLUMNS, Run


def summary_table(runs: list[Run]) -> pd.DataFrame:
    frames = []
    for r in runs:
        if r.summary is not None:
            frames.append(r.summary.assign(tool=r.tool, run=r.label))
    df = pd.concat(frames, ignore_index=True)
    extras = [c for c in ("type", "mean", "p99.9", "pct_source", "locust_p50", "locust_p90", "locust_p95", "locust_p99") if c in df]
    df = df[SUMMARY_COLUMNS + extras].copy()
    df["unit"] = "ms"  # requests only: loadkit metrics (chunks, chunks_per_s…) are in metrics_table
    df["count"] = df["count"].astype("Float64").round().astype("Int64")
    df["failures"] = df["failures"].astype("Float64").round().astype("Int64")
    # Aggregated last within each run, operations alphabetical otherwise
    df["_agg"] = df["operation"] == AGGREGATED
    order = {(r.tool, r.label): i for i, r in enumerate(runs)}
    df["_run"] = [order[(t, l)] for t, l in zip(df["tool"], df["run"])]
    df = df.sort_values(["_run", "_agg", "operation"], kind="stable").drop(columns=["_agg", "_run"])
    return df.reset_index(drop=True)


def timeseries_table(runs: list[Run]) -> pd.DataFrame:
    frames = [r.timeseries.assign(tool=r.tool, run=r.label) for r in runs if r.timeseries is not None and not r.timeseries.empty]
    if not frames:
        return pd.DataFrame(columns=TIMESERIES_COLUMNS + ["pct_window", "timestamp"])
    df = pd.concat(frames, ignore_index=True)
    return df[TIMESERIES_COLUMNS + ["pct_window", "timestamp"]]


def failures_table(runs: list[Run]) -> pd.DataFrame:
    frames = [r.failures.assign(tool=r.tool, run=r.label) for r in runs if r.failures is not None and not r.failures.empty]
    cols = ["tool", "run", "type", "operation", "error", "occurrences"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    return df[cols + [c for c in ("first_seen", "last_seen") if c in df]].sort_values(
        ["tool", "run", "occurrences"], ascending=[True, True, False]
    )


#: columns of the tidy workers table (``workers.csv``)
WORKER_COLUMNS = ["tool", "run", "worker", "client_id", "hostname", "pid", "state", "reports", "requests", "share",
                  "first_seen", "last_seen", "final_report", "lost"]  # fmt: skip


def workers_table(runs: list[Run]) -> pd.DataFrame:
    """One row per (run, worker) of the Locust runs that have a workers file; ``share`` = requests ÷ the
    run's workers' requests together (a fraction), times as ISO 8601 UTC."""
    frames = []
    for r in runs:
        if r.workers is None or r.workers.empty:
            continue
        w = r.workers.rename(columns={"index": "worker"}).assign(tool=r.tool, run=r.label)
        total = int(w["requests"].sum())
        w["share"] = (w["requests"] / total).round(4) if total else np.nan
        for col in ("first_seen", "last_seen"):
            w[col] = w[col].map(lambda t: "" if pd.isna(t) else t.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
        frames.append(w[WORKER_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=WORKER_COLUMNS)
    return pd.concat(frames, ignore_index=True)


#: columns of the tidy counters table (``counters.csv``)
COUNTER_COLUMNS = ["tool", "run", "type", "name", "count"]


def counters_table(runs: list[Run]) -> pd.DataFrame:
    """One row per (run, counter) of the runs that have a counters file."""
    frames = [r.counters.assign(tool=r.tool, run=r.label)[COUNTER_COLUMNS]
              for r in runs if r.counters is not None and not r.counters.empty]
    if not frames:
        return pd.DataFrame(columns=COUNTER_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def metrics_table(runs: list[Run]) -> pd.DataFrame:
    """One row per (run, metric): tool, run, then METRIC_COLUMNS; runs in input order, then by kind
    (latency, count, rate) and name. Value columns are in the row's ``unit``."""
    cols = ["tool", "run", *METRIC_COLUMNS]
    frames = [r.metrics.assign(tool=r.tool, run=r.label, _run=i)
              for i, r in enumerate(runs) if r.metrics is not None and not r.metrics.empty]  # fmt: skip
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    df["_kind"] = df["kind"].map({k: i for i, k in enumerate(KINDS)}).fillna(len(KINDS))
    df = df.sort_values(["_run", "_kind", "name", "type"], kind="stable")
    df["count"] = pd.to_numeric(df["count"], errors="coerce").astype("Float64").round().astype("Int64")
    return df[cols].reset_index(drop=True)


def metric_labels(metrics: pd.DataFrame) -> pd.Series:
    """Each metric row's label in charts and the console: its name, or ``type name`` where one name
    has several types in the same run (``unfinished_age`` is both ktb's and chldo's when requests of
    both were waiting at the end), the rule of request operations. A name alone is not a key."""
    if metrics.empty:
        return pd.Series([], index=metrics.index, dtype=object)
    types = metrics["type"].fillna("").astype(str)
    names = metrics["name"].astype(str)
    multi = pd.DataFrame({"tool": metrics["tool"], "run": metrics["run"], "t": types, "n": names}) \
        .groupby(["tool", "run", "n"])["t"].transform("nunique") > 1
    return names.where(~multi, types + " " + names)


def operations_in_order(summary: pd.DataFrame, limit: int | None = None) -> list[str]:
    """Request operations across runs, busiest first (Aggregated excluded), for consistent chart order."""
    ops = summary[summary["operation"] != AGGREGATED].groupby("operation")["count"].sum().sort_values(ascending=False)
    names = list(ops.index)
    return names[:limit] if limit else names


def fmt_ms(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return "–"
    v = float(v)
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


#: a metric's value in its own unit (count, 1/s…): the same precision steps
fmt_value = fmt_ms
