"""Counts of things that are not requests (unknown server events, session losses by signal, room
re-joins, ...), summed over Locust workers and written as ``<csv prefix>_counters.csv``.

Why: a load test must say when the server did something the client did not expect, yet such an
event has no response time and is not a request, so it has no place in Locust's stats. Counted
here, the numbers travel to the master inside Locust's own report message (like the exact
histograms of :mod:`loadkit.metrics.hdr`), are logged at the end ("ktb counters: {...}") and land
in a CSV beside Locust's, which ``loadkit report`` shows.

Usage: ``COUNTERS = counters("ktb")`` once per protocol module, then ``COUNTERS.bump("name")``.
"""

from __future__ import annotations

import logging
from typing import Any

from loadkit.metrics.hdr import add_listeners_once, csv_prefix, is_worker
from loadkit.metrics.histograms import write_csv_atomic

logger = logging.getLogger("loadkit.counters")

SUFFIX = "_counters.csv"
COLUMNS = ("Type", "Name", "Count")
MESSAGE_KEY = "loadkit_counters"


class Counters(dict):
    """One protocol's counts in this process: name -> count.

    At most ``max_keys`` distinct names: a server can make up event names without end (a fuzzer,
    a bug), and every name travels in each worker report; the rest are counted as ``<other>``.
    """

    max_keys = 200

    def bump(self, key: str, n: int = 1) -> None:
        if key not in self and len(self) >= self.max_keys:
            key = "<other>"
        self[key] = self.get(key, 0) + n


_REGISTRY: dict[str, Counters] = {}


def counters(kind: str) -> Counters:
    """The process-wide counters of ``kind`` (the Locust request_type, e.g. ``"ktb"``)."""
    return _REGISTRY.setdefault(kind, Counters())


def snapshot() -> dict[str, dict[str, int]]:
    return {kind: dict(c) for kind, c in _REGISTRY.items() if c}


def clear() -> None:
    for c in _REGISTRY.values():
        c.clear()


def merge(data: dict[str, dict[str, int]]) -> None:
    for kind, values in (data or {}).items():
        target = counters(kind)
        for name, n in (values or {}).items():
            target.bump(name, int(n))


def rows() -> list[dict[str, Any]]:
    return [{"Type": kind, "Name": name, "Count": n}
            for kind in sorted(_REGISTRY) for name, n in sorted(_REGISTRY[kind].items())]


# ------------------------------------------------------------------------------------ Locust wiring
def write_results(environment: Any) -> str | None:
    """Write ``<prefix>_counters.csv`` on the master or a single process run with ``--csv``."""
    prefix = csv_prefix(environment)
    if not prefix or is_worker(environment):
        return None
    path = prefix + SUFFIX
    try:
        write_csv_atomic(path, COLUMNS, rows())
    except OSError as exc:
        logger.error("loadkit counters: could not write %s: %s", path, exc)
        return None
    return path


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data[MESSAGE_KEY] = snapshot()
    clear()


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    merge(data.get(MESSAGE_KEY) or {})


def _on_test_start(environment: Any, **_kw: Any) -> None:
    if not is_worker(environment):
        clear()  # a new run in the web UI starts from zero, like Locust's own stats


def _on_reset_stats(**_kw: Any) -> None:
    clear()  # --reset-stats: the ramp-up is left out, as from Locust's stats and the histograms


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    from loadkit.metrics import distributed

    distributed.after_final_reports(environment, write_results)


def _on_quitting(environment: Any, **_kw: Any) -> None:
    write_results(environment)
    if is_worker(environment):
        return
    for kind, values in snapshot().items():
        logger.info("%s counters: %s", kind, dict(sorted(values.items())))


def install(events: Any) -> bool:
    """Register the listeners on ``events`` (the run's ``environment.events``); idempotent.
    Called by :func:`loadkit.plugin.install`."""
    return add_listeners_once(events, "_loadkit_counters_installed", {
        "report_to_master": _on_report_to_master, "worker_report": _on_worker_report,
        "test_start": _on_test_start, "reset_stats": _on_reset_stats, "test_stop": _on_test_stop,
        "quitting": _on_quitting,
    }) is not None
