"""Render the self-contained HTML (jinja2 template shipped as package data, PNGs inlined as base64)."""

from __future__ import annotations

import datetime as _dt
import html as _html
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from .errors import ReportInputError
from .model import AGGREGATED, Run
from .tables import fmt_ms, fmt_value

TEMPLATE = "report.html.j2"


def _num(v, digits: int = 1) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{float(v):,.{digits}f}"


def _int(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{int(v):,}"


def _pct_cell(row: pd.Series, col: str) -> str:
    """Exact value, and Locust's bucketed value in brackets where an exact histogram replaced it."""
    main = fmt_ms(row[col])
    alt = row.get("locust_" + col)
    if alt is not None and not pd.isna(alt) and row.get("pct_source") == "hdr exact":
        return f'{main} <span class="alt" title="Locust\'s own (bucketed) value">({fmt_ms(alt)})</span>'
    return main


def _summary_rows(summary: pd.DataFrame, runs: list[Run]) -> list[dict]:
    groups = []
    for r in runs:
        d = summary[(summary["tool"] == r.tool) & (summary["run"] == r.label)]
        rows = []
        for _, row in d.iterrows():
            fail = row["failures"]
            cnt = row["count"]
            share = ""
            if not pd.isna(fail) and not pd.isna(cnt) and cnt:
                share = f" ({100.0 * float(fail) / float(cnt):.1f} %)" if fail else ""
            rows.append(
                {
                    "operation": row["operation"],
                    "type": row.get("type", "") if isinstance(row.get("type", ""), str) else "",
                    "count": _int(cnt),
                    "failures": _int(fail) + share,
                    "failed": bool(not pd.isna(fail) and fail),
                    "rps": _num(row["rps"], 2),
                    "p50": _pct_cell(row, "p50"),
                    "p90": _pct_cell(row, "p90"),
                    "p95": _pct_cell(row, "p95"),
                    "p99": _pct_cell(row, "p99"),
                    "max": fmt_ms(row["max"]),
                    "source": row.get("pct_source", ""),
                    "aggregated": row["operation"] == AGGREGATED,
                }
            )
        info = dict(r.info)
        start = info.get("start")
        groups.append(
            {
                "tool": r.tool,
                "label": r.label,
                "rows": rows,
                "notes": r.notes,
                "sources": r.sources,
                "start": start.strftime("%Y-%m-%d %H:%M:%S UTC") if start is not None else "–",
                "duration": f"{info['duration_s']:.0f} s" if info.get("duration_s") else "–",
                "extra": _extra_info(info),
                "exceptions": r.exceptions.head(20).to_dict("records") if r.exceptions is not None else [],
            }
        )
    return groups


_KIND_TITLES = {"latency": "latencies", "count": "counts", "rate": "rates"}


def _metric_groups(metrics: pd.DataFrame | None, runs: list[Run]) -> list[dict]:
    """Per run with metrics: one table per kind (latency, count, rate), values in each row's unit."""
    if metrics is None or metrics.empty:
        return []
    groups = []
    for r in runs:
        d = metrics[(metrics["tool"] == r.tool) & (metrics["run"] == r.label)]
        if d.empty:
            continue
        kinds = []
        for kind, k in d.groupby("kind", sort=False):
            rows = [{"name": rec["name"], "type": rec["type"] if isinstance(rec["type"], str) else "", "unit": rec["unit"],
                     "count": _int(rec["count"]), "source": rec["source"] if isinstance(rec["source"], str) else "",
                     **{c.replace(".", "_"): fmt_value(rec[c]) for c in ("p50", "p90", "p95", "p99", "p99.9", "max")}}
                    for rec in k.to_dict("records")]  # fmt: skip
            units = sorted(set(k["unit"]))
            kinds.append({"kind": kind, "title": _KIND_TITLES.get(kind, kind), "units": ", ".join(units), "rows": rows})
        groups.append({"tool": r.tool, "label": r.label, "kinds": kinds})
    return groups


def _worker_groups(runs: list[Run], workers: pd.DataFrame) -> list[dict]:
    """Per run with a workers file: its rows, formatted (share in %, times as HH:MM:SS UTC)."""
    from .locust_workers import clock

    groups = []
    for r in runs:
        if r.workers is None or r.workers.empty:
            continue
        w = workers[(workers["tool"] == r.tool) & (workers["run"] == r.label)]
        rows = []
        for rec, src in zip(w.to_dict("records"), r.workers.to_dict("records")):
            rows.append(
                {
                    "worker": str(rec["worker"]) if int(rec["worker"]) >= 0 else "–",
                    "client_id": rec["client_id"],
                    "hostname": rec["hostname"],
                    "pid": "" if pd.isna(rec["pid"]) else str(int(rec["pid"])),
                    "state": rec["state"],
                    "reports": _int(rec["reports"]),
                    "requests": _int(rec["requests"]),
                    "share": "–" if pd.isna(rec["share"]) else f"{100.0 * float(rec['share']):.1f} %",
                    "first_seen": clock(src["first_seen"]).replace("an unknown time", "–"),
                    "last_seen": clock(src["last_seen"]).replace("an unknown time", "–"),
                    "final_report": "yes" if rec["final_report"] else "no",
                    "lost": bool(rec["lost"]),
                }
            )
        groups.append({"tool": r.tool, "label": r.label, "rows": rows, "total": _int(w["requests"].sum())})
    return groups


def _extra_info(info: dict) -> str:
    parts = []
    if info.get("iterations"):
        parts.append(f"{int(info['iterations']):,} iterations")
    cp, cf = info.get("checks_pass"), info.get("checks_fail")
    if cp or cf:
        parts.append(f"checks {int(cp or 0):,} passed, {int(cf or 0):,} failed")
    if info.get("vus_max"):
        parts.append(f"max {int(info['vus_max'])} VUs")
    return "; ".join(parts)


def _gates_html(runs: list[Run]) -> str:
    """Sections of :mod:`.gates` (SLOs, goodput, sweep; own module, so this file changes by a line)."""
    from .gates import goodput_section, slo_section, sweep_section

    return "\n".join(filter(None, (slo_section(runs), goodput_section(runs), sweep_section(runs))))


def write(path: Path, *, title: str, runs: list[Run], summary: pd.DataFrame, timeseries: pd.DataFrame,
          failures: pd.DataFrame, pngs: list[tuple[str, str, str, str]], workers: pd.DataFrame | None = None,
          counters: pd.DataFrame | None = None, metrics: pd.DataFrame | None = None) -> None:  # fmt: skip
    source = resources.files("loadkit.reports").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["safe_html"] = lambda s: jinja2.utils.markupsafe.Markup(s)
    tpl = env.from_string(source)
    fail_rows = [
        {k: (_int(v) if k == "occurrences" else ("" if pd.isna(v) else str(v))) for k, v in rec.items()}
        for rec in failures.head(200).to_dict("records")
    ]
    text = tpl.render(
        title=title,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        groups=_summary_rows(summary, runs),
        charts=[{"file": f, "title": t, "b64": b, "shown": shown} for f, t, b, shown in pngs],
        metric_groups=_metric_groups(metrics, runs),
        has_saturation=any(r.saturation is not None and not r.saturation.empty for r in runs),
        failures=fail_rows,
        n_failures=len(failures),
        warnings=[{"run": f"{r.tool} {r.label}", "text": w} for r in runs for w in r.warnings],
        worker_groups=_worker_groups(runs, workers) if workers is not None and len(workers) else [],
        counters=[{k: (_int(v) if k == "count" else str(v)) for k, v in rec.items()}
                  for rec in (counters.to_dict("records") if counters is not None else [])],
        has_hdr=bool((summary.get("pct_source") == "hdr exact").any()) if "pct_source" in summary else False,
        n_ts=len(timeseries),
        escape=_html.escape,
        gates_html=_gates_html(runs),
    )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReportInputError(path, f"cannot write: {exc.strerror or exc}") from None
