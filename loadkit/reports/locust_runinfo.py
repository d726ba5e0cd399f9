"""Facts about a Locust run that its numbers do not carry: scenario, warnings, generator saturation.

Why: a report must say what was run and when its latencies cannot be trusted. Two optional files
beside the CSVs hold that:

* ``<prefix>_run.json`` — written by ``loadkit demo`` (anyone may write it):
  ``{"scenario": "mixed", "locustfile": "...", "warnings": ["..."]}``. ``scenario`` labels the run
  (instead of the CSV prefix's base name, which is ``locust`` for every demo run); each
  ``warnings`` entry (e.g. the demo's "servers and workers shared N CPU cores") is shown at the top
  of the report. Other keys are kept in ``Run.info["run_json"]``.
* ``<prefix>_saturation.csv`` — written by the Locust master: ``Worker, Start, End, Seconds, Mean
  CPU %, Peak CPU %``, one row per interval in which a worker's own CPU stayed ≥ 90 % for ≥ 5 s
  (Start/End in unix seconds). Each row becomes a warning: the latencies of that interval include
  client-side queueing. A file with only its header means "measured, none".

Like every other input, a present but unreadable file is an input error naming it.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from . import csvutil
from .errors import ReportInputError
from .model import Run

RUN_SUFFIX = "_run.json"
SATURATION_SUFFIX = "_saturation.csv"
SATURATION_COLUMNS = ["Worker", "Start", "End", "Seconds", "Mean CPU %", "Peak CPU %"]


def read_run_json(path: str) -> dict:
    """The run facts: ``scenario`` (str), ``warnings`` (list of str), anything else as given."""
    raw = csvutil.read_bytes(path)
    if not raw.strip():
        raise ReportInputError(path, "file is empty")
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ReportInputError(path, f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(doc, dict):
        raise ReportInputError(path, 'not a loadkit run file: expected {"scenario": ..., "warnings": [...]}')
    scenario = doc.get("scenario")
    if scenario is not None and not (isinstance(scenario, str) and scenario.strip()):
        raise ReportInputError(path, f"'scenario' must be a non-empty string, got {scenario!r}")
    warnings = doc.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise ReportInputError(path, "'warnings' must be a list of strings")
    return doc


def default_label(prefix: str) -> str:
    """An unlabelled run's name: its scenario when ``_run.json`` gives one, else the prefix's base
    name, or its folder's when the base name is just ``locust`` (every demo run's prefix)."""
    path = prefix + RUN_SUFFIX
    if os.path.exists(path):
        scenario = read_run_json(path).get("scenario")
        if scenario:
            return scenario.strip()[:60]
    base = os.path.basename(prefix.rstrip("/"))
    if base in ("", "locust"):
        folder = os.path.basename(os.path.dirname(os.path.abspath(prefix)))
        return folder or base or prefix
    return base


def attach(run: Run, prefix: str) -> None:
    """``_run.json``'s warnings into ``run.warnings``, the rest into ``run.info``."""
    path = prefix + RUN_SUFFIX
    if not os.path.exists(path):
        return
    doc = read_run_json(path)
    run.sources.append(path)
    run.warnings.extend(w.strip() for w in doc.get("warnings", []) if w.strip())
    run.info["run_json"] = doc
    if doc.get("scenario"):
        run.info["scenario"] = doc["scenario"]


def _number(path, lineno: int, col: str, text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ReportInputError(path, f"line {lineno}, {col!r}: {text!r} is not a number") from None
    if value != value or value < 0:
        raise ReportInputError(path, f"line {lineno}, {col!r}: {text!r} is not a number >= 0")
    return value


def read_saturation(path: str) -> pd.DataFrame:
    """Columns worker, start, end (UTC timestamps), seconds, mean_cpu, peak_cpu; empty = none recorded."""
    rows = []
    for lineno, raw in csvutil.checked_rows(path, SATURATION_COLUMNS, "loadkit _saturation.csv"):
        start, end = (_number(path, lineno, c, raw[c]) for c in ("Start", "End"))
        if end < start:
            raise ReportInputError(path, f"line {lineno}: End {raw['End']} is before Start {raw['Start']}")
        rows.append({"worker": raw["Worker"].strip() or "?", "start": start, "end": end,
                     "seconds": _number(path, lineno, "Seconds", raw["Seconds"]),
                     "mean_cpu": _number(path, lineno, "Mean CPU %", raw["Mean CPU %"]),
                     "peak_cpu": _number(path, lineno, "Peak CPU %", raw["Peak CPU %"])})  # fmt: skip
    df = pd.DataFrame(rows, columns=["worker", "start", "end", "seconds", "mean_cpu", "peak_cpu"])
    for col in ("start", "end"):
        df[col] = pd.to_datetime(df[col].astype(float), unit="s", utc=True)
    return df


def saturation_warning(row: dict, run_start) -> str:
    """One line: which worker, when (UTC and seconds into the run), how busy, and what it means."""
    when = f"from {row['start']:%H:%M:%S} to {row['end']:%H:%M:%S} UTC"
    if run_start is not None and not pd.isna(run_start):
        a, b = ((row[c] - run_start).total_seconds() for c in ("start", "end"))
        when += f" (t = {a:.0f}–{b:.0f} s)"
    return (f"generator saturated: worker {row['worker']}'s own CPU stayed at or above 90 % {when}, {row['seconds']:.0f} s,"
            f" mean {row['mean_cpu']:.0f} %, peak {row['peak_cpu']:.0f} %: latencies measured then include time spent"
            " waiting for that worker's CPU (client-side queueing), not only the server's answer time")


def attach_saturation(run: Run, prefix: str) -> None:
    """``_saturation.csv`` into ``run.saturation`` and one warning per interval."""
    path = prefix + SATURATION_SUFFIX
    if not os.path.exists(path):
        return
    run.saturation = read_saturation(path)
    run.sources.append(path)
    start = run.info.get("start")
    for row in run.saturation.to_dict("records"):
        run.warnings.append(saturation_warning(row, start))
    if run.saturation.empty:
        run.notes.append("generator CPU: no worker stayed at or above 90 % for 5 s or more (_saturation.csv)")
