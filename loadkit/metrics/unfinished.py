"""Requests still waiting when the run ended: counted and said, never silently dropped.

Why: Locust stops its users by killing their greenlets; a request in flight at that moment used to
vanish — no success, no failure. Against a server that never answers (or a stream that never
ends) a run shorter than the request timeout then reported nothing at all and exited 0. Each user
now records such a request (:meth:`loadkit.users.measure.Measure.unfinished`): the counter
``unfinished:<name>`` (merged across workers, in ``<prefix>_counters.csv`` and the report) and its
age as the metric ``unfinished_age``. At the end of the run the master (or local runner) says how
many there were, and when an operation had requests in flight but **none completed**, it names it
and makes the run exit 1: the server answered nothing of it, whatever the time limit hid.

(k6 counts the same thing as "interrupted iterations".)
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("loadkit.unfinished")

PREFIX = "unfinished:"
EXIT_CODE = 1  # as Locust's own exit code for a run with failures


def verdict(unfinished: dict[tuple[str, str], int], completed: dict[tuple[str, str], int],
            oldest_ms: dict[str, float]) -> tuple[list[str], bool]:
    """Lines to log and whether the run must fail: ``unfinished``/``completed`` map
    ``(type, name)`` to counts, ``oldest_ms`` maps a type to its oldest unfinished request's age."""
    if not unfinished:
        return [], False
    parts = ", ".join(f"{t} {n} {c}" for (t, n), c in sorted(unfinished.items()))
    ages = ", ".join(f"{t} {age / 1000.0:.1f} s" if age >= 1000.0 else f"{t} {age:.1f} ms"
                     for t, age in sorted(oldest_ms.items()))
    lines = [f"loadkit: unfinished at the end of the run (neither answered nor failed; counted, not dropped): "
             f"{parts}" + (f"; oldest {ages}" if ages else "")]
    fail = False
    for (t, n), c in sorted(unfinished.items()):
        if completed.get((t, n), 0) == 0:
            fail = True
            lines.append(f"loadkit: {t} {n}: no request completed, {c} still waiting when the run ended — "
                         "the server never answered them within the run")
    return lines, fail


def install(environment: Any) -> None:
    """At ``quitting`` on the master or a local runner: log the verdict, exit 1 when it fails."""
    from loadkit.metrics import counters, hdr

    if hdr.is_worker(environment):
        return

    def on_quitting(**_kw: Any) -> None:
        unfinished = {(t, name[len(PREFIX):]): n for t, values in counters.snapshot().items()
                      for name, n in values.items() if name.startswith(PREFIX)}
        stats = getattr(getattr(environment, "runner", None), "stats", None)
        completed = {(e.method, e.name): e.num_requests for e in stats.entries.values()} if stats else {}
        oldest = {t: op.max_us / 1000.0 for (t, n), op in hdr.METRICS.ops.items() if n == "unfinished_age"}
        lines, fail = verdict(unfinished, completed, oldest)
        for line in lines:
            (logger.error if fail else logger.warning)(line)
        if fail and environment.process_exit_code is None:
            environment.process_exit_code = EXIT_CODE

    environment.events.quitting.add_listener(on_quitting)
