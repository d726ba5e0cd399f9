"""The report's "Service level objectives", "Goodput" and "Capacity sweep" sections, from each
Locust run's ``<prefix>_slo.csv``, ``<prefix>_goodput.csv`` and ``<prefix>_sweep.csv``.

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


from loadkit.pacing import SWEEP_SUFFIX  # noqa: E402 - pure
SWEEP_REQUIRED = ("Stage", "Kind", "Offered/s", "Achieved/s", "p50 ms", "p95 ms", "p99 ms", "Goodput %", "Passed")


def read_sweep_csv(path: str) -> tuple[list[dict[str, str]], list[str]]:
    """(rows, SLO columns) of a ``_sweep.csv``; :class:`ReportInputError` naming the file."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or ())
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportInputError(path, f"cannot read: {exc}") from None
    missing = [c for c in SWEEP_REQUIRED if c not in columns]
    if missing:
        raise ReportInputError(path, f"not loadkit's sweep file: no column {', '.join(missing)}")
    for n, row in enumerate(rows, start=2):
        try:
            float(row["Achieved/s"])
            if row["Kind"] == "constant":
                float(row["Offered/s"])
        except (TypeError, ValueError):
            raise ReportInputError(path, f"line {n}: not a row of loadkit's sweep file") from None
    from loadkit.pacing import SWEEP_COLUMNS

    return rows, [c for c in columns if c not in SWEEP_COLUMNS]


def _f(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def knee_chart(rows: list[dict[str, str]], slo_columns: list[str]) -> str:
    """The knee: latency percentiles and goodput against the rate, as a base64 PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loadkit.metrics import slo as slo_mod

    def rate(r: dict[str, str]) -> float:
        return _f(r["Offered/s"]) if r["Kind"] == "constant" else _f(r["Achieved/s"])

    pts = sorted((r for r in rows if r["Kind"] != "throughput"), key=rate)  # the open-model curve
    closed = [r for r in rows if r["Kind"] == "throughput"]  # saturated closed loop: a point apart
    x = [rate(r) for r in pts]
    fig, ax = plt.subplots(figsize=(9.5, 4.6))
    for col, style in (("p50 ms", ":"), ("p95 ms", "-"), ("p99 ms", "--")):
        ax.plot(x, [_f(r[col]) for r in pts], style, marker="o", label=col.replace(" ms", ""), color="#274a8c")
    for col in slo_columns:
        try:
            s = slo_mod.parse(col)
        except ValueError:
            continue
        if s.stat not in ("fail_rate", "rps", "goodput") and s.unit in ("ms", "s", ""):
            ax.axhline(s.target, color="#b42318", linewidth=1, linestyle="-.", label=f"SLO {col}")
    for r in closed:
        ax.scatter([rate(r)], [_f(r["p95 ms"])], marker="x", s=60, color="#5b6474", zorder=5,
                   label="throughput stage p95 (closed loop)")
    for r in pts:
        if r["Kind"] == "constant":
            ax.scatter([rate(r)], [_f(r["p95 ms"])], s=70, facecolors="none",
                       edgecolors="#067647" if r["Passed"] == "yes" else "#b42318", zorder=5)
    passing = [rate(r) for r in pts if r["Kind"] == "constant" and r["Passed"] == "yes"]
    if passing:
        ax.axvline(max(passing), color="#067647", linewidth=1.2, label=f"capacity {max(passing):.2f}/s")
    ax.set_xlabel("arrival rate (iterations/s; closed stages: achieved)")
    ax.set_ylabel("latency of the first SLO's figure (ms)")
    ax.set_yscale("log")
    goodput = [_f(r["Goodput %"]) for r in pts]
    if any(g == g for g in goodput):
        ax2 = ax.twinx()
        ax2.plot(x, goodput, color="#8a5cf6", marker="s", label="goodput %")
        ax2.set_ylabel("goodput %")
        ax2.set_ylim(0, 105)
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Capacity sweep: latency and goodput against arrival rate (circles: green = every SLO held)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def sweep_section(runs: list[Any]) -> str:
    """The HTML of the capacity sweep section ('' when no run swept)."""
    out: list[str] = []
    for run in runs:
        prefix = run_prefix(run)
        if prefix is None or not os.path.exists(prefix + SWEEP_SUFFIX):
            continue
        rows, slo_columns = read_sweep_csv(prefix + SWEEP_SUFFIX)
        if not rows:
            continue
        passing = [_f(r["Offered/s"]) for r in rows if r["Kind"] == "constant" and r["Passed"] == "yes"]
        verdict = (f"capacity {max(passing):.2f}/s: the highest constant arrival rate at which every SLO held"
                   if passing else "no constant arrival rate met every SLO")
        if not out:
            out += ['<h2 id="sweep">Capacity sweep</h2>',
                    '<p class="caption">A synchronous baseline (one iteration at a time), a throughput stage (every '
                    'user back to back), then constant arrival rates up to that throughput; each stage judged alone '
                    'on its own figures. A constant stage passes when every SLO held and at least 95 % of its '
                    'offered iterations started.</p>']
        out.append(f"<h3>{html.escape(run.tool + ' ' + run.label)}: {html.escape(verdict)}</h3>")
        out.append(f'<img alt="knee chart" src="data:image/png;base64,{knee_chart(rows, slo_columns)}">')
        head = ["stage", "offered/s", "achieved/s", "iterations", "dropped", "lag p99 ms", "p50 ms", "p95 ms", "p99 ms",
                "goodput %", *slo_columns, "passed"]
        out.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
        for r in rows:
            cells = [r["Stage"], r["Offered/s"] or "–", r["Achieved/s"], r.get("Iterations", ""), r.get("Dropped", ""),
                     r.get("Lag p99 ms", "") or "–", r["p50 ms"], r["p95 ms"], r["p99 ms"], r["Goodput %"] or "–",
                     *(r.get(c, "") for c in slo_columns)]
            out.append("<tr>" + "".join(_cell(c) for c in cells)
                       + _cell(r["Passed"], "l" if r["Passed"] == "yes" else "l bad") + "</tr>")
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
