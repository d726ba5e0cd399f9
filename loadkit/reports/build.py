"""Orchestrate ``loadkit report``: inputs -> runs -> tidy tables -> charts -> HTML + CSV + console."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import ReportInputError
from .model import Run

_LABEL = re.compile(r"^(?P<label>[A-Za-z0-9_.:@+\- ]{1,60})=(?P<path>.+)$")
_K6_EXT = re.compile(r"(\.(ndjson|jsonl|json|csv|txt))?(\.gz)?$")


@dataclass
class Result:
    out_dir: Path
    html: Path
    summary: pd.DataFrame
    timeseries: pd.DataFrame
    console: str


def split_label(value: str, exists) -> tuple[str | None, str]:
    """``LABEL=PATH`` -> (LABEL, PATH); a value that is itself an existing path wins."""
    m = _LABEL.match(value)
    if m and not exists(value):
        return m["label"].strip(), m["path"]
    return None, value


def _k6_stem(path: str) -> str:
    name = os.path.basename(path)
    return _K6_EXT.sub("", name) or name


def collect_runs(args) -> list[Run]:
    from .k6_points import read_points
    from .k6_run import build_k6_run
    from .locust_csv import normalise_prefix, read_locust_run
    from .locust_runinfo import default_label

    if not (args.locust or args.k6_json or args.k6_csv or args.k6_summary):
        raise ReportInputError(None, "no input: give at least one of --locust, --k6-json, --k6-csv, --k6-summary")
    runs: list[Run] = []
    seen: set[tuple[str, str]] = set()
    for value in args.locust:
        label, prefix = split_label(value, lambda v: os.path.exists(normalise_prefix(v) + "_stats.csv"))
        prefix = normalise_prefix(prefix)
        if label is None:
            label = default_label(prefix)
            folder = os.path.basename(os.path.dirname(os.path.abspath(prefix)))
            if ("locust", label) in seen and folder and folder != label:  # two demo runs of one scenario
                label = f"{label} ({folder})"
        if ("locust", label) in seen:
            raise ReportInputError(prefix, f"run label {label!r} is used twice: give each run its own LABEL=")
        seen.add(("locust", label))
        runs.append(read_locust_run(prefix, label))

    k6_inputs: list[tuple[str | None, str, str]] = []  # (label, kind, path)
    for kind, values in (("json", args.k6_json), ("csv", args.k6_csv), ("summary", args.k6_summary)):
        for value in values:
            label, path = split_label(value, os.path.exists)
            k6_inputs.append((label, kind, path))
    if k6_inputs:
        unlabelled = [x for x in k6_inputs if x[0] is None]
        kinds = [x[1] for x in unlabelled]
        one_run = len(unlabelled) == len(k6_inputs) and len(kinds) == len(set(kinds))
        groups: dict[str, list[tuple[str, str]]] = {}
        for label, kind, path in k6_inputs:
            if label is None:
                label = "k6" if one_run else _k6_stem(path)
            groups.setdefault(label, []).append((kind, path))
        for label, items in groups.items():
            if ("k6", label) in seen:
                raise ReportInputError(items[0][1], f"run label {label!r} is used twice")
            seen.add(("k6", label))
            points = [read_points(path, kind) for kind, path in items if kind in ("json", "csv")]
            if len(points) > 1 and {k for k, _ in items if k != "summary"} == {"json", "csv"}:
                raise ReportInputError(items[0][1], f"run {label!r} has both --k6-json and --k6-csv: they hold the same samples, give one")
            summaries = [path for kind, path in items if kind == "summary"]
            runs.append(build_k6_run(label, points, summaries, bucket=args.bucket))
    return runs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "report"


def build_report(args) -> Result:
    t_start = time.perf_counter()
    if args.bucket <= 0:
        raise ReportInputError(None, "--bucket must be a positive number of seconds")
    runs = collect_runs(args)
    from . import charts, console, html, tables  # matplotlib only once the inputs are known good
    title = args.title or "Load test report: " + ", ".join(f"{r.tool} {r.label}" for r in runs)
    out_dir = Path(args.out) if args.out else Path("reports") / _slug(args.name or "-".join(r.label for r in runs))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ReportInputError(out_dir, "--out exists and is not a directory") from None
    except OSError as exc:
        raise ReportInputError(out_dir, f"cannot create the output directory: {exc.strerror or exc}") from None

    summary = tables.summary_table(runs)
    timeseries = tables.timeseries_table(runs)
    failures = tables.failures_table(runs)
    workers = tables.workers_table(runs)
    counters = tables.counters_table(runs)
    metrics = tables.metrics_table(runs)
    pngs = charts.render_all(runs, summary, timeseries, out_dir, metrics)
    try:
        summary.to_csv(out_dir / "summary.csv", index=False, float_format="%.3f")
        epoch = pd.Timestamp(0, tz="UTC")
        unix = (pd.to_datetime(timeseries["timestamp"], utc=True) - epoch).dt.total_seconds() if len(timeseries) else timeseries["timestamp"]
        ts_out = timeseries.assign(timestamp=unix)
        ts_out.rename(columns={"timestamp": "unix_time"}).round(3).to_csv(out_dir / "timeseries.csv", index=False)
        failures.to_csv(out_dir / "failures.csv", index=False)
        if len(workers):  # booleans as the master writes them: true/false
            flags = {c: workers[c].map({True: "true", False: "false"}) for c in ("final_report", "lost")}
            workers.assign(**flags).to_csv(out_dir / "workers.csv", index=False)
        if len(counters):
            counters.to_csv(out_dir / "counters.csv", index=False)
        if len(metrics):
            metrics.to_csv(out_dir / "metrics.csv", index=False, float_format="%.3f")
    except OSError as exc:
        raise ReportInputError(out_dir, f"cannot write: {exc.strerror or exc}") from None
    text_summary = console.render(title, runs, summary, metrics)
    html_path = out_dir / "report.html"
    html.write(html_path, title=title, runs=runs, summary=summary, timeseries=timeseries, failures=failures, workers=workers, pngs=pngs,
               counters=counters, metrics=metrics)
    elapsed = time.perf_counter() - t_start
    text = text_summary + f"\nreport: {html_path}  ({elapsed:.1f} s; tables and charts in {out_dir}/)"
    return Result(out_dir=out_dir, html=html_path, summary=summary, timeseries=timeseries, console=text)
