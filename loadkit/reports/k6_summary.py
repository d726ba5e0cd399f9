"""Read k6's end-of-test summaries: ``--summary-export FILE`` and a ``handleSummary`` JSON dump.

They hold percentiles k6 computed from all samples (exact), but no time series and no per-tag
breakdown, and ``--summary-export`` lacks counts for Trends unless ``summaryTrendStats`` lists
``count``. Used for a run only when no per-sample output (json/csv) of that run is given.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from .errors import ReportInputError
from .k6_points import FAILURE_COUNTER, SKIP_TRENDS, _read_bytes

_TAGGED = re.compile(r"^(?P<metric>[^{]+)\{(?P<tags>.*)\}$")
_TREND_KEYS = {"avg", "min", "med", "max", "p(90)", "p(95)"}


def _pct(vals: dict, key: str) -> float:
    v = vals.get(key)
    return float(v) if isinstance(v, (int, float)) else np.nan


def read_summary(path: str) -> tuple[pd.DataFrame, dict]:
    """Summary rows (operation, count, failures, rps, p50…max) and run info from either format."""
    raw = _read_bytes(path)
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if raw.lstrip()[:1] == b"{" and raw.count(b"\n") > 2 and b'"type":"Point"' in raw[:4000].replace(b" ", b""):
            raise ReportInputError(path, "this is k6 --out json NDJSON, pass it with --k6-json") from None
        raise ReportInputError(path, f"not JSON ({exc.msg if hasattr(exc, 'msg') else exc}"
                               + (", file truncated?" if isinstance(exc, json.JSONDecodeError) and exc.pos >= len(raw.rstrip()) - 1 else "") + ")") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
        raise ReportInputError(path, "not a k6 summary: no \"metrics\" object (expected --summary-export or handleSummary JSON)")
    metrics = doc["metrics"]
    handle = any(isinstance(m, dict) and "values" in m for m in metrics.values())
    flat = {k: (m.get("values", {}) if handle else m) for k, m in metrics.items() if isinstance(m, dict)}
    types = {k: m.get("type") for k, m in metrics.items() if isinstance(m, dict)} if handle else {}
    info: dict = {"format": "handleSummary" if handle else "summary-export"}
    state = doc.get("state") or {}
    duration = state.get("testRunDurationMs")
    if isinstance(duration, (int, float)) and duration > 0:
        info["duration_s"] = duration / 1000.0
    else:  # summary-export: duration = count / rate of any counter
        for name in ("iterations", "http_reqs", "data_sent"):
            c = flat.get(name, {})
            if c.get("count") and c.get("rate"):
                info["duration_s"] = float(c["count"]) / float(c["rate"])
                break
    if "iterations" in flat:
        info["iterations"] = flat["iterations"].get("count")
    if "checks" in flat:
        ch = flat["checks"]
        info["checks_pass"], info["checks_fail"] = ch.get("passes"), ch.get("fails")
    if "vus_max" in flat:
        info["vus_max"] = flat["vus_max"].get("max", flat["vus_max"].get("value"))
    fail_counts: dict[str, float] = {}
    total_failures = flat.get(FAILURE_COUNTER, {}).get("count")
    info["failures_total"] = float(total_failures) if isinstance(total_failures, (int, float)) else None
    rows = []
    for key, vals in flat.items():
        m = _TAGGED.match(key)
        metric, tags = (m["metric"], m["tags"]) if m else (key, "")
        if metric == FAILURE_COUNTER and tags.startswith("op:"):
            fail_counts[tags[3:]] = float(vals.get("count", 0))
            continue
        is_trend = types.get(key) == "trend" if handle else _TREND_KEYS <= set(vals) or {"med", "max", "min"} <= set(vals)
        if not is_trend or metric in SKIP_TRENDS:
            continue
        if handle and metrics[key].get("contains") not in (None, "time"):
            continue
        if tags and not (metric == "http_req_duration" and tags.startswith("name:")):
            continue  # submetrics like {expected_response:true} repeat their parent
        op = tags[5:] if tags else metric
        count = vals.get("count")
        duration_s = info.get("duration_s")
        rows.append(
            {
                "operation": op,
                "type": "",
                "count": float(count) if isinstance(count, (int, float)) else np.nan,
                "failures": np.nan,
                "rps": float(count) / duration_s if isinstance(count, (int, float)) and duration_s else np.nan,
                "p50": _pct(vals, "med") if "med" in vals else _pct(vals, "p(50)"),
                "p90": _pct(vals, "p(90)"),
                "p95": _pct(vals, "p(95)"),
                "p99": _pct(vals, "p(99)"),
                "max": _pct(vals, "max"),
                "mean": _pct(vals, "avg"),
                "pct_source": "k6 summary",
            }
        )
    if not rows:
        raise ReportInputError(path, "empty run: the summary has no time Trend metrics")
    df = pd.DataFrame(rows)
    if fail_counts:
        df["failures"] = df["operation"].map(fail_counts).fillna(0)
    elif "http_req_failed" in flat:
        # handleSummary: passes = failed requests (rate true); only attributable to the http row
        hf = flat["http_req_failed"]
        n_failed = hf.get("passes")
        df.loc[df["operation"] == "http_req_duration", "failures"] = n_failed
    return df, info
