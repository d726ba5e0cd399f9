"""Exact, mergeable latency percentiles for every loadkit operation, across Locust workers.

Why: Locust keeps response times in buckets rounded to about two significant digits (147 ms is
stored as 150 ms, and everything below 100 ms as whole milliseconds, so sub-millisecond loopback
latencies collapse to 0 or 1 ms), and averaging per-node percentiles (what the upstream KTB scripts
do) is not a percentile of anything. Here every ``events.request`` is recorded at microsecond
resolution into an HDR histogram (3 significant digits, i.e. within 0.1 %) per ``(type, name)``;
workers ship *deltas* of those histograms to the master inside Locust's own periodic stats message
(``report_to_master`` / ``worker_report``), and the master adds them up. Adding HDR histograms is
lossless, so percentiles over N workers equal the percentiles of one process that saw the same
samples.

Because the histograms ride in the very message that carries Locust's stats, the master's
``<prefix>_hdr.csv`` counts always equal the ``Request Count`` of Locust's ``<prefix>_stats.csv``.

The same machinery keeps a second store, :data:`METRICS`, for loadkit metrics (phases such as ttft,
receive-side latencies such as delivery, per-turn counts and rates; see
:mod:`loadkit.metrics.catalog`): recorded by :class:`loadkit.users.measure.Measure`, shipped in the
same worker message under its own key, merged the same way, written as ``<csv_prefix>_metrics.csv``.

Usage: :func:`loadkit.plugin.install` registers the listeners on the run's own ``Environment``
(loadkit's users do it). The master (or the single local process) writes ``<csv_prefix>_hdr.csv``
and ``<csv_prefix>_metrics.csv`` at ``test_stop`` and again at ``quitting`` when Locust runs with
``--csv``; the master also writes ``<csv_prefix>_workers.csv`` (see :mod:`loadkit.metrics.workers`).
"""

from __future__ import annotations

import logging
from typing import Any

from loadkit.metrics.histograms import (  # noqa: F401 - re-exported for locustfiles and tests
    AGGREGATED_NAME,
    CSV_COLUMNS,
    HDR_SUFFIX,
    MESSAGE_KEY,
    METRIC_COLUMNS,
    METRIC_MESSAGE_KEY,
    METRIC_SUFFIX,
    PERCENTILE_COLUMNS,
    PERCENTILES,
    HdrStore,
    OpHistogram,
    read_csv,
)

logger = logging.getLogger("loadkit.hdr")

# ---------------------------------------------------------------------------------------------
# Locust wiring. One store per process: a worker records and drains it, the master merges into it,
# a local (single-process) runner records into it.
# ---------------------------------------------------------------------------------------------

STORE = HdrStore()  # requests: one sample per Locust request event
METRICS = HdrStore()  # loadkit metrics: values in their catalog unit (loadkit.metrics.catalog)


def hdr_path(csv_prefix: str) -> str:
    return f"{csv_prefix}{HDR_SUFFIX}"


def csv_prefix(environment: Any) -> str | None:
    """Locust's ``--csv`` prefix of this run (None without ``--csv``)."""
    options = getattr(environment, "parsed_options", None)
    return getattr(options, "csv_prefix", None) if options is not None else None


def is_worker(environment: Any) -> bool:
    from locust.runners import WorkerRunner

    return isinstance(getattr(environment, "runner", None), WorkerRunner)


def write_results(environment: Any) -> str | None:
    """Write ``<prefix>_hdr.csv`` (and the master's ``<prefix>_workers.csv``); returns the HDR path."""
    prefix = csv_prefix(environment)
    if not prefix or is_worker(environment):
        return None
    path = hdr_path(prefix)
    try:
        STORE.write_csv(path)
        METRICS.write_metrics_csv(f"{prefix}{METRIC_SUFFIX}")
    except OSError as exc:
        logger.error("loadkit hdr: could not write %s: %s", path, exc)
        return None
    from loadkit.metrics import distributed

    distributed.write_results(environment)
    return path


def _on_request(request_type: str = "", name: str = "", response_time: float | None = None, **_kw: Any) -> None:
    STORE.record(request_type, name, response_time)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data[MESSAGE_KEY] = STORE.drain()
    data[METRIC_MESSAGE_KEY] = METRICS.drain()


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    STORE.merge(data.get(MESSAGE_KEY) or (), source=client_id)
    METRICS.merge(data.get(METRIC_MESSAGE_KEY) or (), source=client_id)


def _on_test_start(environment: Any, **_kw: Any) -> None:
    STORE.clear()  # Locust clears its own stats at the same moment
    METRICS.clear()


def _on_reset_stats(**_kw: Any) -> None:
    STORE.clear()
    METRICS.clear()


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    from loadkit.metrics import distributed

    distributed.after_final_reports(environment, write_results)


def _on_quitting(environment: Any, **_kw: Any) -> None:
    path = write_results(environment)
    if path:
        logger.info("loadkit: exact percentiles written to %s", path)


def add_listeners_once(events: Any | None, flag: str, listeners: dict[str, Any]) -> Any | None:
    """Add ``{event name: listener}`` to ``events`` (default: Locust's global ``locust.events``)
    unless ``flag`` says this was done already; returns the events it added them to, else None.

    Why: a module that wires itself into Locust at import can be imported by several locustfiles
    and user modules of one process; a listener added twice would count everything twice.
    """
    if events is None:
        from locust import events as global_events

        events = global_events
    if getattr(events, flag, False):
        return None
    for name, listener in listeners.items():
        getattr(events, name).add_listener(listener)
    setattr(events, flag, True)
    return events


def install(events: Any) -> bool:
    """Register the listeners on ``events`` (the run's ``environment.events``); idempotent.

    Returns True when this call registered them. Called by :func:`loadkit.plugin.install`.
    """
    return add_listeners_once(events, "_loadkit_hdr_installed", {
        "request": _on_request, "report_to_master": _on_report_to_master, "worker_report": _on_worker_report,
        "test_start": _on_test_start, "reset_stats": _on_reset_stats, "test_stop": _on_test_stop,
        "quitting": _on_quitting,
    }) is not None
