"""Turn k6 inputs of one labelled run into a :class:`Run`: percentiles from raw samples.

Percentiles use ``numpy.percentile`` (linear interpolation, as k6's own summary does) over the raw
samples of each operation, per time bucket for the time series: never an average of percentiles.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .errors import ReportInputError
from .k6_points import K6Points
from .k6_summary import read_summary
from .metric_names import lookup
from .model import AGGREGATED, METRIC_COLUMNS, Run

QUANTILES = (50, 90, 95, 99)


def _concat(points: list[K6Points]) -> K6Points:
    if len(points) == 1:
        return points[0]
    cat = np.concatenate
    methods: dict = {}
    for p in points:
        methods.update(p.http_methods)
    return K6Points(
        path=", ".join(p.path for p in points),
        sample_t=cat([p.sample_t for p in points]),
        sample_op=pd.Categorical(cat([np.asarray(p.sample_op, dtype=object) for p in points])),
        sample_ms=cat([p.sample_ms for p in points]),
        fail_t=cat([p.fail_t for p in points]),
        fail_op=cat([p.fail_op for p in points]),
        fail_kind=cat([p.fail_kind for p in points]),
        vus_t=cat([p.vus_t for p in points]),
        vus=cat([p.vus for p in points]),
        iterations=sum(p.iterations for p in points),
        checks_pass=sum(p.checks_pass for p in points),
        checks_fail=sum(p.checks_fail for p in points),
        http_methods=methods,
        t_min=min(p.t_min for p in points),
        t_max=max(p.t_max for p in points),
    )


def _summary(p: K6Points, duration: float) -> pd.DataFrame:
    codes = p.sample_op.codes
    cats = list(p.sample_op.categories)
    order = np.argsort(codes, kind="stable")
    ms_sorted = p.sample_ms[order]
    bounds = np.searchsorted(codes[order], np.arange(len(cats) + 1))
    fails = pd.Series(np.asarray(p.fail_op, dtype=object)).value_counts() if len(p.fail_op) else pd.Series(dtype="int64")
    rows = []

    def row(op: str, vals: np.ndarray, n_fail: int, typ: str) -> dict:
        q = np.percentile(vals, QUANTILES) if vals.size else [np.nan] * 4
        # failed http requests are samples too; other failures were never timed, so they add to the count
        n = int(vals.size) + (0 if typ else n_fail)
        return {
            "operation": op, "type": typ, "count": n, "failures": n_fail,
            "rps": n / duration if duration > 0 else np.nan,
            "p50": q[0], "p90": q[1], "p95": q[2], "p99": q[3],
            "max": float(vals.max()) if vals.size else np.nan,
            "mean": float(vals.mean()) if vals.size else np.nan,
            "pct_source": "raw samples",
        }  # fmt: skip

    for i, op in enumerate(cats):
        vals = ms_sorted[bounds[i] : bounds[i + 1]]
        if vals.size:
            rows.append(row(op, vals, int(fails.get(op, 0)), p.http_methods.get(op, "")))
    for op, n in fails.items():  # operations that only ever failed
        if op not in set(cats):
            rows.append(row(op, np.empty(0), int(n), ""))
    df = pd.DataFrame(rows).sort_values("operation", kind="stable")
    total = row(AGGREGATED, p.sample_ms, int(df["failures"].sum()), "")
    total["count"] = int(df["count"].sum())
    total["rps"] = total["count"] / duration if duration > 0 else np.nan
    return pd.concat([df, pd.DataFrame([total])], ignore_index=True)


_METRIC_PCT = {"p50": 50, "p75": 75, "p90": 90, "p95": 95, "p99": 99, "p99.9": 99.9, "p99.99": 99.99}


def _split_metrics(p: K6Points) -> tuple[K6Points, pd.DataFrame]:
    """The request samples, and one metric row per Trend the catalog knows as a loadkit metric.

    loadkit's k6 scripts record ``ttft``, ``delivery``… as Trends under the same names as the Locust
    side; they are not requests, so they are kept out of counts, requests/s and throughput.
    """
    cats = list(p.sample_op.categories)
    metric_ops = {op: lookup("", op) for op in cats}
    metric_ops = {op: uk for op, uk in metric_ops.items() if uk is not None}
    if not metric_ops:
        return p, pd.DataFrame(columns=METRIC_COLUMNS)
    is_metric = np.isin(p.sample_op.codes, [cats.index(op) for op in metric_ops])
    rows = []
    for op, (unit, kind) in sorted(metric_ops.items()):
        vals = p.sample_ms[p.sample_op.codes == cats.index(op)]
        if not vals.size:
            continue
        rec = {"type": "", "name": op, "kind": kind, "unit": unit, "count": int(vals.size), "min": float(vals.min()),
               "mean": float(vals.mean()), "max": float(vals.max()), "source": "raw samples"}  # fmt: skip
        rec.update(zip(_METRIC_PCT, np.percentile(vals, list(_METRIC_PCT.values()))))
        rows.append(rec)
    keep = ~is_metric
    fail_keep = ~np.isin(np.asarray(p.fail_op, dtype=object), list(metric_ops)) if p.fail_op.size else np.ones(0, dtype=bool)
    req = dataclasses.replace(
        p, sample_t=p.sample_t[keep], sample_op=p.sample_op[keep].remove_unused_categories(), sample_ms=p.sample_ms[keep],
        fail_t=p.fail_t[fail_keep], fail_op=p.fail_op[fail_keep], fail_kind=p.fail_kind[fail_keep],
    )  # fmt: skip
    return req, pd.DataFrame(rows, columns=METRIC_COLUMNS)


def _timeseries(p: K6Points, t0: float, bucket: float) -> pd.DataFrame:
    b = np.floor((p.sample_t - t0) / bucket).astype(np.int64)
    ops = pd.Categorical(p.sample_op, categories=[*p.sample_op.categories, AGGREGATED])
    both = pd.DataFrame(
        {"b": np.concatenate([b, b]), "operation": pd.Categorical.from_codes(
            np.concatenate([ops.codes, np.full(b.size, len(ops.categories) - 1, dtype=ops.codes.dtype)]), ops.categories),
         "v": np.concatenate([p.sample_ms, p.sample_ms])}
    )  # fmt: skip
    g = both.groupby(["b", "operation"], sort=True, observed=True)["v"]
    ts = g.quantile([0.5, 0.95]).unstack()
    ts.columns = ["p50", "p95"]
    ts["n"] = g.size()
    ts = ts.reset_index()
    ts["operation"] = ts["operation"].astype(str)
    if p.fail_t.size:
        fb = np.floor((p.fail_t - t0) / bucket).astype(np.int64)
        f = pd.DataFrame({"b": fb, "operation": p.fail_op})
        f = pd.concat([f, f.assign(operation=AGGREGATED)]).groupby(["b", "operation"]).size().rename("nf").reset_index()
        ts = ts.merge(f, on=["b", "operation"], how="outer")
    else:
        ts["nf"] = 0
    ts[["n", "nf"]] = ts[["n", "nf"]].fillna(0)
    # a full grid, so that quiet seconds show as zero throughput rather than as a gap
    n_buckets = int(np.floor((p.t_max - t0) / bucket)) + 1
    grid = pd.MultiIndex.from_product([np.arange(n_buckets), sorted(ts["operation"].unique())], names=["b", "operation"])
    ts = ts.set_index(["b", "operation"]).reindex(grid).reset_index()
    ts[["n", "nf"]] = ts[["n", "nf"]].fillna(0)
    # untimed failures count as requests, like Locust counts failed requests
    ts["rps"] = (ts["n"] + ts["nf"]) / bucket
    ts["errors"] = ts["nf"] / bucket
    if p.vus_t.size:
        vb = np.floor((p.vus_t - t0) / bucket).astype(np.int64)
        vus = pd.Series(p.vus).groupby(vb).last().reindex(np.arange(n_buckets)).ffill()
        ts["users"] = vus.reindex(ts["b"]).to_numpy()
    else:
        ts["users"] = np.nan
    ts["t"] = ts["b"] * bucket
    ts["timestamp"] = pd.to_datetime(t0 + ts["t"], unit="s", utc=True)
    ts["pct_window"] = f"{bucket:g}s bucket"
    return ts[["t", "operation", "rps", "p50", "p95", "users", "errors", "pct_window", "timestamp"]]


def build_k6_run(label: str, points: list[K6Points], summaries: list[str], bucket: float = 1.0) -> Run:
    """One run from its per-sample files (preferred) and/or summary files."""
    run = Run(tool="k6", label=label)
    if points:
        p = _concat(points)
        run.sources.extend(x.path for x in points)
        duration = max(p.t_max - p.t_min, 1e-9)
        p, run.metrics = _split_metrics(p)
        if not p.sample_ms.size and not p.fail_op.size:
            raise ReportInputError(run.sources[0], "no request in this run: every Trend is a loadkit metric")
        if len(run.metrics):
            run.notes.append(f"{len(run.metrics)} Trend(s) are loadkit metrics, not requests ({', '.join(run.metrics['name'])}):"
                             " shown under loadkit metrics, left out of counts, requests/s and throughput")  # fmt: skip
        run.summary = _summary(p, duration)
        run.timeseries = _timeseries(p, p.t_min, bucket)
        run.samples = pd.DataFrame({"operation": p.sample_op, "value": p.sample_ms})
        run.info.update(
            start=pd.to_datetime(p.t_min, unit="s", utc=True), duration_s=duration, iterations=p.iterations,
            checks_pass=p.checks_pass, checks_fail=p.checks_fail,
        )  # fmt: skip
        if p.fail_op.size:
            vc = pd.DataFrame({"operation": p.fail_op, "error": p.fail_kind}).value_counts().rename("occurrences").reset_index()
            vc.insert(0, "type", [p.http_methods.get(o, "") for o in vc["operation"]])
            run.failures = vc
        for x in points:
            run.notes.extend(x.notes)
        run.notes.append(f"percentiles from {p.sample_ms.size:,} raw samples (numpy, linear interpolation); time series in {bucket:g} s buckets")
        if summaries:
            run.sources.extend(summaries)
            run.notes.append("summary file(s) ignored for numbers: the per-sample output is more complete")
    else:
        frames = []
        for path in summaries:
            df, info = read_summary(path)
            frames.append(df)
            run.info.update(info)
            run.sources.append(path)
        df = pd.concat(frames, ignore_index=True).drop_duplicates("operation", keep="last")
        metric = np.array([lookup("", op) is not None for op in df["operation"]], dtype=bool)
        if metric.any():
            run.metrics = _summary_metrics(df[metric])
            df = df[~metric]
            run.notes.append(f"{int(metric.sum())} Trend(s) are loadkit metrics, not requests ({', '.join(run.metrics['name'])}):"
                             " shown under loadkit metrics, left out of counts and requests/s")  # fmt: skip
        has_fail = df["failures"].notna() & (df["type"] == "")
        df.loc[has_fail & df["count"].notna(), "count"] += df.loc[has_fail & df["count"].notna(), "failures"]
        total_count = df["count"].sum(min_count=len(df))
        total_fail = df["failures"].sum(min_count=1)
        if pd.isna(total_fail) and run.info.get("failures_total") is not None:
            total_fail = run.info["failures_total"]  # no per-operation breakdown in the summary
            total_count = total_count + total_fail
        df = pd.concat(
            [df, pd.DataFrame([{"operation": AGGREGATED, "type": "", "count": total_count, "failures": total_fail,
                                "rps": df["rps"].sum(min_count=len(df)), "pct_source": "k6 summary"}])],
            ignore_index=True,
        )  # fmt: skip
        run.summary = df
        run.notes.append("k6 summary only: exact k6 percentiles, no time series, no Aggregated percentiles")
        if df["p99"].isna().all():
            run.notes.append("no p99 in the summary (add 'p(99)' to k6's summaryTrendStats)")
    if run.summary is None or run.summary.empty:
        raise ReportInputError(run.sources[0] if run.sources else None, "empty run")
    return run


def _summary_metrics(rows: pd.DataFrame) -> pd.DataFrame:
    """Metric rows from k6's end-of-test summary (the statistics it lists; the rest stay empty)."""
    out = []
    for _, r in rows.iterrows():
        unit, kind = lookup("", r["operation"])
        rec = {"type": "", "name": r["operation"], "kind": kind, "unit": unit, "count": r.get("count", np.nan), "source": "k6 summary"}
        for col in ("min", "mean", "max", *_METRIC_PCT):
            rec[col] = r[col] if col in r and pd.notna(r[col]) else np.nan
        out.append(rec)
    return pd.DataFrame(out, columns=METRIC_COLUMNS)
