"""The Locust wiring of loadkit's distributed bookkeeping: what the master hears from its workers.

Why: when a worker dies mid-run Locust's master carries on (its heartbeat check marks the worker
"missing") but nothing in Locust's CSVs says that the totals lack a worker's last seconds. The
listeners here feed the master's table of its workers (:mod:`loadkit.metrics.workers`, written as
``<prefix>_workers.csv``), make the master's files wait for the workers' last reports, make a worker
that lost its master exit non-zero and a run that lost load exit with :data:`LOST_LOAD_EXIT_CODE`.
The bounded waits (``LOADKIT_MASTER_WAIT``, ``LOADKIT_MASTER_TIMEOUT``, ``LOADKIT_FINAL_REPORT_WAIT``)
are :mod:`loadkit.metrics.master_waits`; ``--workers-window`` is :mod:`loadkit.metrics.workers_window`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable

from loadkit.metrics import workers_window
from loadkit.metrics.histograms import MESSAGE_KEY
from loadkit.metrics.workers import (
    TRACKER, WORKER_KEY, WORKERS_JSON_SUFFIX, WORKERS_SUFFIX, is_master, iso,
)

logger = logging.getLogger("loadkit.distributed")

POLL_INTERVAL = 1.0  # seconds between two copies of the master's view of its workers (runner.clients)


def write_results(environment: Any) -> str | None:
    """On the master with ``--csv``: write ``<prefix>_workers.csv`` and log lost workers."""
    options = getattr(environment, "parsed_options", None)
    prefix = getattr(options, "csv_prefix", None) if options is not None else None
    if not prefix or not is_master(environment):
        return None
    try:
        TRACKER.poll(environment.runner.clients)
    except Exception:  # noqa: BLE001 - the runner may be half torn down at quitting
        pass
    path = f"{prefix}{WORKERS_SUFFIX}"
    try:
        TRACKER.write_csv(path)
        TRACKER.write_json(f"{prefix}{WORKERS_JSON_SUFFIX}")
    except OSError as exc:
        logger.error("loadkit: could not write %s: %s", path, exc)
        return None
    return path


FINAL_REPORTS_WAIT = 5.0  # seconds a master waits, after a stop, for its workers' last reports


def after_final_reports(environment: Any, write: Callable[[Any], Any]) -> None:
    """Run ``write(environment)`` once the run's figures are complete: at once in a local run; on a
    master, once every connected worker has sent the report it makes after stopping (or is gone),
    at most :data:`FINAL_REPORTS_WAIT` seconds after the stop.

    Why: Locust's master fires ``test_stop`` once the workers *say* they have no users left; the
    samples of their last seconds can still be on the way, in their next stats report. Files
    written at ``test_stop`` (the web UI's Stop button) missed them until the master quit
    (tests/test_distributed.py::test_stop_in_the_web_ui_writes_files_with_the_workers_last_reports).
    """
    if not is_master(environment):
        write(environment)
        return
    import gevent

    def wait_then_write() -> None:
        mark = time.time()
        deadline = time.monotonic() + FINAL_REPORTS_WAIT
        while time.monotonic() < deadline:
            if all(w.missing or w.gone or w.final_report_at >= mark for w in TRACKER.workers.values()):
                break
            gevent.sleep(0.1)
        write(environment)

    gevent.spawn(wait_then_write)


# ------------------------------------------------------------------ Locust wiring


def _poll_forever(environment: Any) -> None:
    import gevent

    while True:
        gevent.sleep(POLL_INTERVAL)
        try:
            TRACKER.poll(environment.runner.clients)
        except Exception as exc:  # noqa: BLE001 - never kill the master over bookkeeping
            logger.debug("loadkit: worker poll failed: %s", exc)


def _on_init(environment: Any, runner: Any = None, **_kw: Any) -> None:
    if is_master(environment):
        import gevent

        gevent.spawn(_poll_forever, environment)


_MASTER: list[Any] = []  # the master runner of this process, set at init
_WORKER: list[Any] = []  # the worker runner of this process, set at init


def _on_init_remember(environment: Any, **_kw: Any) -> None:
    from locust.runners import MasterRunner, WorkerRunner

    runner = getattr(environment, "runner", None)
    if isinstance(runner, MasterRunner):
        _MASTER[:] = [runner]
    elif isinstance(runner, WorkerRunner):
        _WORKER[:] = [runner]


def _on_worker_connect(client_id: str, **_kw: Any) -> None:
    index = -1
    if _MASTER:
        try:
            index = int(_MASTER[0].get_worker_index(client_id))
        except Exception:  # noqa: BLE001 - older masters have no worker index
            pass
    TRACKER.on_connect(client_id, index)


def _on_heartbeat_sent(client_id: str, **_kw: Any) -> None:
    TRACKER.on_heartbeat(client_id)


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    ops: dict[str, int] = {}
    for entry in data.get(MESSAGE_KEY) or ():
        try:
            key = f"{entry[0]} {entry[1]}"
            ops[key] = ops.get(key, 0) + int(entry[3])
        except (TypeError, ValueError, IndexError):
            pass
    TRACKER.on_report(client_id, data, ops)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    runner = _WORKER[0] if _WORKER else None
    stopped = runner is not None and runner.state == "stopped"  # not "stopping": users may still fire
    data[WORKER_KEY] = {"hostname": socket.gethostname(), "pid": os.getpid(), "stopped": stopped}


def _on_test_start(environment: Any, **_kw: Any) -> None:
    # Locust starts a new test with fresh stats; keep connected workers but zero their counters.
    for info in TRACKER.workers.values():
        info.reports = info.requests = 0
        info.ops = {}
        info.final_report = False


def _on_quitting_worker(environment: Any, **_kw: Any) -> None:
    """A worker that quits because the master fell silent says so and exits non-zero."""
    from locust import runners

    runner = _WORKER[0] if _WORKER else None
    if runner is None or getattr(environment, "runner", None) is not runner:
        return
    last = getattr(runner, "last_heartbeat_timestamp", None)
    if last and time.time() - last > runners.MASTER_HEARTBEAT_TIMEOUT:
        logger.error(
            "loadkit: lost the Locust master at %s:%s (no heartbeat for %.0fs, LOADKIT_MASTER_TIMEOUT); "
            "this worker exits",
            runner.master_host,
            runner.master_port,
            time.time() - last,
        )
        if environment.process_exit_code is None:
            environment.process_exit_code = 3


LOST_LOAD_EXIT_CODE = 5  # the run ended with fewer users than asked (a worker was lost, none took over)
_LOAD_AT_STOP: dict[str, int] = {}


def _on_test_stopping(environment: Any, **_kw: Any) -> None:
    """Remember, just before the users stop, how many ran and how many were asked for."""
    runner = getattr(environment, "runner", None)
    if is_master(environment):
        _LOAD_AT_STOP.update(running=int(runner.user_count), target=int(getattr(runner, "target_user_count", 0) or 0))


def _on_quitting_master(environment: Any, **_kw: Any) -> None:
    """A master whose run lost a worker says so; when the load at the end was below what was asked
    (the lost worker's users were not moved to the others, as ``--enable-rebalancing`` would), the
    run exits with :data:`LOST_LOAD_EXIT_CODE`."""
    if not is_master(environment):
        return
    lost = [w for w in TRACKER.workers.values() if w.lost(time.time())]
    if not lost:
        return
    running, target = _LOAD_AT_STOP.get("running", 0), _LOAD_AT_STOP.get("target", 0)
    names = ", ".join(f"{w.client_id} (index {w.index}, last seen {iso(w.last_seen)}, {w.requests} requests kept)"
                      for w in lost)
    if target and running < target:
        logger.error("loadkit: the run ended with less load than asked: %d of %d users; lost worker(s): %s",
                     running, target, names)
        if environment.process_exit_code in (None, 0):
            environment.process_exit_code = LOST_LOAD_EXIT_CODE
    else:
        logger.warning("loadkit: lost worker(s) %s; the others carried the full load (%d users) to the end",
                       names, running)


def start(environment: Any) -> None:
    """What this module does once the run's runner exists (called by :func:`loadkit.plugin.install`
    at Locust's ``init``): remember the runner, and on a master watch the workers."""
    _on_init_remember(environment)
    _on_init(environment)
    workers_window.start(environment)


def install(events: Any) -> None:
    """Register the listeners (called once by :func:`loadkit.plugin.install`)."""
    events.worker_connect.add_listener(_on_worker_connect)
    events.heartbeat_sent.add_listener(_on_heartbeat_sent)
    events.worker_report.add_listener(_on_worker_report)
    events.report_to_master.add_listener(_on_report_to_master)
    events.test_start.add_listener(_on_test_start)
    events.quitting.add_listener(_on_quitting_worker)
    events.quitting.add_listener(_on_quitting_master)
    events.test_stopping.add_listener(_on_test_stopping)
