"""Live metrics for Prometheus: the master's merged, exact figures at ``/metrics``, while a run lasts.

Why: long soak tests are watched in Grafana through Prometheus, and loadkit's exact percentiles were
only in files written at the end. The master already holds everything a dashboard needs — the HDR
histograms merged from every worker (:mod:`loadkit.metrics.hdr`), Locust's counts and failures, the
user count and the workers' state (:mod:`loadkit.metrics.workers`) — so it serves them in
Prometheus' text format, computed at scrape time (nothing is kept twice):

* on the Locust web UI's port, path ``/metrics`` (master or single process with the web UI);
* headless, on ``--metrics-port PORT`` (``--metrics-host``, default 127.0.0.1; 0 = off), path
  ``/metrics``. Workers never serve (their figures reach the master and are served there).

Series (labels in brackets; every time value is in the unit of the ``unit`` label, ``ms`` for
request times, exactly as in ``<prefix>_hdr.csv``):

``loadkit_requests_total{type,name}``                 Locust's request count (failures included)
``loadkit_failures_total{type,name,class}``           failures by exception class (``RateLimited``, ...)
``loadkit_hdr_count{kind,type,name,unit}``            samples in the merged HDR histogram (requests:
                                                      kind ``request``, unit ``ms``; loadkit metrics:
                                                      their catalog kind and unit)
``loadkit_hdr_quantile{kind,type,name,unit,quantile}`` exact quantile 0.5 0.9 0.95 0.99 0.999 (same
                                                      rule as the ``_hdr.csv`` columns)
``loadkit_hdr_min|mean|max{kind,type,name,unit}``     exact min, mean, max
``loadkit_users``                                     users running now (all workers)
``loadkit_workers{state}``                            workers the master knows, by Locust state
``loadkit_workers_connected`` / ``loadkit_workers_lost``  connected now / lost this run (``_workers.csv``)
``loadkit_worker_requests{worker}``                   samples each worker contributed this run
``loadkit_generator_cpu_percent{node}``               CPU of each worker process (``local`` alone)
``loadkit_generator_saturation{source}``              0..1; ``cpu`` = busiest generator's CPU / 100;
                                                      more sources via :func:`add_saturation_source`
plus the master's own ``process_*`` series (CPU seconds, memory).

The counters restart at each test start, like Locust's stats (Prometheus treats that as a reset).
``/metrics`` is not behind Locust's ``--web-login`` (Prometheus cannot log in); it shows figures only.

Extension point: :func:`hdr_series` is the one function that reads the merged histograms, the
request store and the loadkit metric store (:mod:`loadkit.metrics.catalog` gives each metric its
``kind`` and ``unit``); a further store slots in there.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from loadkit import options as declared
from loadkit.metrics.histograms import OpHistogram

logger = logging.getLogger("loadkit.prometheus")

QUANTILES: tuple[tuple[float, str], ...] = ((50, "0.5"), (90, "0.9"), (95, "0.95"), (99, "0.99"), (99.9, "0.999"))
HDR_LABELS = ("kind", "type", "name", "unit")
MAX_FAILURE_CLASSES = 50  # label values are series: a server's free-form errors must not explode them
CONTENT_PATH = "/metrics"


@dataclass(frozen=True)
class HdrSeries:
    """One merged histogram as served: what it measures (``kind``, ``unit``) and its samples."""

    kind: str  # "request": an events.request operation; else the loadkit metric's kind (latency, count, rate)
    type: str
    name: str
    unit: str
    hist: OpHistogram


def hdr_series() -> Iterator[HdrSeries]:
    """Every merged histogram of this process (the master's sum over the workers): requests, then
    loadkit metrics.

    The single reader of the HDR stores for the exporter: a new store or kind of figure is added
    here and every series below serves it.
    """
    from loadkit.metrics import hdr
    from loadkit.metrics.catalog import metric

    for (rtype, name), op in sorted(hdr.STORE.ops.items()):
        if op.count:
            yield HdrSeries("request", rtype, name, "ms", op)
    for (rtype, name), op in sorted(hdr.METRICS.ops.items()):
        if op.count:
            m = metric(rtype, name)
            yield HdrSeries(m.kind, rtype, name, m.unit, op)


_CLASS = re.compile(r"^([A-Za-z_][\w.]*)\(")


def failure_class(error: Any) -> str:
    """The exception class of a Locust failure entry (``"RateLimited('...')"`` → ``RateLimited``).

    In a distributed run the master only has ``repr(exception)`` strings; Locust wraps
    ``catch_response`` failures in ``CatchResponseError(...)``, which is unwrapped.
    """
    if isinstance(error, BaseException):
        if type(error).__name__ == "CatchResponseError" and error.args:
            return failure_class(error.args[0])
        return type(error).__name__
    text = str(error or "").strip()
    if text.startswith("CatchResponseError("):
        text = text[len("CatchResponseError("):].strip("'\"")
    m = _CLASS.match(text)
    return m.group(1).rsplit(".", 1)[-1] if m else "other"


# ------------------------------------------------------------------------------ saturation hooks

SaturationSource = Callable[[], "float | None"]
_SATURATION: dict[str, SaturationSource] = {}


def add_saturation_source(source: str, read: SaturationSource) -> None:
    """Serve ``loadkit_generator_saturation{source=...}`` = ``read()`` (0..1; None = no figure now).

    Why a hook: what saturates a generator depends on the client (CPU, event-loop lag, file
    descriptors); a client module registers what it can measure.
    """
    _SATURATION[source] = read


def _generator_cpu(runner: Any) -> dict[str, float]:
    """CPU percent per load-generating process: each worker (from its heartbeats), or this process."""
    from locust.runners import MasterRunner

    if isinstance(runner, MasterRunner):
        return {str(node.id): float(node.cpu_usage) for node in runner.clients.all if node.state != "missing"}
    if runner is not None:
        return {"local": float(getattr(runner, "current_cpu_usage", 0.0) or 0.0)}
    return {}


# ------------------------------------------------------------------------------ the collector


class LoadkitCollector:
    """Builds every series from the live state at scrape time (``prometheus_client`` collector)."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self._pct_cache: dict[tuple[str, str, str], tuple[int, int, dict[float, float]]] = {}

    def _percentiles(self, s: HdrSeries) -> dict[float, float]:
        key = (s.kind, s.type, s.name)
        cached = self._pct_cache.get(key)
        if cached and cached[0] == s.hist.count and cached[1] == s.hist.sum_us:
            return cached[2]
        pct = s.hist.percentiles_us()
        self._pct_cache[key] = (s.hist.count, s.hist.sum_us, pct)
        return pct

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runner = getattr(self.environment, "runner", None)
        stats = getattr(runner, "stats", None) or getattr(self.environment, "stats", None)

        requests = CounterMetricFamily("loadkit_requests", "Locust request count (failures included)",
                                       labels=("type", "name"))
        failures = CounterMetricFamily("loadkit_failures", "Failed requests by exception class",
                                       labels=("type", "name", "class"))
        if stats is not None:
            for (name, method), entry in sorted(stats.entries.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                requests.add_metric((method, name), entry.num_requests)
            by_class: dict[tuple[str, str, str], int] = {}
            for err in stats.errors.values():
                cls = failure_class(err.error)
                key = (err.method or "", err.name or "", cls)
                if key not in by_class and len(by_class) >= MAX_FAILURE_CLASSES:
                    key = (key[0], key[1], "<other>")
                by_class[key] = by_class.get(key, 0) + int(err.occurrences)
            for key, n in sorted(by_class.items()):
                failures.add_metric(key, n)
        yield requests
        yield failures

        count = GaugeMetricFamily("loadkit_hdr_count", "Samples in the merged HDR histogram", labels=HDR_LABELS)
        quantile = GaugeMetricFamily("loadkit_hdr_quantile", "Exact quantile from the merged HDR histogram "
                                     "(unit label; same rule as the _hdr.csv columns)", labels=(*HDR_LABELS, "quantile"))
        lo = GaugeMetricFamily("loadkit_hdr_min", "Exact minimum (unit label)", labels=HDR_LABELS)
        mean = GaugeMetricFamily("loadkit_hdr_mean", "Exact mean (unit label)", labels=HDR_LABELS)
        hi = GaugeMetricFamily("loadkit_hdr_max", "Exact maximum (unit label)", labels=HDR_LABELS)
        for s in hdr_series():
            labels = (s.kind, s.type, s.name, s.unit)
            op = s.hist
            count.add_metric(labels, op.count)
            pct = self._percentiles(s)
            for p, q in QUANTILES:
                quantile.add_metric((*labels, q), pct[p] / 1000.0)
            lo.add_metric(labels, op.min_us / 1000.0)
            mean.add_metric(labels, op.sum_us / op.count / 1000.0)
            hi.add_metric(labels, op.max_us / 1000.0)
        yield from (count, quantile, lo, mean, hi)

        yield GaugeMetricFamily("loadkit_users", "Users running now (all workers)",
                                value=float(getattr(runner, "user_count", 0) or 0))
        yield from self._workers(runner)

        cpu = _generator_cpu(runner)
        gen_cpu = GaugeMetricFamily("loadkit_generator_cpu_percent", "CPU percent of each load-generating process",
                                    labels=("node",))
        for node, value in sorted(cpu.items()):
            gen_cpu.add_metric((node,), value)
        yield gen_cpu
        saturation = GaugeMetricFamily("loadkit_generator_saturation",
                                       "How close the generators are to their limit, 0..1, by source",
                                       labels=("source",))
        if cpu:
            saturation.add_metric(("cpu",), max(cpu.values()) / 100.0)
        for source, read in sorted(_SATURATION.items()):
            try:
                value = read()
            except Exception as exc:  # noqa: BLE001 - a broken hook must not break the scrape
                logger.debug("loadkit prometheus: saturation source %s failed: %s", source, exc)
                continue
            if value is not None:
                saturation.add_metric((source,), float(value))
        yield saturation

    def _workers(self, runner: Any) -> Iterator[Any]:
        from locust.runners import MasterRunner
        from prometheus_client.core import GaugeMetricFamily

        from loadkit.metrics.workers import TRACKER

        by_state = GaugeMetricFamily("loadkit_workers", "Workers the master knows, by Locust state", labels=("state",))
        contributed = GaugeMetricFamily("loadkit_worker_requests", "Samples each worker contributed this run",
                                        labels=("worker",))
        connected = lost = 0
        if isinstance(runner, MasterRunner):
            states: dict[str, int] = {}
            for node in runner.clients.all:
                states[node.state] = states.get(node.state, 0) + 1
                connected += node.state != "missing"
            for state, n in sorted(states.items()):
                by_state.add_metric((state,), n)
            for row in TRACKER.rows():
                lost += row["lost"] == "true"
                contributed.add_metric((row["client_id"],), int(row["requests"]))
        yield by_state
        yield GaugeMetricFamily("loadkit_workers_connected", "Workers connected now (not missing)", value=connected)
        yield GaugeMetricFamily("loadkit_workers_lost", "Workers lost during this run (see _workers.csv)", value=lost)
        yield contributed


def make_registry(environment: Any) -> Any:
    """A registry with loadkit's collector and this process's own ``process_*`` series."""
    from prometheus_client import CollectorRegistry, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LoadkitCollector(environment))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


# ------------------------------------------------------------------------------ Locust wiring


def add_options(parser: Any, **_kw: Any) -> None:
    """``--metrics-port`` / ``--metrics-host`` (registered by :func:`loadkit.plugin.patch_locust`)."""
    group = parser.add_argument_group("loadkit Prometheus metrics")
    group.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics on the master or single "
                            "process (0 = off; with the web UI they are also at <web UI>/metrics)")
    group.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR",
                       help="address for --metrics-port (default 127.0.0.1; 0.0.0.0 for a remote Prometheus)")


def serve(registry: Any, host: str, port: int) -> Any:
    """Serve ``registry`` at ``http://host:port/metrics`` on the gevent loop; returns the server."""
    from gevent.pywsgi import WSGIServer
    from prometheus_client import make_wsgi_app

    server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=logger)
    server.start()
    return server


def start(environment: Any) -> None:
    """Serve ``/metrics`` for this run (called by :func:`loadkit.plugin.install` at Locust's
    ``init``): on the web UI when there is one, and on ``--metrics-port`` when given. Not on workers."""
    from loadkit.metrics.hdr import is_worker

    if is_worker(environment) or getattr(environment, "_loadkit_metrics_registry", None) is not None:
        return
    registry = environment._loadkit_metrics_registry = make_registry(environment)
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is not None:
        from flask import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        def metrics() -> Any:
            return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

        web_ui.app.add_url_rule(CONTENT_PATH, "loadkit_metrics", metrics)
    options = getattr(environment, "parsed_options", None)
    port = int(declared.of(options, "metrics_port") or 0)
    if port:
        host = declared.of(options, "metrics_host") or declared.default("metrics_host")
        try:
            environment._loadkit_metrics_server = serve(registry, host, port)
        except OSError as exc:
            logger.error("loadkit: cannot serve Prometheus metrics on %s:%s (--metrics-port): %s", host, port, exc)
            sys.exit(2)
        logger.info("loadkit: Prometheus metrics at http://%s:%s%s", host, port, CONTENT_PATH)
