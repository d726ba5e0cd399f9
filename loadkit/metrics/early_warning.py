"""Say why nothing works, early: one line per cause when a request has failed every time so far.

Why: a load test pointed at a wrong URL, a closed port or a server that refuses every login used to
run to its end (or for ever) and leave the cause in a failures table nobody reads until then.
During the first minute of a run this watches Locust's merged request statistics (on the master,
or the single local process) and, the first time an operation has been tried a few times and
failed every time, logs one line with its most frequent error, e.g.

    loadkit: POST /api/auth/register has failed every time so far (20 of 20): ConnectionRefusedError(111, 'Connection refused')

Locust's log goes to the console in headless runs, to the master log that ``loadkit demo`` relays,
and to the web UI's log view.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

logger = logging.getLogger("loadkit.early")

MIN_ATTEMPTS = 3
WATCH_SECONDS = 60.0
INTERVAL = 2.0


def all_failing(entries: Iterable[Any], errors: Iterable[Any], warned: set, min_attempts: int = MIN_ATTEMPTS) -> list[str]:
    """Lines for the operations that were tried ``min_attempts`` times or more and never succeeded,
    not yet in ``warned`` (which this updates). ``entries``/``errors`` are Locust's ``StatsEntry``
    and ``StatsError`` objects (or anything with the same attributes)."""
    by_op: dict[tuple[str, str], list[Any]] = {}
    for err in errors:
        by_op.setdefault((err.method, err.name), []).append(err)
    lines = []
    for e in entries:
        key = (e.method, e.name)
        if key in warned or e.num_requests < min_attempts or e.num_failures < e.num_requests:
            continue
        warned.add(key)
        causes = sorted(by_op.get(key, ()), key=lambda x: -x.occurrences)
        cause = causes[0].to_name().split(": ", 1)[-1] if causes else "no error text"
        lines.append(f"loadkit: {e.method} {e.name} has failed every time so far "
                     f"({e.num_failures} of {e.num_requests}): {cause}")
    return lines


def install(environment: Any) -> None:
    """Watch the first minute of every test on a master or local runner (a worker's own stats are
    not the run's; the master's are merged). Called by :func:`loadkit.plugin.install`."""
    import gevent

    from loadkit.metrics.hdr import is_worker

    if is_worker(environment):
        return
    current: list[Any] = []

    def on_test_start(**_kw: Any) -> None:
        for g in current:
            g.kill(block=False)
        current[:] = [gevent.spawn(run, set())]

    environment.events.test_start.add_listener(on_test_start)

    def run(warned: set) -> None:
        waited = 0.0
        while waited < WATCH_SECONDS:
            gevent.sleep(INTERVAL)
            waited += INTERVAL
            runner = getattr(environment, "runner", None)
            stats = getattr(runner, "stats", None)
            if stats is None or getattr(runner, "state", "") not in ("spawning", "running"):
                continue
            for line in all_failing(list(stats.entries.values()), list(stats.errors.values()), warned):
                logger.error(line)
