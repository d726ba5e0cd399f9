"""Read one Locust run from its ``--csv`` prefix (plus loadkit's exact ``<prefix>_hdr.csv``).

Column meanings follow Locust 2.x ``locust/stats.py`` (``StatsCSV``/``StatsCSVFileWriter``):

* ``_stats.csv`` — one row per (Type, Name) plus a last ``Aggregated`` row; percentiles are whole
  milliseconds read from Locust's rounded response-time buckets (about 2 significant digits).
* ``_stats_history.csv`` — appended every second. Without ``--csv-full-history`` it only holds the
  ``Aggregated`` row and its percentile columns are **cumulative since the start**; with it there is
  a row per (Type, Name) too and all percentile columns cover **a ~10 s window**. ``Requests/s`` is a
  rolling ~10 s average, so throughput here is recomputed from the cumulative ``Total Request Count``.
* ``_failures.csv`` — ``Method|Type, Name, Error, Occurrences[, First Seen, Last Seen]``.
* ``_exceptions.csv`` — ``Count, Message, Traceback, Nodes``.
* ``_hdr.csv`` (loadkit) — exact per-operation percentiles in float ms and a base64 HdrHistogram (µs).
* ``_workers.json`` / ``_workers.csv`` (loadkit, distributed master) — one row per worker; see
  :mod:`.locust_workers`.
* ``_counters.csv`` (loadkit) — ``Type, Name, Count`` of things that are not requests; see
  :mod:`.locust_counters`.
"""

from __future__ import annotations

import csv
import io
import glob
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import csvutil, locust_counters, locust_metrics, locust_runinfo, locust_workers
from .errors import ReportInputError
from .metric_names import lookup
from .model import AGGREGATED, Run

SUFFIXES = ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv", "_hdr.csv", "_workers.json", "_workers.csv",
            "_counters.csv", "_metrics.csv", "_saturation.csv", "_run.json")
# old Locust spellings -> current ones
_ALIASES = {
    "Method": "Type",
    "# requests": "Request Count",
    "# failures": "Failure Count",
    "Median response time": "Median Response Time",
    "Max response time": "Max Response Time",
}
_WANTED_PCT = {"p50": "50%", "p90": "90%", "p95": "95%", "p99": "99%"}


def normalise_prefix(prefix: str) -> str:
    """Accept ``run`` as well as ``run_stats.csv`` (shell completion often adds the suffix), and a
    folder holding one run (``loadkit demo``'s output folder → ``<folder>/locust``)."""
    if os.path.isdir(prefix):
        runs = sorted(p[: -len("_stats.csv")] for p in glob.glob(os.path.join(prefix, "*_stats.csv")))
        if len(runs) == 1:
            return runs[0]
        if runs:
            raise ReportInputError(prefix, "holds several Locust runs; give one prefix: "
                                   + ", ".join(runs))
    for suffix in SUFFIXES:
        if prefix.endswith(suffix):
            return prefix[: -len(suffix)]
    return prefix


def _op_names(types: pd.Series, names: pd.Series) -> pd.Series:
    """Operation = Name; ``Type Name`` only where one Name has several Types in the same run."""
    frame = pd.DataFrame({"t": types.fillna(""), "n": names})
    multi = frame.groupby("n")["t"].transform("nunique") > 1
    return frame["n"].where(~multi, frame["t"] + " " + frame["n"])


def _read(path: str, what: str, needed: list[str], str_cols: list[str], check_last: bool = True) -> pd.DataFrame:
    text = csvutil.read_text(path)
    header = [_ALIASES.get(c, c) for c in csvutil.header_of(path, text)]
    csvutil.require_columns(path, header, needed, what)
    # put the normalised header back so dtypes line up with the names
    body = text.split("\n", 1)[1] if "\n" in text else ""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(header)
    return csvutil.read_typed(path, buf.getvalue() + body, header, str_cols, check_last=check_last)


def read_stats(path: str) -> pd.DataFrame:
    df = _read(path, "Locust _stats.csv", ["Type", "Name", "Request Count", "Failure Count", "Max Response Time"], ["Type", "Name"])
    df["Type"] = df["Type"].fillna("")
    csvutil.incomplete_rows(path, df, ["Request Count", "Failure Count"])
    csvutil.unique_keys(path, df, ["Type", "Name"])
    if df["Name"].iloc[-1] != AGGREGATED:
        raise ReportInputError(path, "no final 'Aggregated' row: file truncated or not written by Locust")
    return df


def read_history(path: str) -> pd.DataFrame:
    df = _read(path, "Locust _stats_history.csv", ["Timestamp", "User Count", "Name", "Total Request Count", "Total Failure Count"], ["Type", "Name"])
    if "Type" not in df:
        df["Type"] = ""
    df["Type"] = df["Type"].fillna("")
    csvutil.incomplete_rows(path, df, ["Timestamp", "Total Request Count", "Total Failure Count"])
    return df


def read_failures(path: str) -> pd.DataFrame:
    df = _read(path, "Locust _failures.csv", ["Type", "Name", "Error", "Occurrences"], ["Type", "Name", "Error", "First Seen", "Last Seen"], check_last=False)
    csvutil.incomplete_rows(path, df, ["Occurrences"])
    out = pd.DataFrame(
        {"type": df["Type"].fillna(""), "operation": df["Name"], "error": df["Error"].fillna(""), "occurrences": df["Occurrences"].astype("int64")}
    )
    for col, src in (("first_seen", "First Seen"), ("last_seen", "Last Seen")):
        out[col] = df[src].fillna("") if src in df else ""
    return out


def read_exceptions(path: str) -> pd.DataFrame:
    df = _read(path, "Locust _exceptions.csv", ["Count", "Message"], ["Message", "Traceback", "Nodes"], check_last=False)
    return pd.DataFrame(
        {
            "count": df["Count"].fillna(0).astype("int64"),
            "message": df["Message"].fillna(""),
            "traceback": df.get("Traceback", pd.Series([""] * len(df))).fillna(""),
            "nodes": df.get("Nodes", pd.Series([""] * len(df))).fillna(""),
        }
    )


def read_hdr(path: str) -> tuple[pd.DataFrame, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """Exact percentiles per (Type, Name) and the decoded histograms (values in ms, counts)."""
    df = _read(path, "loadkit _hdr.csv", ["Type", "Name", "Count", "50%", "90%", "95%", "99%", "Max"], ["Type", "Name", "Histogram"])
    df["Type"] = df["Type"].fillna("")
    csvutil.incomplete_rows(path, df, ["Count"])
    csvutil.unique_keys(path, df, ["Type", "Name"])
    histograms: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    if "Histogram" in df:
        for typ, name, enc in zip(df["Type"], df["Name"], df["Histogram"]):
            if isinstance(enc, str) and enc:
                histograms[(typ, name)] = locust_metrics.decode_histogram(path, f"row {typ} {name}", enc)
    return df, histograms


def _report_lag(ts: np.ndarray, totals: np.ndarray) -> int:
    """How many history rows one step of the cumulative count spans.

    A distributed master's totals only grow when a worker report lands (every ~3 s), while the
    history has a row per second: a per-row difference would draw 0, 0, 3×rate, 0, 0, ….
    Differences taken over the reporting cadence give the true rate instead.
    """
    if len(ts) < 4:
        return 1
    row_dt = float(np.median(np.diff(ts)))
    changed = ts[1:][np.diff(totals) > 0]
    if row_dt <= 0 or len(changed) < 3:
        return 1
    return max(1, int(round(float(np.median(np.diff(changed))) / row_dt)))


def _lagged_diff(values: np.ndarray, k: int) -> np.ndarray:
    """``values[i] - values[i - k]``, NaN for the first ``k`` rows."""
    out = np.full(len(values), np.nan)
    out[k:] = values[k:] - values[:-k]
    return out


def after_users_stopped(users: np.ndarray) -> np.ndarray:
    """Rows after the last one with running users (once there were some): the end of the run.

    What the totals gain there are the workers' final reports (and, in a local run, the last
    partial second written at exit): requests done *before* the users stopped, arriving in an
    interval that is not a full reporting period. Drawn as a rate they make a spike (or a tail of
    throughput with no users); the report leaves those rows out of requests/s and failures/s and
    says how many requests that concerns (the totals keep them).
    """
    active = np.flatnonzero(users > 0)
    out = np.zeros(len(users), dtype=bool)
    if active.size:
        out[active[-1] + 1:] = True
    return out


def _requests_history(history: pd.DataFrame, is_metric) -> pd.DataFrame:
    """A full history without its metric rows, the Aggregated rows rebuilt from the requests' rows.

    Locust's own Aggregated row counted every metric event as a request; the sum of the request
    rows' cumulative counts at each timestamp is the requests-only total. Its percentiles cannot be
    pooled from per-row percentiles, so they are left empty.
    """
    keys = list(zip(history["Type"], history["Name"]))
    metric_rows = np.array([is_metric(t, n) for t, n in keys], dtype=bool)
    agg_rows = (history["Name"] == AGGREGATED).to_numpy()
    req = history[~metric_rows & ~agg_rows].drop_duplicates(["Timestamp", "Type", "Name"], keep="last")
    agg = history[agg_rows].drop_duplicates("Timestamp", keep="last").set_index("Timestamp")
    sums = req.groupby("Timestamp")[["Total Request Count", "Total Failure Count"]].sum()
    sums = sums.reindex(agg.index).fillna(0.0)
    agg = agg.copy()
    agg[["Total Request Count", "Total Failure Count"]] = sums.to_numpy()
    for col in ("Requests/s", "Failures/s"):
        if col in req:
            agg[col] = req.groupby("Timestamp")[col].sum().reindex(agg.index).fillna(0.0).to_numpy()
    for col in agg.columns:
        if csvutil.PERCENTILE_COLUMN.match(col):
            agg[col] = np.nan
    return pd.concat([history[~metric_rows & ~agg_rows], agg.reset_index()[history.columns]], ignore_index=True)


def _requests_aggregated(summary: pd.DataFrame, histograms: dict) -> pd.Series:
    """The Aggregated summary row of the requests alone (older runs pooled metric events into it).

    Counts add up; requests/s keeps Locust's run duration (its Aggregated rps ÷ count); exact
    percentiles come from the requests' HDR histograms added together where every request row has
    one, otherwise they are unknown (Locust's pooled value would mix in the metrics).
    """
    agg = summary[summary["operation"] == AGGREGATED].iloc[-1].copy()
    req = summary[summary["operation"] != AGGREGATED]
    count = int(req["count"].sum())
    old_count = float(agg["count"])
    agg["rps"] = count * float(agg["rps"]) / old_count if old_count > 0 and pd.notna(agg["rps"]) else req["rps"].sum(min_count=1)
    agg["count"], agg["failures"] = count, int(req["failures"].sum())
    agg["max"] = req["max"].max()
    weights = req["count"].where(req["mean"].notna(), 0)
    agg["mean"] = float((req["mean"].fillna(0) * weights).sum() / weights.sum()) if weights.sum() > 0 else np.nan
    agg["min"] = req["min"].min() if "min" in req else np.nan
    for col in ("p75", "p99.99", *(c for c in agg.index if c.startswith("locust_"))):
        agg[col] = np.nan
    hists = [histograms.get(op) for op in req["operation"]]
    if hists and all(h is not None for h in hists):
        agg["p50"], agg["p90"], agg["p95"], agg["p99"], agg["p99.9"] = locust_metrics.pooled_percentiles(hists)
        agg["pct_source"] = "hdr exact"
    else:
        for col in ("p50", "p90", "p95", "p99", "p99.9"):
            agg[col] = np.nan
        agg["pct_source"] = "n/a (Locust's pooled metrics)"
    return agg


def _timeseries(history: pd.DataFrame, ops: pd.Series, full: bool) -> pd.DataFrame:
    h = history.assign(operation=ops.to_numpy())
    t0 = h["Timestamp"].min()
    parts = []
    for op, g in h.groupby("operation", sort=False):
        g = g.drop_duplicates("Timestamp", keep="last").sort_values("Timestamp")
        ts = g["Timestamp"].to_numpy(float)
        reqs = g["Total Request Count"].to_numpy(float)
        fails = g["Total Failure Count"].to_numpy(float)
        k = _report_lag(ts, reqs)
        dt = _lagged_diff(ts, k)
        d_req = _lagged_diff(reqs, k)
        d_fail = _lagged_diff(fails, k)
        ok = (dt > 0) & (d_req >= 0) & (d_fail >= 0)  # a stats reset makes the totals drop
        rolling = g["Requests/s"].to_numpy(float) if "Requests/s" in g else np.full(len(g), np.nan)
        rolling_f = g["Failures/s"].to_numpy(float) if "Failures/s" in g else np.full(len(g), np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            rps = np.where(ok, d_req / dt, rolling)
            err = np.where(ok, d_fail / dt, rolling_f)
        p50 = g["50%"].to_numpy(float) if "50%" in g else np.full(len(g), np.nan)
        p95 = g["95%"].to_numpy(float) if "95%" in g else np.full(len(g), np.nan)
        empty = reqs == 0
        if full and "100%" in g and "Total Max Response Time" in g:
            # Locust writes 0 (not N/A) while its 10 s window cache is still filling
            empty |= (g["100%"].to_numpy(float) == 0) & (g["Total Max Response Time"].to_numpy(float) >= 1)
        p50 = np.where(empty, np.nan, p50)
        p95 = np.where(empty, np.nan, p95)
        stopped = after_users_stopped(g["User Count"].to_numpy(float))
        rps = np.where(stopped, np.nan, rps)
        err = np.where(stopped, np.nan, err)
        parts.append(
            pd.DataFrame(
                {
                    "t": ts - t0,
                    "operation": op,
                    "rps": rps,
                    "p50": p50,
                    "p95": p95,
                    "users": g["User Count"].to_numpy(float),
                    "errors": err,
                    "pct_window": "10s window" if full else "cumulative",
                    "timestamp": pd.to_datetime(ts, unit="s", utc=True),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def read_locust_run(prefix: str, label: str) -> Run:
    """Everything one ``--csv`` prefix holds; only ``_stats.csv`` is mandatory."""
    prefix = normalise_prefix(prefix)
    run = Run(tool="locust", label=label)
    stats_path = prefix + "_stats.csv"
    if not os.path.exists(stats_path):
        near = sorted(p.name for p in Path(prefix).parent.glob(Path(prefix).name + "*"))[:4] if Path(prefix).parent.is_dir() else []
        hint = f" (found: {', '.join(near)})" if near else " (pass the value given to locust --csv)"
        raise ReportInputError(stats_path, f"file not found: no Locust run with prefix {prefix!r}{hint}")
    stats = read_stats(stats_path)
    run.sources.append(stats_path)
    rows = stats[stats["Name"] != AGGREGATED]
    total = stats.iloc[-1]
    if total["Request Count"] <= 0 or rows.empty:
        raise ReportInputError(stats_path, "empty run: Locust recorded no requests")
    ops = _op_names(stats["Type"], stats["Name"]).where(stats["Name"] != AGGREGATED, AGGREGATED)
    summary = pd.DataFrame(
        {
            "operation": ops,
            "type": stats["Type"],
            "name": stats["Name"],
            "count": stats["Request Count"].astype("int64"),
            "failures": stats["Failure Count"].astype("int64"),
            "rps": stats["Requests/s"] if "Requests/s" in stats else np.nan,
            "p50": stats["50%"] if "50%" in stats else stats.get("Median Response Time", np.nan),
            "p75": stats.get("75%", np.nan),
            "p90": stats.get("90%", np.nan),
            "p95": stats.get("95%", np.nan),
            "p99": stats.get("99%", np.nan),
            "p99.9": stats.get("99.9%", np.nan),
            "p99.99": stats.get("99.99%", np.nan),
            "max": stats["Max Response Time"],
            "min": stats.get("Min Response Time", np.nan),
            "mean": stats.get("Average Response Time", np.nan),
            "pct_source": "locust buckets",
        }
    )
    key = list(zip(stats["Type"], stats["Name"]))

    hdr_path = prefix + "_hdr.csv"
    hdr_total: int | None = None
    if os.path.exists(hdr_path):
        hdr, hists = read_hdr(hdr_path)
        run.sources.append(hdr_path)
        agg_rows = hdr[hdr["Name"] == AGGREGATED]
        hdr_total = int(agg_rows["Count"].iloc[-1]) if len(agg_rows) else None
        by_key = {(t, n): i for i, (t, n) in enumerate(zip(hdr["Type"], hdr["Name"]))}
        for col in ("p50", "p90", "p95", "p99"):
            summary["locust_" + col] = summary[col]
        exact_cols = {**{c: s for c, s in _WANTED_PCT.items()}, "max": "Max", "p99.9": "99.9%", "mean": "Mean", "min": "Min",
                      "p75": "75%", "p99.99": "99.99%"}  # fmt: skip
        matched = 0
        mismatched: list[str] = []
        for i, k in enumerate(key):
            j = by_key.get(k)
            if j is None and k[1] == AGGREGATED:
                j = by_key.get(("", AGGREGATED), by_key.get(("Aggregated", AGGREGATED)))
            if j is None:
                continue
            matched += 1
            row = hdr.iloc[j]
            for col, src in exact_cols.items():
                if src in hdr:
                    summary.iloc[i, summary.columns.get_loc(col)] = row[src]
            summary.iloc[i, summary.columns.get_loc("pct_source")] = "hdr exact"
            if int(row["Count"]) != int(summary["count"].iloc[i]):
                mismatched.append(f"{summary['operation'].iloc[i]} {int(row['Count'])} vs {int(summary['count'].iloc[i])}")
        if mismatched:
            run.notes.append(
                "exact histogram and _stats.csv counts differ (" + ", ".join(mismatched[:6]) + (" …" if len(mismatched) > 6 else "")
                + "): plain Locust rewrites _stats.csv once a second and not at shutdown, so it can miss the last second"
                " (loadkit.metrics.hdr makes Locust write it once more at exit);"
                " count, failures and rps are Locust's"
            )
        if not matched:
            run.notes.append(f"{hdr_path}: no row matches a (Type, Name) of {stats_path}; exact percentiles not used")
        op_of = dict(zip(key, summary["operation"]))
        for k, hv in hists.items():
            op = op_of.get(k) or (AGGREGATED if k[1] == AGGREGATED else k[1])
            run.histograms[op] = hv
        run.notes.append("summary percentiles are exact (HdrHistogram, merged across workers); Locust's own bucketed value is shown beside them")
    else:
        run.notes.append("percentiles are Locust's (rounded buckets, ~2 significant digits); no _hdr.csv found")

    # loadkit metrics: the metrics file, and metric rows that older runs recorded as requests
    found = locust_metrics.read_prefix(prefix)
    in_file = set(zip(found[0]["type"], found[0]["name"])) if found else set()

    def is_metric(typ: str, name: str) -> bool:
        return name != AGGREGATED and ((typ, name) in in_file or lookup(typ, name) is not None)

    if found:
        run.metrics, run.metric_histograms = found[0], found[1]
        run.sources.append(found[2])
    metric_mask = np.array([is_metric(t, n) for t, n in key], dtype=bool)
    if metric_mask.any():
        mrows = summary[metric_mask]
        names = ", ".join(mrows["operation"])
        if found:
            run.notes.append(f"_stats.csv also has {len(mrows)} loadkit metric(s) as request rows ({names}): shown once, under"
                             " loadkit metrics, and left out of the requests")  # fmt: skip
        else:
            run.metrics = locust_metrics.from_summary_rows(mrows)
            run.notes.append(f"recorded before loadkit had its own metrics channel: {len(mrows)} rows of _stats.csv ({names}) are"
                             " loadkit metrics, not requests; they are shown under loadkit metrics in their unit and left out"
                             " of the counts, requests/s and throughput")  # fmt: skip
        for op, typ, name in zip(mrows["operation"], mrows["type"], mrows["name"]):
            hv = run.histograms.pop(op, None)
            if hv is not None and not found:
                run.metric_histograms[(typ, name)] = hv
        summary = summary[~metric_mask].reset_index(drop=True)
        agg = _requests_aggregated(summary, run.histograms)
        summary.iloc[-1] = agg[summary.columns]
        req_hists = [run.histograms[op] for op in summary["operation"].iloc[:-1] if op in run.histograms]
        if req_hists and len(req_hists) == len(summary) - 1:
            run.histograms[AGGREGATED] = (np.concatenate([v for v, _ in req_hists]), np.concatenate([c for _, c in req_hists]))
        else:
            run.histograms.pop(AGGREGATED, None)
    run.summary = summary
    # the workers' requests are HDR sample counts: compare them with the HDR total where there is one
    if hdr_total is not None:
        locust_workers.attach(run, prefix, hdr_total, "_hdr.csv")
    else:
        locust_workers.attach(run, prefix, int(total["Request Count"]), "_stats.csv")
    if run.workers is not None and metric_mask.any() and not found:
        run.notes.append("this run's per-worker request counts include its metric events (recorded before loadkit had its own"
                         " metrics channel), so they add up to more than the requests above")  # fmt: skip

    locust_counters.attach(run, prefix)
    locust_runinfo.attach(run, prefix)

    hist_path = prefix + "_stats_history.csv"
    if os.path.exists(hist_path):
        history = read_history(hist_path)
        run.sources.append(hist_path)
        full = bool((history["Name"] != AGGREGATED).any())
        pooled = False
        if metric_mask.any():
            if full:
                history = _requests_history(history, is_metric)
            else:
                pooled = True
        hops = _op_names(history["Type"], history["Name"]).where(history["Name"] != AGGREGATED, AGGREGATED)
        run.timeseries = _timeseries(history, hops, full)
        if pooled:  # Aggregated-only history of an older run: Locust counted metric events as requests
            run.timeseries[["rps", "p50", "p95"]] = np.nan
            run.notes.append("no throughput or latency over time: this run's _stats_history.csv has only Locust's Aggregated"
                             " row, which counted loadkit metrics as requests (run with --csv-full-history to get them)")  # fmt: skip
        run.info["start"] = pd.to_datetime(history["Timestamp"].min(), unit="s", utc=True)
        run.info["duration_s"] = float(history["Timestamp"].max() - history["Timestamp"].min())
        _note_after_stop(run, history)
        run.notes.append(
            "percentiles over time cover a ~10 s window (--csv-full-history)"
            if full
            else "percentiles over time are cumulative since the start (run without --csv-full-history: Aggregated only)"
        )
    else:
        run.notes.append("no _stats_history.csv: no time series")
    locust_runinfo.attach_saturation(run, prefix)

    fail_path = prefix + "_failures.csv"
    if os.path.exists(fail_path) and os.path.getsize(fail_path) > 0:
        text = open(fail_path, "rb").read()
        if text.count(b"\n") >= 1 and text.strip().count(b"\n") >= 1:
            run.failures = read_failures(fail_path)
        run.sources.append(fail_path)
    exc_path = prefix + "_exceptions.csv"
    if os.path.exists(exc_path) and os.path.getsize(exc_path) > 0:
        text = open(exc_path, "rb").read()
        if text.strip().count(b"\n") >= 1:
            run.exceptions = read_exceptions(exc_path)
        run.sources.append(exc_path)
    return run


def _note_after_stop(run: Run, history: pd.DataFrame) -> None:
    """Say how many requests came in after the users stopped (the rows the throughput curve leaves out)."""
    agg = history[history["Name"] == AGGREGATED].drop_duplicates("Timestamp", keep="last").sort_values("Timestamp")
    if agg.empty:
        return
    users = agg["User Count"].to_numpy(float)
    stopped = after_users_stopped(users)
    if not stopped.any():
        return
    last_active = int(np.flatnonzero(~stopped)[-1])
    late = float(agg["Total Request Count"].iloc[-1] - agg["Total Request Count"].iloc[last_active])
    if late > 0:
        what = "request was" if late == 1 else f"{late:,.0f} requests were"
        run.notes.append(f"throughput over time ends when the users stopped: the last {what} reported after that (the"
                         " workers' final reports, or the last partial second); the totals hold them, the requests/s curve"
                         " does not")  # fmt: skip
