"""The "loadkit" tabs of Locust's web UI, and a live page with charts: exact figures while the run goes.

Why: Locust's web UI shows its own statistics, whose percentiles come from buckets rounded to two
significant digits, and it knows nothing of loadkit's metrics (ttft, delivery, chunks, ...), its
counters or generator saturation; the exact figures were only in ``_hdr.csv`` at the end. On the
master (or a single process with a web UI) this module adds, through Locust's own web-UI extension
points (``template_args`` ``extended_tabs`` / ``extended_tables`` / ``extended_csv_files`` and the
``extended_stats`` of ``/stats/requests``):

- tab **loadkit**: every request (and their Aggregated row) and every loadkit metric with count,
  failures, rate, exact p50/p90/p95/p99/p99.9/max in its unit, from the merged HDR stores
  (:data:`loadkit.metrics.hdr.STORE` and :data:`~loadkit.metrics.hdr.METRICS`) — the numbers that
  ``_hdr.csv`` and ``_metrics.csv`` will hold;
- tab **loadkit events**: failures by exception class, the counters, generator-saturation intervals;
- ``/loadkit/`` (linked from "Download Data"): a self-contained page with all of that plus charts over
  time of the main latencies (interval p50/p95/p99 from differences of the HDR histograms), no CDN;
- ``/loadkit/csv``, ``/loadkit/events.csv``, ``/loadkit/saturation.csv``: the same tables as CSV.

Reset Stats clears it all (Locust's ``reset_stats`` event), except the saturation intervals, which
are time-stamped facts of the run (see :mod:`loadkit.metrics.saturation`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from importlib import resources
from typing import Any

import numpy as np

from loadkit.metrics import counters, failures, saturation
from loadkit.metrics.catalog import metric as catalog_metric
from loadkit.metrics.hdr import METRICS, STORE, add_listeners_once
from loadkit.metrics.histograms import AGGREGATED_NAME, PERCENTILES, OpHistogram, new_histogram

logger = logging.getLogger("loadkit.webui")

TAB, EVENTS_TAB = "loadkit", "loadkitevents"
#: columns of the loadkit tab, of /loadkit/csv and of the page: (row key, title). The name's key is
#: not "name": Locust's extension table sorts by a "name" key unless told otherwise, which would
#: shuffle requests, the Aggregated row and metrics together.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("type", "Type"), ("operation", "Name"), ("kind", "Kind"), ("unit", "Unit"), ("count", "Count"),
    ("failures", "Failures"), ("rate", "Rate (/s)"), ("p50", "p50"), ("p90", "p90"), ("p95", "p95"),
    ("p99", "p99"), ("p999", "p99.9"), ("max", "Max"),
)
EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("what", "What"), ("type", "Type"), ("operation", "Name"), ("count", "Count"), ("detail", "Detail"),
)
def slo_rows(environment: Any) -> list[dict[str, Any]]:
    """The run's ``--slo`` gates as last judged (live every few seconds, final at the end), first in
    the loadkit events tab: passing or failing, measured against target, and for how long a
    failing one has failed (what ``--slo-abort-after`` counts). None when this run has no SLO."""
    from loadkit.metrics import slo_gate

    if not getattr(getattr(environment, "parsed_options", None), "slo", None):
        return []
    rows = []
    for r in slo_gate.live_status()["slos"]:
        failing = f"; failing for {r['failing_for']:g} s" if r.get("failing_for") else ""
        rows.append({"what": f"SLO {r['Result']}", "type": r["Type"], "operation": r["SLO"], "count": r["Measured"],
                     "detail": f"measured {r['Measured']} {r['Unit']}, target {r['Op']} {r['Target']} {r['Unit']}{failing}"})
    return rows


PERCENTILE_KEYS = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
#: latencies charted over time: (type, name) as in the tables
CHART_OPS: tuple[tuple[str, str], ...] = (
    ("chldo", "ttft"), ("chldo", "som_to_eom"), ("ktb", "chatMessage"), ("ktb", "delivery"),
)
CHART_PERCENTILES: tuple[float, ...] = (50.0, 95.0, 99.0)
CHART_SECONDS = 3.0  # one point per interval (Locust workers report every 3 s)
MAX_POINTS = 1200  # an hour of points per chart; older ones are dropped
SNAPSHOT_SECONDS = 1.0  # the tables are recomputed at most this often, however many browsers poll


def _ms(value_us: float) -> float:
    return round(value_us / 1000.0, 3)


def percentiles_us(op: OpHistogram) -> dict[float, float]:
    """:meth:`OpHistogram.percentiles_us` (the values of ``_hdr.csv``), computed with numpy.

    Why: hdrh walks the counts array in Python (~10 ms per histogram); the tab recomputes every
    row each time a browser polls, on the master's event loop. This is the same rule — the first
    counts index whose running total reaches ``max(1, int(p × total / 100 + 0.5))``, reported as
    the highest value equivalent to it, kept within the exact [min, max] — in ~0.1 ms.
    """
    hist = op.hist
    if op.count == 0 or hist.word_size != 8 or hist.total_count != op.count:
        return op.percentiles_us()
    running = np.cumsum(np.frombuffer(hist.counts, dtype=np.uint64))
    targets = np.array([max(int(min(p, 100.0) * hist.total_count / 100 + 0.5), 1) for p in PERCENTILES],
                       dtype=np.uint64)
    out = {}
    for p, index in zip(PERCENTILES, np.searchsorted(running, targets, side="left").tolist()):
        value = hist.get_highest_equivalent_value(hist.get_value_from_index(index))
        out[p] = float(min(max(value, op.min_us), op.max_us))
    return out


def figure_row(request_type: str, name: str, kind: str, unit: str, op: OpHistogram,
               failed: int | None, elapsed: float) -> dict[str, Any]:
    """One row of the loadkit tab: the same figures (3 decimals, the histogram's unit) as the
    row of ``_hdr.csv`` / ``_metrics.csv`` made from ``op``."""
    pct = percentiles_us(op)
    row: dict[str, Any] = {"type": request_type, "operation": name, "kind": kind, "unit": unit, "count": op.count,
                           "failures": failed, "rate": round(op.count / elapsed, 2) if elapsed > 0 else 0.0}
    for key, p in PERCENTILE_KEYS.items():
        row[key] = _ms(pct[p])
    row["max"] = _ms(op.max_us)
    return row


class Live:
    """What the tabs and the page show; one per process (the master's merged view)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.stopped_at: float | None = None
        self.series: dict[tuple[str, str], list[list[Any]]] = {}
        self._previous: dict[tuple[str, str], tuple[OpHistogram, np.ndarray]] = {}
        self._cache: tuple[float, dict[str, Any]] | None = None

    # ---------------------------------------------------------------- run state
    def restart(self, keep_stopped: bool = False) -> None:
        """A new test, or Reset Stats (``keep_stopped``: a reset after the test stopped leaves it
        stopped): figures and charts start from zero."""
        self.started_at = time.time()
        self.stopped_at = self.started_at if keep_stopped and self.stopped_at is not None else None
        self.series.clear()
        self._previous.clear()
        self._cache = None

    def stopped(self) -> None:
        self.stopped_at = time.time()
        self._cache = None

    def elapsed(self) -> float:
        return max(0.0, (self.stopped_at or time.time()) - self.started_at)

    # ---------------------------------------------------------------- tables
    def rows(self) -> list[dict[str, Any]]:
        """Requests (sorted like Locust's table), their Aggregated row, then the metrics."""
        elapsed = self.elapsed()
        failed = failures.by_request()
        ops = STORE.ops
        rows = [figure_row(t, n, "request", "ms", op, failed.get((t, n), 0), elapsed)
                for (t, n), op in sorted(ops.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
        if ops:
            rows.append(figure_row("", AGGREGATED_NAME, "request", "ms", STORE.aggregated(),
                                   sum(failed.get(k, 0) for k in ops), elapsed))
        for (t, n), op in sorted(METRICS.ops.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            m = catalog_metric(t, n)
            rows.append(figure_row(t, n, m.kind, m.unit, op, None, elapsed))
        return rows

    @staticmethod
    def events() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"what": "failure", "type": t, "operation": n, "count": count, "detail": cls}
            for (t, n, cls), count in sorted(failures.FAILURES.items())
        ]
        rows += [{"what": "counter", "type": r["Type"], "operation": r["Name"], "count": r["Count"], "detail": ""}
                 for r in counters.rows()]
        for i in saturation.RECORD.intervals():
            span = f"{time.strftime('%H:%M:%S', time.gmtime(i.start))}–{time.strftime('%H:%M:%S', time.gmtime(i.end))} UTC"
            rows.append({"what": "saturation", "type": "worker", "operation": i.worker, "count": round(i.seconds, 1),
                         "detail": f"{span}, {i.seconds:.1f} s{' (ongoing)' if i.ongoing else ''}, "
                                   f"mean {i.mean:.0f} %, peak {i.peak:.0f} % CPU"})
        return rows

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < SNAPSHOT_SECONDS:
            return self._cache[1]
        data = {
            "time": time.time(), "started_at": self.started_at, "stopped_at": self.stopped_at,
            "elapsed": round(self.elapsed(), 1), "columns": COLUMNS, "rows": self.rows(),
            "event_columns": EVENT_COLUMNS, "events": self.events(),
            "failures": [{"type": t, "name": n, "class": c, "count": k} for (t, n, c), k in sorted(failures.FAILURES.items())],
            "counters": counters.rows(),
            "saturation": [{**i.row(), "ongoing": i.ongoing} for i in saturation.RECORD.intervals()],
            "saturation_rule": f"≥ {saturation.THRESHOLD_PERCENT:g} % of one CPU core for ≥ {saturation.MIN_SECONDS:g} s",
            "charts": self.charts(), "chart_seconds": CHART_SECONDS,
        }
        self._cache = (now, data)
        return data

    # ---------------------------------------------------------------- charts
    def sample_charts(self, now: float | None = None) -> None:
        """Append one point per charted latency: percentiles of the samples since the last point
        (the difference of the cumulative HDR counts), or None for an interval without samples."""
        now = time.time() if now is None else now
        for key in CHART_OPS:
            store = STORE if key in STORE.ops else METRICS
            op = store.ops.get(key)
            if op is None or op.hist.word_size != 8:
                continue
            counts = np.frombuffer(op.hist.counts, dtype=np.uint64)
            previous = self._previous.get(key)
            if previous is not None and previous[0] is op and previous[1].shape == counts.shape:
                diff = counts - previous[1]
                if (previous[1] > counts).any():  # cleared in place: start over
                    diff = counts.copy()
            else:
                diff = counts.copy()
            self._previous[key] = (op, counts.copy())
            total = int(diff.sum())
            point: list[Any] = [round(now, 3), total]
            if total:
                hist = new_histogram()
                view = np.frombuffer(hist.counts, dtype=np.uint64)
                view += diff
                nonzero = np.flatnonzero(view)
                hist.set_internal_tacking_values(int(nonzero[0]), int(nonzero[-1]), total)
                values = hist.get_percentile_to_value_dict(list(CHART_PERCENTILES))
                point += [_ms(min(max(values[p], op.min_us), op.max_us)) for p in CHART_PERCENTILES]
            else:
                point += [None] * len(CHART_PERCENTILES)
            series = self.series.setdefault(key, [])
            series.append(point)
            del series[:-MAX_POINTS]

    def charts(self) -> list[dict[str, Any]]:
        out = []
        for key in CHART_OPS:
            points = self.series.get(key)
            if points:
                kind = "request" if key in STORE.ops else catalog_metric(*key).kind
                out.append({"type": key[0], "name": key[1], "kind": kind, "unit": "ms",
                            "percentiles": [f"p{p:g}" for p in CHART_PERCENTILES], "points": points})
        return out


LIVE = Live()


# ------------------------------------------------------------------------------------ Locust wiring

def _csv(columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([title for _key, title in columns])
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row.get(key) for key, _title in columns])
    return out.getvalue()


def page_html() -> str:
    return resources.files("loadkit.metrics").joinpath("webui.html").read_text(encoding="utf-8")


def _chart_loop(environment: Any) -> None:
    import gevent

    while True:
        gevent.sleep(CHART_SECONDS)
        runner = getattr(environment, "runner", None)
        if runner is None or getattr(runner, "state", None) in ("ready", "stopped"):
            continue
        try:
            LIVE.sample_charts()
        except Exception:  # noqa: BLE001 - a chart must never stop the run
            logger.exception("loadkit web UI: could not sample the charts")


def install(environment: Any) -> bool:
    """Add the loadkit tabs, page and CSVs to ``environment.web_ui`` (when there is one); idempotent.

    Called by :func:`loadkit.plugin.install`, at Locust's ``init`` (before the web UI starts, so the
    routes are in place before the first request)."""
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None or getattr(web_ui, "_loadkit_installed", False):
        return False
    web_ui._loadkit_installed = True
    import gevent
    from flask import Blueprint, Response, jsonify, request

    options = getattr(environment, "parsed_options", None)
    base = (getattr(options, "web_base_path", None) or "").rstrip("/")
    blueprint = Blueprint("loadkit", __name__, url_prefix=f"{base}/loadkit")
    guard = web_ui.auth_required_if_enabled

    def download(text: str, name: str) -> Response:
        return Response(text, mimetype="text/csv",
                        headers={"Content-Disposition": f"attachment;filename=loadkit_{name}_{int(time.time())}.csv"})

    @blueprint.route("/")
    @guard
    def page() -> Response:
        return Response(page_html(), mimetype="text/html")

    @blueprint.route("/data.json")
    @guard
    def data() -> Response:
        return jsonify(LIVE.snapshot())

    @blueprint.route("/csv")
    @guard
    def table_csv() -> Response:
        return download(_csv(COLUMNS, LIVE.snapshot()["rows"]), "figures")

    @blueprint.route("/events.csv")
    @guard
    def events_csv() -> Response:
        return download(_csv(EVENT_COLUMNS, [*slo_rows(environment), *LIVE.snapshot()["events"]]), "events")

    @blueprint.route("/saturation.csv")
    @guard
    def saturation_csv() -> Response:
        columns = tuple((c, c) for c in saturation.COLUMNS)
        return download(_csv(columns, saturation.RECORD.rows()), "saturation")

    app = web_ui.app
    app.register_blueprint(blueprint)

    @app.after_request
    def extend_stats(response: Any) -> Any:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        try:
            body = json.loads(response.get_data())
            snap = LIVE.snapshot()
            others = [e for e in body.get("extended_stats") or () if e.get("key") not in (TAB, EVENTS_TAB)]
            body["extended_stats"] = [*others, {"key": TAB, "data": snap["rows"]},
                                      {"key": EVENTS_TAB, "data": [*slo_rows(environment), *snap["events"]]}]
            response.set_data(json.dumps(body))
        except Exception:  # noqa: BLE001 - never break Locust's own stats endpoint
            logger.exception("loadkit web UI: could not add the loadkit tabs' figures")
        return response

    args = web_ui.template_args
    args.setdefault("extended_tabs", []).extend([
        {"title": "loadkit", "key": TAB},
        {"title": "loadkit events", "key": EVENTS_TAB},
    ])
    args.setdefault("extended_tables", []).extend([
        {"key": TAB, "structure": [{"key": k, "title": t} for k, t in COLUMNS]},
        {"key": EVENTS_TAB, "structure": [{"key": k, "title": t} for k, t in EVENT_COLUMNS]},
    ])
    args.setdefault("extended_csv_files", []).extend([
        {"href": "./loadkit/", "title": "loadkit live page: exact figures, charts over time, events"},
        {"href": "./loadkit/csv", "title": "Download loadkit figures CSV (exact, every request and metric)"},
        {"href": "./loadkit/events.csv", "title": "Download loadkit events CSV (failures by class, counters, saturation)"},
        {"href": "./loadkit/saturation.csv", "title": "Download loadkit generator saturation CSV"},
    ])
    add_listeners_once(environment.events, "_loadkit_webui_installed", {
        "test_start": lambda **_kw: LIVE.restart(),
        "reset_stats": lambda **_kw: LIVE.restart(keep_stopped=True),
        "test_stop": lambda **_kw: LIVE.stopped(),
    })
    gevent.spawn(_chart_loop, environment)
    return True
