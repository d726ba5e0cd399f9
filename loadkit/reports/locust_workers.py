"""Read the Locust master's per-worker bookkeeping (``<prefix>_workers.json`` or ``_workers.csv``).

Why: when a worker dies mid-run the master finishes the run, and nothing in Locust's own CSVs says
that the totals lack that worker's last seconds. loadkit's master writes one row per worker (see
docs/distributed.md and :mod:`loadkit.metrics.workers`); the report shows them and turns each
lost worker into a warning at the top ("worker 1 … was lost at 12:00:03 UTC; the totals include the
1,234 requests it reported before that").

The JSON is preferred (same rows, plus per-operation counts); the CSV is read when only it exists.
Both are optional, but a file that is present and unreadable is an input error like any other: a
report that silently dropped it could hide the very lost worker it exists to show.
"""

from __future__ import annotations

import json
import os

import pandas as pd

from . import csvutil
from .errors import ReportInputError
from .model import Run

JSON_SUFFIX = "_workers.json"
CSV_SUFFIX = "_workers.csv"
#: columns loadkit's master writes (loadkit.metrics.workers.WORKER_COLUMNS)
COLUMNS = ["client_id", "index", "hostname", "pid", "state", "reports", "requests", "first_seen", "last_seen", "final_report", "lost"]
#: columns a file must have; the rest default to empty
REQUIRED = ["client_id", "index", "state", "reports", "requests", "last_seen", "lost"]
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def _int(path, where: str, col: str, value, empty_ok: bool) -> int | None:
    if isinstance(value, bool):
        raise ReportInputError(path, f"{where}, {col!r}: {value!r} is not a whole number")
    if isinstance(value, int):
        return value
    text = "" if value is None else str(value).strip()
    if not text and empty_ok:
        return None
    try:
        return int(text)
    except ValueError:
        raise ReportInputError(path, f"{where}, {col!r}: {value!r} is not a whole number") from None


def _bool(path, where: str, col: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ReportInputError(path, f"{where}, {col!r}: {value!r} is not true/false")


def _time(path, where: str, col: str, value) -> pd.Timestamp:
    text = "" if value is None else str(value).strip()
    if not text:
        return pd.NaT
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise ReportInputError(path, f"{where}, {col!r}: {value!r} is not an ISO 8601 time") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _row(path, where: str, raw: dict) -> dict:
    missing = [c for c in REQUIRED if c not in raw]
    if missing:
        raise ReportInputError(path, f"{where}: missing {', '.join(missing)}: not a loadkit workers file?")
    client_id = str(raw["client_id"] or "").strip()
    if not client_id:
        raise ReportInputError(path, f"{where}: empty client_id")
    return {
        "client_id": client_id,
        "index": _int(path, where, "index", raw["index"], empty_ok=False),
        "hostname": str(raw.get("hostname") or ""),
        "pid": _int(path, where, "pid", raw.get("pid", ""), empty_ok=True),
        "state": str(raw.get("state") or ""),
        "reports": _int(path, where, "reports", raw["reports"], empty_ok=False),
        "requests": _int(path, where, "requests", raw["requests"], empty_ok=False),
        "first_seen": _time(path, where, "first_seen", raw.get("first_seen", "")),
        "last_seen": _time(path, where, "last_seen", raw["last_seen"]),
        "final_report": _bool(path, where, "final_report", raw.get("final_report", "")),
        "lost": _bool(path, where, "lost", raw["lost"]),
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("index", "reports", "requests"):
        df[col] = df[col].astype("int64")
    df["pid"] = df["pid"].astype("Int64")
    for col in ("first_seen", "last_seen"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def read_workers_json(path: str) -> pd.DataFrame:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ReportInputError(path, f"cannot read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise ReportInputError(path, "file is empty")
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ReportInputError(path, f"not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(raw.rstrip()) - 1
        raise ReportInputError(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})" + (": file truncated?" if cut else "")) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("workers"), list):
        raise ReportInputError(path, 'not a loadkit workers file: expected {"workers": [...]}')
    rows = []
    for i, item in enumerate(doc["workers"], start=1):
        if not isinstance(item, dict):
            raise ReportInputError(path, f"worker entry {i}: expected an object, got {type(item).__name__}")
        rows.append(_row(path, f"worker entry {i}", item))
    return _frame(rows)


def read_workers_csv(path: str) -> pd.DataFrame:
    rows = [_row(path, f"line {lineno}", raw)
            for lineno, raw in csvutil.checked_rows(path, REQUIRED, "loadkit _workers.csv")]
    return _frame(rows)


def read_workers(prefix: str) -> tuple[pd.DataFrame, str] | None:
    """The workers of a run and the file they came from; None when the run has no workers file."""
    json_path, csv_path = prefix + JSON_SUFFIX, prefix + CSV_SUFFIX
    if os.path.exists(json_path):
        return read_workers_json(json_path), json_path
    if os.path.exists(csv_path):
        return read_workers_csv(csv_path), csv_path
    return None


def worker_name(row: pd.Series | dict) -> str:
    """``1 (host pid 4242)``: the master's worker index, then where it ran; the client id without index."""
    where = " ".join(p for p in (str(row["hostname"] or ""), "" if pd.isna(row["pid"]) else f"pid {int(row['pid'])}") if p)
    name = str(row["index"]) if int(row["index"]) >= 0 else str(row["client_id"])
    return f"{name} ({where})" if where else name


def clock(ts) -> str:
    return "an unknown time" if pd.isna(ts) else ts.strftime("%H:%M:%S UTC")


def lost_warnings(workers: pd.DataFrame) -> list[str]:
    """One line per lost worker: who, when it was last heard from, and what the totals hold of it."""
    out = []
    for _, row in workers[workers["lost"]].iterrows():
        n = int(row["requests"])
        out.append(
            f"worker {worker_name(row)} was lost at {clock(row['last_seen'])}; the totals include the {n:,} "
            f"request{'s' if n != 1 else ''} it reported before that, not what it did after its last report"
        )
    return out


def attach(run: Run, prefix: str, total: int | None, total_source: str) -> None:
    """Read ``prefix``'s workers file (if any) into ``run``: table, warnings, a consistency note."""
    found = read_workers(prefix)
    if found is None:
        return
    workers, path = found
    run.sources.append(path)
    if workers.empty:
        run.notes.append(f"{path} lists no worker")
        return
    run.workers = workers
    run.warnings.extend(lost_warnings(workers))
    n_lost = int(workers["lost"].sum())
    summed = int(workers["requests"].sum())
    note = f"{len(workers)} Locust worker{'s' if len(workers) != 1 else ''}" + (f", {n_lost} lost" if n_lost else ", none lost")
    if total is not None and summed != total:
        note += f"; their reported requests add up to {summed:,}, {total_source} says {total:,}"
    else:
        note += f"; their reported requests add up to the run's total ({summed:,})"
    run.notes.append(note)
