"""Bounded waits between Locust workers and their master: the settings and the master's wait for
its workers' final reports. (The Locust patches that apply them are in :mod:`loadkit.plugin`:
``patch_master_waits``, ``patch_final_reports``.)

Locust workers wait for an unreachable master 60 × 5 s and for a vanished master's heartbeat 60 s.
loadkit bounds both from the environment so that its demo and compose setup fail fast with a
clear message: ``LOADKIT_MASTER_WAIT`` (seconds to wait for the master at start,
default 60) and ``LOADKIT_MASTER_TIMEOUT`` (seconds without master heartbeat before a worker quits,
default Locust's 60). The master, when it quits, waits up to ``LOADKIT_FINAL_REPORT_WAIT`` seconds
(default 5; Locust alone: a fixed 0.5 s) for each connected worker's last report.
"""

from __future__ import annotations

import logging
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
