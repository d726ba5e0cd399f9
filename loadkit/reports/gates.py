"""The report's "Service level objectives" and "Goodput" sections, from each Locust run's
``<prefix>_slo.csv`` and ``<prefix>_goodput.csv``.

Why a module of its own: the section is read and rendered here, apart from the rest of the report,
and put at the top of the HTML as one ready block (``gates_html``), so the report's other readers
and its template change by one line. The CSV is written by :mod:`loadkit.metrics.slo_gate` with
the columns of :data:`loadkit.metrics.slo.CSV_COLUMNS` (goodput: :data:`loadkit.metrics.goodput.CSV_COLUMNS`).
"""

from __future__ import annotations

import csv
import html
import os
from typing import Any

from loadkit.metrics import goodput
from loadkit.metrics.slo import CSV_COLUMNS, CSV_SUFFIX

from .errors import ReportInputError

STATS_SUFFIX = "_stats.csv"


def run_prefix(run: Any) -> str | None:
    """The ``--csv`` prefix of a Locust run (its first source is ``<prefix>_stats.csv``)."""
    if getattr(run, "tool", None) != "locust" or not run.sources or not str(run.sources[0]).endswith(STATS_SUFFIX):
        return None
    return str(run.sources[0])[: -len(STATS_SUFFIX)]


def _read(path: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != columns:
                raise ReportInputError(path, f"columns {reader.fieldnames or 'none (empty file)'} are not "
                                             f"{', '.join(columns)}")
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportInputError(path, f"cannot read: {exc}") from None


def read_goodput_csv(path: str) -> list[dict[str, str]]:
    """Rows of a ``_goodput.csv``, numbers checked; :class:`ReportInputError` naming the file."""
    rows = _read(path, goodput.CSV_COLUMNS)
    for n, row in enumerate(rows, start=2):
        try:
            int(row["Requests"]), int(row["Good"]), float(row["Goodput %"])
        except (TypeError, ValueError):
            raise ReportInputError(path, f"line {n}: not a row of loadkit's goodput file") from None
    return rows


def read_slo_csv(path: str) -> list[dict[str, str]]:
    """Rows of a ``_slo.csv``; :class:`ReportInputError` naming the file when it is not loadkit's."""
    rows = _read(path, CSV_COLUMNS)
    for n, row in enumerate(rows, start=2):
        if row["Result"] not in ("PASS", "FAIL") or None in row.values():
            raise ReportInputError(path, f"line {n}: not a row of loadkit's SLO file")
    return rows


def slo_groups(runs: list[Any]) -> list[dict[str, Any]]:
    """Per Locust run with a ``_slo.csv``: its label, rows, and how many failed."""
    groups = []
    for run in runs:
        prefix = run_prefix(run)
        if prefix is None or not os.path.exists(prefix + CSV_SUFFIX):
            continue
        path = prefix + CSV_SUFFIX
        rows = read_slo_csv(path)
        groups.append({"label": f"{run.tool} {run.label}", "path": path, "rows": rows,
                       "failed": sum(r["Result"] != "PASS" for r in rows)})
    return groups


def goodput_section(runs: list[Any]) -> str:
    """The HTML of the goodput section ('' when no run counted goodput)."""
    groups = []
    for run in runs:
        prefix = run_prefix(run)
        if prefix is not None and os.path.exists(prefix + goodput.CSV_SUFFIX):
            groups.append((f"{run.tool} {run.label}", read_goodput_csv(prefix + goodput.CSV_SUFFIX)))
    if not groups:
        return ""
    out = ['<h2 id="goodput">Goodput</h2>',
           '<p class="caption">Requests that succeeded <b>and</b> met every <code>--goodput</code> target of '
           'their operation at once (e.g. a chldo turn\'s ttft and its total time), counted on every worker and '
           'summed. good/s = good requests / run time (the time base of Locust\'s Requests/s).</p>']
    for label, rows in groups:
        out.append(f"<h3>{html.escape(label)}</h3>")
        out.append('<table><tr><th class="l">type</th><th class="l">operation</th><th class="l">targets</th>'
                   '<th>requests</th><th>good</th><th>goodput %</th><th>good/s</th><th>requests/s</th></tr>')
        for r in rows:
            out.append("<tr>" + _cell(r["Type"], "l") + _cell(r["Name"], "l") + _cell(r["Targets"], "l")
                       + _cell(r["Requests"]) + _cell(r["Good"]) + _cell(r["Goodput %"]) + _cell(r["Good/s"] or "–")
                       + _cell(r["Requests/s"] or "–") + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def _cell(text: str, cls: str = "") -> str:
    return f'<td{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>{html.escape(text)}</td>'


def slo_section(runs: list[Any]) -> str:
    """The HTML of the section ('' when no run has SLOs)."""
    groups = slo_groups(runs)
    if not groups:
        return ""
    out = ['<h2 id="slo">Service level objectives</h2>',
           '<p class="caption">Each <code>--slo</code> of the run, judged at its end on the exact figures '
           '(merged over the workers): percentiles, mean, min and max from loadkit\'s HDR histograms, '
           'fail_rate and rps from Locust\'s request statistics. Measured and target are in the unit the '
           'target was written in. An SLO without samples fails.</p>']
    for g in groups:
        n = len(g["rows"])
        verdict = f"{g['failed']} of {n} failed" if g["failed"] else f"all {n} passed"
        out.append(f'<h3>{html.escape(g["label"])}: <span style="color:{"#b42318" if g["failed"] else "#067647"}">'
                   f'{html.escape(verdict)}</span></h3>')
        out.append('<table><tr><th class="l">result</th><th class="l">SLO</th><th>measured</th><th class="l"></th>'
                   '<th>target</th><th class="l">unit</th><th class="l">detail</th></tr>')
        for r in g["rows"]:
            ok = r["Result"] == "PASS"
            out.append("<tr>" + _cell(r["Result"], "l" if ok else "l bad") + _cell(r["SLO"], "l")
                       + _cell(r["Measured"] or "–") + _cell(r["Op"], "l") + _cell(r["Target"])
                       + _cell(r["Unit"], "l") + _cell(r["Detail"], "l") + "</tr>")
        out.append("</table>")
    return "\n".join(out)
