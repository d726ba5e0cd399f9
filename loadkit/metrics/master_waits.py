"""Bounded waits between Locust workers and their master (patches of Locust's runners).

Locust workers wait for an unreachable master 60 × 5 s and for a vanished master's heartbeat 60 s.
Importing this module bounds both from the environment so that loadkit's demo and compose setup
fail fast with a clear message: ``LOADKIT_MASTER_WAIT`` (seconds to wait for the master at start,
default 60) and ``LOADKIT_MASTER_TIMEOUT`` (seconds without master heartbeat before a worker quits,
default Locust's 60). The master, when it quits, waits up to ``LOADKIT_FINAL_REPORT_WAIT`` seconds
(default 5; Locust alone: a fixed 0.5 s) for each connected worker's last report.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

from loadkit.metrics.workers import TRACKER

logger = logging.getLogger("loadkit.distributed")




def _env_seconds(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        logger.error("loadkit: ignoring %s=%r (not a number of seconds)", name, raw)
        return default
    return value if value > 0 else default


def bound_master_waits() -> None:
    """Apply ``LOADKIT_MASTER_WAIT`` / ``LOADKIT_MASTER_TIMEOUT`` to Locust's worker constants."""
    from locust import runners

    wait = _env_seconds("LOADKIT_MASTER_WAIT", 60.0)
    assert wait is not None
    runners.CONNECT_TIMEOUT = max(0.5, min(5.0, wait))
    # connect_to_master gives up once retry > CONNECT_RETRY_COUNT, i.e. after COUNT + 1 waits
    runners.CONNECT_RETRY_COUNT = max(0, math.ceil(wait / runners.CONNECT_TIMEOUT) - 1)
    timeout = _env_seconds("LOADKIT_MASTER_TIMEOUT", None)
    if timeout is not None:
        runners.MASTER_HEARTBEAT_TIMEOUT = timeout

    original = getattr(runners.WorkerRunner.connect_to_master, "_loadkit_original", None)
    if original is None:
        original = runners.WorkerRunner.connect_to_master

        def connect_to_master(self: Any) -> None:
            try:
                original(self)
            except ConnectionError as exc:
                if exc.args:  # already explained by an inner (recursive) attempt
                    raise
                raise ConnectionError(
                    f"no Locust master answered at {self.master_host}:{self.master_port} within "
                    f"{wait:.0f}s (LOADKIT_MASTER_WAIT); is the master running and reachable? "
                    "This worker exits."
                ) from None

        connect_to_master._loadkit_original = original  # type: ignore[attr-defined]
        runners.WorkerRunner.connect_to_master = connect_to_master  # type: ignore[method-assign]


def _await_final_reports(master: Any, wait: float) -> None:
    """Stop, send "quit" to the connected workers, wait for their post-stop reports (≤ ``wait`` s)."""
    import gevent
    from locust.rpc import Message

    master.stop(send_stop_to_client=False)
    mark = time.time()
    expected = [c.id for c in master.clients.all if c.state != "missing"]
    for client_id in expected:
        master.server.send_to_client(Message("quit", None, client_id))

    def pending() -> list[str]:
        return [
            cid
            for cid in expected
            if cid in master.clients  # a worker that already said "quit" is done
            and not (cid in TRACKER.workers and TRACKER.workers[cid].final_report_at >= mark)
        ]

    deadline = time.monotonic() + wait
    while (left := pending()) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if left:
        logger.warning("loadkit: no final report from %d worker(s) within %.0fs", len(left), wait)


def wait_for_final_reports() -> None:
    """Make the master wait for its workers' last reports when it quits (bounded).

    Locust's ``MasterRunner.quit`` sends "quit" to the workers and waits a fixed 0.5 s for their final
    stats; a worker busy for longer (slow ``on_stop``, busy CPU) loses its last seconds of samples.
    The wrapper first sends "quit" itself and waits until every connected worker has sent the report
    it makes after stopping (or has gone), at most ``LOADKIT_FINAL_REPORT_WAIT`` seconds (default
    5), then runs Locust's own ``quit`` as usual. Only the first call waits (Locust calls ``quit``
    again during shutdown, when the message loop is already gone).
    """
    from locust import runners

    if getattr(runners.MasterRunner.quit, "_loadkit_original", None) is not None:
        return
    original = runners.MasterRunner.quit

    def quit(self: Any) -> None:
        wait = _env_seconds("LOADKIT_FINAL_REPORT_WAIT", 5.0) or 0.0
        if not getattr(self, "_loadkit_waited", False) and wait > 0:
            self._loadkit_waited = True
            try:
                _await_final_reports(self, wait)
            except Exception as exc:  # noqa: BLE001 - never get in the way of Locust's own shutdown
                logger.debug("loadkit: waiting for final reports failed: %s", exc)
        original(self)

    quit._loadkit_original = original  # type: ignore[attr-defined]
    runners.MasterRunner.quit = quit  # type: ignore[method-assign]
