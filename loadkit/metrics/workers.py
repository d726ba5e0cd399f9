"""What the master knows about its workers: the ``_workers.csv`` / ``_workers.json`` table.

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
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from loadkit.metrics.histograms import write_csv_atomic

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
STALE_AFTER = 5.0  # seconds of silence at the end of a run that, without a final report, mean lost


def iso(ts: float | None) -> str:
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
                    iso(info.last_seen),
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
                    "first_seen": iso(info.first_seen),
                    "last_seen": iso(info.last_seen),
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

def is_master(environment: Any) -> bool:
    from locust.runners import MasterRunner

    return isinstance(getattr(environment, "runner", None), MasterRunner)


def lost_workers(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a ``_workers.csv`` whose ``lost`` column is true."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("lost") == "true"]
