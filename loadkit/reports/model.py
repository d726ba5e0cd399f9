"""In-memory shape of one labelled run, whatever tool produced it.

Readers (``locust_csv``, ``k6_points``, ``k6_summary``) fill a :class:`Run`; ``tables`` turns runs
into the two tidy tables every chart and the HTML are drawn from. Keeping the per-tool parsing apart
from the tidy tables means a new input kind only needs a reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

#: columns of the tidy summary table (extra columns follow these)
SUMMARY_COLUMNS = ["tool", "run", "operation", "count", "failures", "rps", "p50", "p90", "p95", "p99", "max"]
#: columns of the tidy time series
TIMESERIES_COLUMNS = ["tool", "run", "t", "operation", "rps", "p50", "p95", "users", "errors"]
AGGREGATED = "Aggregated"
#: columns of a run's loadkit metrics (``<prefix>_metrics.csv``, or the metric rows of an older run);
#: value columns are in the row's ``unit``
METRIC_COLUMNS = ["type", "name", "kind", "unit", "count", "min", "mean", "max", "p50", "p75", "p90", "p95", "p99",
                  "p99.9", "p99.99", "source"]


@dataclass
class Run:
    """One labelled run of one tool, as read from its files."""

    tool: str  # "locust" | "k6"
    label: str
    sources: list[str] = field(default_factory=list)
    #: per-operation summary rows (SUMMARY_COLUMNS minus tool/run, plus optional extras)
    summary: pd.DataFrame | None = None
    #: tidy time series rows (TIMESERIES_COLUMNS minus tool/run, plus "pct_window")
    timeseries: pd.DataFrame | None = None
    #: raw latency samples in ms: columns operation, value (successful samples only)
    samples: pd.DataFrame | None = None
    #: per-operation latency histograms decoded from HDR: operation -> (values_ms, counts)
    histograms: dict[str, tuple] = field(default_factory=dict)
    #: failures grouped by error text: columns type, operation, error, occurrences
    failures: pd.DataFrame | None = None
    #: Locust exceptions: columns count, message, traceback, nodes
    exceptions: pd.DataFrame | None = None
    #: human-readable caveats shown next to the run (percentile kinds, missing files…)
    notes: list[str] = field(default_factory=list)
    #: run facts: duration_s, start (UTC), iterations, checks…
    info: dict = field(default_factory=dict)
    #: Locust master's per-worker bookkeeping (``<prefix>_workers.json``/``.csv``), one row per worker
    workers: pd.DataFrame | None = None
    #: problems with the data itself (a lost worker…): shown at the top of the report and the console
    warnings: list[str] = field(default_factory=list)
    #: loadkit's counts of things that are not requests (``<prefix>_counters.csv``): type, name, count
    counters: pd.DataFrame | None = None
    #: loadkit metrics (not requests): METRIC_COLUMNS, one row per (type, name)
    metrics: pd.DataFrame | None = None
    #: per-metric histograms decoded from HDR: (type, name) -> (values in the metric's unit, counts)
    metric_histograms: dict[tuple[str, str], tuple] = field(default_factory=dict)
    #: generator saturation intervals (``<prefix>_saturation.csv``): worker, start, end (UTC), seconds,
    #: mean_cpu, peak_cpu; None = no file (not recorded), empty = recorded, none
    saturation: pd.DataFrame | None = None
