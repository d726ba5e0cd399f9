"""Requests still waiting when the run ended: counted and said, never silently dropped.

Why: Locust stops its users by killing their greenlets; a request in flight at that moment used to
vanish — no success, no failure. Against a server that never answers (or a stream that never
ends) a run shorter than the request timeout then reported nothing at all and exited 0. Each user
now records such a request (:meth:`loadkit.users.measure.Measure.unfinished`): the counter
``unfinished:<name>`` (merged across workers, in ``<prefix>_counters.csv`` and the report) and its
age as the metric ``unfinished_age``. At the end of the run the master (or local runner) says how
many there were, and when an operation had requests in flight but **none completed**, and one of
them had waited at least ``WAITED_MS`` (1 s), it names it and makes the run exit 1: the server
answered nothing of it, whatever the time limit hid. A request sent a moment before the stop is no
such evidence: a short run that happened to start its first ``messageReaction`` 0.3 ms before the
end exited 1 with no failure at all (seen in CI). Those are counted a second time as
``unfinished_1s:<name>``, the counter the verdict reads.

(k6 counts the same thing as "interrupted iterations".)
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("loadkit.unfinished")

PREFIX = "unfinished:"
WAITED_PREFIX = "unfinished_1s:"
WAITED_MS = 1000.0  # younger than this at the stop, a request says nothing about the server
EXIT_CODE = 1  # as Locust's own exit code for a run with failures


def verdict(unfinished: dict[tuple[str, str], int], completed: dict[tuple[str, str], int],
            oldest_ms: dict[str, float], waited: dict[tuple[str, str], int]) -> tuple[list[str], bool]:
    """Lines to log and whether the run must fail: ``unfinished``/``completed``/``waited`` map
    ``(type, name)`` to counts (``waited``: the unfinished ones that had waited ``WAITED_MS``),
    ``oldest_ms`` maps a type to its oldest unfinished request's age."""
    if not unfinished:
        return [], False
    parts = ", ".join(f"{t} {n} {c}" for (t, n), c in sorted(unfinished.items()))
    ages = ", ".join(f"{t} {age / 1000.0:.1f} s" if age >= 1000.0 else f"{t} {age:.1f} ms"
                     for t, age in sorted(oldest_ms.items()))
    lines = [f"loadkit: unfinished at the end of the run (neither answered nor failed; counted, not dropped): "
             f"{parts}" + (f"; oldest {ages}" if ages else "")]
    fail = False
    for (t, n), c in sorted(unfinished.items()):
        if completed.get((t, n), 0) != 0:
            continue
        if waited.get((t, n), 0):
            fail = True
            lines.append(f"loadkit: {t} {n}: no request completed, {c} still waiting when the run ended — "
                         "the server never answered them within the run")
        else:
            lines.append(f"loadkit: {t} {n}: no request completed, but its {c} unfinished were sent less than "
                         f"{WAITED_MS / 1000.0:g} s before the end: too late to judge the server")
    return lines, fail


def _by_operation(snapshot: dict[str, dict[str, int]], prefix: str) -> dict[tuple[str, str], int]:
    """``(type, operation) -> count`` of the counters named ``<prefix><operation>``."""
    return {(t, name[len(prefix):]): n for t, values in snapshot.items()
            for name, n in values.items() if name.startswith(prefix)}


def install(environment: Any) -> None:
    """At ``quitting`` on the master or a local runner: log the verdict, exit 1 when it fails."""
    from loadkit.metrics import counters, hdr

    if hdr.is_worker(environment):
        return

    def on_quitting(**_kw: Any) -> None:
        snapshot = counters.snapshot()
        unfinished, waited = _by_operation(snapshot, PREFIX), _by_operation(snapshot, WAITED_PREFIX)
        stats = getattr(getattr(environment, "runner", None), "stats", None)
        completed = {(e.method, e.name): e.num_requests for e in stats.entries.values()} if stats else {}
        oldest = {t: op.max_us / 1000.0 for (t, n), op in hdr.METRICS.ops.items() if n == "unfinished_age"}
        lines, fail = verdict(unfinished, completed, oldest, waited)
        for line in lines:
            (logger.error if fail else logger.warning)(line)
        if fail and environment.process_exit_code is None:
            environment.process_exit_code = EXIT_CODE

    environment.events.quitting.add_listener(on_quitting)
