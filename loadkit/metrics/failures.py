"""Failed requests counted by ``(type, name, exception class)``, summed over Locust workers.

Why: Locust groups failures by the *text* of the exception (one row per distinct server message),
which is right for reading messages but scatters one kind of failure (say ``RateLimited``) over
many rows. loadkit's exceptions say the kind of failure by their class (docs/ARCHITECTURE.md), so
counting by class gives the web UI's loadkit tab a short "failures by class" list and each request
row its failure count, next to the exact HDR figures of the same requests. The counts travel in
Locust's worker report message (like :mod:`loadkit.metrics.counters`), are reset with the stats
and start from zero with every new test.
"""

from __future__ import annotations

from typing import Any

from loadkit.metrics.hdr import add_listeners_once, is_worker

MESSAGE_KEY = "loadkit_failures"

FAILURES: dict[tuple[str, str, str], int] = {}  # (type, name, exception class) -> count


def by_request() -> dict[tuple[str, str], int]:
    """Failures per ``(type, name)``."""
    out: dict[tuple[str, str], int] = {}
    for (t, n, _cls), count in FAILURES.items():
        out[(t, n)] = out.get((t, n), 0) + count
    return out


def merge(payload: Any) -> None:
    for entry in payload or ():
        try:
            t, n, cls, count = entry
            key = (str(t), str(n), str(cls))
            FAILURES[key] = FAILURES.get(key, 0) + int(count)
        except (TypeError, ValueError):
            continue  # bad input from the network: skipped, never a crash of the master's loop


def _count_failure(request_type: str = "", name: str = "", exception: Any = None, **_kw: Any) -> None:
    if exception is not None:
        key = (str(request_type), str(name), type(exception).__name__)
        FAILURES[key] = FAILURES.get(key, 0) + 1


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data[MESSAGE_KEY] = [[t, n, c, count] for (t, n, c), count in FAILURES.items()]
    FAILURES.clear()


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    merge(data.get(MESSAGE_KEY))


def _on_test_start(environment: Any, **_kw: Any) -> None:
    if not is_worker(environment):
        FAILURES.clear()


def _on_reset_stats(**_kw: Any) -> None:
    FAILURES.clear()


def install(events: Any) -> bool:
    """Register the listeners on ``events`` (the run's ``environment.events``); idempotent.
    Called by :func:`loadkit.plugin.install`."""
    return add_listeners_once(events, "_loadkit_failures_installed", {
        "request": _count_failure, "report_to_master": _on_report_to_master, "worker_report": _on_worker_report,
        "test_start": _on_test_start, "reset_stats": _on_reset_stats,
    }) is not None
