"""What the master knows about its workers, and bounded waits between workers and master.

Why: when a worker dies mid-run Locust's master carries on (its heartbeat check marks the worker
"missing") but nothing in Locust's CSVs says that the totals lack a worker's last seconds. The
master therefore writes ``<prefix>_workers.csv``: one row per worker with the reports it received,
when it last heard from it, and whether the worker was lost. Columns:

``client_id, index, hostname, pid, state, reports, requests, first_seen, last_seen, final_report, lost``
(``<prefix>_workers.json`` holds the same rows plus each worker's sample count per operation.)

- ``reports``: stats messages received; ``requests``: samples those messages carried (HDR counts);
- ``first_seen``/``last_seen``: ISO 8601 UTC of the first/last message (connect, report, heartbeat);
- ``final_report``: the last report was sent after the worker had stopped its users;
- ``lost``: the master's heartbeat check marked it missing and it never came back, or it sent no
  final report and was silent for longer than the heartbeat liveness at the end of the run.

Locust workers wait for an unreachable master 60 × 5 s and for a vanished master's heartbeat 60 s.
Importing this module bounds both from the environment so that loadkit's demo and compose setup
fail fast with a clear message: ``LOADKIT_MASTER_WAIT`` (seconds to wait for the master at start,
default 60) and ``LOADKIT_MASTER_TIMEOUT`` (seconds without master heartbeat before a worker quits,
default Locust's 60). The master, when it quits, waits up to ``LOADKIT_FINAL_REPORT_WAIT`` seconds
(default 5; Locust alone: a fixed 0.5 s) for each connected worker's last report.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from loadkit.metrics.histograms import MESSAGE_KEY, write_csv_atomic

logger = logging.getLogger("loadkit.distributed")

WORKERS_SUFFIX = "_workers.csv"
WORKERS_JSON_SUFFIX = "_workers.json"
WORKER_KEY = "loadkit_worker"  # key inside Locust's worker stats message
WORKER_COLUMNS = (
    "client_id",
    "index",
    "hostname",
    "pid",
    "state",
    "reports",
    "requests",
    "first_seen",
    "last_seen",
    "final_report",
    "lost",
)
POLL_INTERVAL = 1.0
STALE_AFTER = 5.0  # seconds of silence at the end of a run that, without a final report, mean lost


def _iso(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class WorkerInfo:
    client_id: str
    index: int = -1
    hostname: str = ""
    pid: int = 0
    state: str = ""
    reports: int = 0
    requests: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    final_report: bool = False
    final_report_at: float = 0.0
    missing: bool = False  # currently marked missing by the master's heartbeat check
    gone: bool = False  # no longer in the master's client list
    ops: dict[str, int] = field(default_factory=dict)  # "type name" -> samples received

    def seen(self, now: float) -> None:
        if not self.first_seen:
            self.first_seen = now
        self.last_seen = max(self.last_seen, now)

    def lost(self, now: float) -> bool:
        if self.missing:
            return True
        return not self.final_report and (now - self.last_seen) > STALE_AFTER


class WorkerTracker:
    """Master-side bookkeeping fed by Locust events and a 1 s poll of ``runner.clients``."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerInfo] = {}

    def clear(self) -> None:
        self.workers.clear()

    def _get(self, client_id: str) -> WorkerInfo:
        info = self.workers.get(client_id)
        if info is None:
            info = self.workers[client_id] = WorkerInfo(client_id)
        return info

    def on_connect(self, client_id: str, index: int = -1, now: float | None = None) -> None:
        info = self._get(client_id)
        info.seen(now or time.time())
        info.index = index
        info.missing = info.gone = False

    def on_heartbeat(self, client_id: str, now: float | None = None) -> None:
        if client_id in self.workers:
            self.workers[client_id].seen(now or time.time())

    def on_report(
        self, client_id: str, data: dict[str, Any], ops: dict[str, int] | None = None, now: float | None = None
    ) -> None:
        info = self._get(client_id)
        info.seen(now or time.time())
        info.reports += 1
        for op, n in (ops or {}).items():
            info.ops[op] = info.ops.get(op, 0) + n
            info.requests += n
        meta = data.get(WORKER_KEY) or {}
        if isinstance(meta, dict):
            info.hostname = str(meta.get("hostname", info.hostname))
            try:
                info.pid = int(meta.get("pid", info.pid))
            except (TypeError, ValueError):
                pass
            info.final_report = bool(meta.get("stopped", False))
            if info.final_report:
                info.final_report_at = info.last_seen

    def poll(self, clients: Any) -> None:
        """Copy the master's view (``runner.clients``): state, missing, gone."""
        current = {c.id: c for c in clients.all}
        for client_id, node in current.items():
            info = self._get(client_id)
            if not info.first_seen:
                info.seen(time.time())
            info.state = node.state
            was_missing = info.missing
            info.missing = node.state == "missing"
            info.gone = False
            if info.missing and not was_missing:
                logger.warning(
                    "loadkit: worker %s (index %s) went missing; keeping the %d requests it reported up to %s",
                    client_id,
                    info.index,
                    info.requests,
                    _iso(info.last_seen),
                )
        for client_id, info in self.workers.items():
            if client_id not in current and not info.gone:
                info.gone = True
                if not info.missing:
                    info.state = "stopped" if info.final_report else "gone"

    def rows(self, now: float | None = None) -> list[dict[str, str]]:
        now = now or time.time()
        rows = []
        for info in sorted(self.workers.values(), key=lambda i: (i.index if i.index >= 0 else 1 << 30, i.client_id)):
            rows.append(
                {
                    "client_id": info.client_id,
                    "index": str(info.index),
                    "hostname": info.hostname,
                    "pid": str(info.pid or ""),
                    "state": info.state,
                    "reports": str(info.reports),
                    "requests": str(info.requests),
                    "first_seen": _iso(info.first_seen),
                    "last_seen": _iso(info.last_seen),
                    "final_report": str(info.final_report).lower(),
                    "lost": str(info.lost(now)).lower(),
                }
            )
        return rows

    def write_csv(self, path: str | os.PathLike, now: float | None = None) -> None:
        write_csv_atomic(path, WORKER_COLUMNS, self.rows(now))

    def write_json(self, path: str | os.PathLike, now: float | None = None) -> None:
        """The CSV's rows plus each worker's samples per operation (``"type name": count``)."""
        now = now or time.time()
        rows = self.rows(now)
        by_id = {info.client_id: info for info in self.workers.values()}
        for row in rows:
            row_out: dict[str, Any] = row  # type: ignore[assignment]
            row_out["ops"] = dict(sorted(by_id[row["client_id"]].ops.items()))
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"workers": rows}, f, indent=1)
        os.replace(tmp, path)


TRACKER = WorkerTracker()


def _is_master(environment: Any) -> bool:
    from locust.runners import MasterRunner

    return isinstance(getattr(environment, "runner", None), MasterRunner)


def write_results(environment: Any) -> str | None:
    """On the master with ``--csv``: write ``<prefix>_workers.csv`` and log lost workers."""
    options = getattr(environment, "parsed_options", None)
    prefix = getattr(options, "csv_prefix", None) if options is not None else None
    if not prefix or not _is_master(environment):
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
    if not _is_master(environment):
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


def lost_workers(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a ``_workers.csv`` whose ``lost`` column is true."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("lost") == "true"]


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
    if _is_master(environment):
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


# ------------------------------------------------------------------ bounded waits


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


# ------------------------------------------------------------------ workers counted, not configured


def add_options(parser: Any, **_kw: Any) -> None:
    """``--workers-window`` (registered by :func:`loadkit.plugin.patch_locust`)."""
    group = parser.add_argument_group("loadkit workers")
    group.add_argument("--workers-window", type=float, default=0.0, metavar="S",
                       help="headless master: start once at least --expect-workers workers are ready and no "
                            "further one has connected for S seconds, with however many there are (0 = off: "
                            "wait for exactly --expect-workers)")


def _count_workers_then_start(runner: Any, options: Any, minimum: int, window: float) -> None:
    """Hold Locust's headless start loop until the workers stop arriving, then release it with the count.

    Why: in docker-compose (``--scale worker=N``) or a Kubernetes Deployment the master cannot know
    N; asking for it twice (scale and ``--expect-workers``) invites a mismatch that either hangs the
    start or starts without some workers. Locust's loop re-reads ``options.expect_workers`` every
    second, so it is set to the number that connected within the window.
    """
    import gevent

    last_count, last_change = -1, time.monotonic()
    while True:
        count = len(runner.clients.ready)
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
            options.expect_workers = max(minimum, count + 1)  # what Locust's loop waits for meanwhile
            if count:
                logger.info("loadkit: %d worker(s) ready; waiting %.0fs for more (--workers-window)", count, window)
        elif count >= minimum and now - last_change >= window:
            logger.info("loadkit: %d worker(s) connected (none new for %.0fs); starting with %d", count, window, count)
            options.expect_workers = count
            return
        gevent.sleep(0.2)


def _on_init_window(environment: Any, **_kw: Any) -> None:
    options = getattr(environment, "parsed_options", None)
    window = float(getattr(options, "workers_window", 0) or 0)
    if window <= 0 or not _is_master(environment) or not getattr(options, "headless", False):
        return
    import gevent

    minimum = max(1, int(options.expect_workers or 1))
    options.expect_workers = minimum + 1  # Locust's start loop waits until the counter below releases it
    gevent.spawn(_count_workers_then_start, environment.runner, options, minimum, window)


LOST_LOAD_EXIT_CODE = 5  # the run ended with fewer users than asked (a worker was lost, none took over)
_LOAD_AT_STOP: dict[str, int] = {}


def _on_test_stopping(environment: Any, **_kw: Any) -> None:
    """Remember, just before the users stop, how many ran and how many were asked for."""
    runner = getattr(environment, "runner", None)
    if _is_master(environment):
        _LOAD_AT_STOP.update(running=int(runner.user_count), target=int(getattr(runner, "target_user_count", 0) or 0))


def _on_quitting_master(environment: Any, **_kw: Any) -> None:
    """A master whose run lost a worker says so; when the load at the end was below what was asked
    (the lost worker's users were not moved to the others, as ``--enable-rebalancing`` would), the
    run exits with :data:`LOST_LOAD_EXIT_CODE`."""
    if not _is_master(environment):
        return
    lost = [w for w in TRACKER.workers.values() if w.lost(time.time())]
    if not lost:
        return
    running, target = _LOAD_AT_STOP.get("running", 0), _LOAD_AT_STOP.get("target", 0)
    names = ", ".join(f"{w.client_id} (index {w.index}, last seen {_iso(w.last_seen)}, {w.requests} requests kept)"
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
    _on_init_window(environment)


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
