"""Read loadkit's ``<prefix>_counters.csv``: counts of things that are not requests.

Why in the report: an unknown server event, a failure event no request claimed or a session lost
to a second login has no response time, so Locust's stats never show it; the users count it (see
:mod:`loadkit.metrics.counters`) and the report lists the counts beside the failures. The file is
optional; one that is present and unreadable is an input error, like every other input.
"""

from __future__ import annotations

import csv
import io
import os

import pandas as pd

from . import csvutil
from .errors import ReportInputError

SUFFIX = "_counters.csv"
COLUMNS = ["Type", "Name", "Count"]


def read_counters(path: str) -> pd.DataFrame:
    """Columns type, name, count (a whole number >= 0), in the file's order."""
    text = csvutil.read_text(path)
    header = csvutil.header_of(path, text)
    csvutil.require_columns(path, header, COLUMNS, "a loadkit counters file")
    rows = []
    for line_no, raw in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        count = (raw.get("Count") or "").strip()
        if not (count.isascii() and count.isdigit()):
            raise ReportInputError(path, f"line {line_no}, 'Count': {raw.get('Count')!r} is not a whole number >= 0")
        name = (raw.get("Name") or "").strip()
        if not name:
            raise ReportInputError(path, f"line {line_no}: empty Name")
        rows.append({"type": (raw.get("Type") or "").strip(), "name": name, "count": int(count)})
    return pd.DataFrame(rows, columns=["type", "name", "count"]).astype({"count": "int64"})


def attach(run, prefix: str) -> None:
    """Read ``prefix``'s counters file into ``run`` when there is one."""
    path = prefix + SUFFIX
    if not os.path.exists(path):
        return
    run.counters = read_counters(path)
    run.sources.append(path)
