"""Generator saturation as a recorded fact of the run: when a load generator's own CPU stayed busy.

Why: a load generator whose process is on CPU ≥ 90 % of the time cannot run its users' greenlets
when they are due; a response that arrived then waits in the socket until the generator gets to
it, and every latency measured in that interval includes this client-side queueing. Such an
interval must be in the run's results (which worker, from when to when, how busy), not in a log
line nobody reads.

Every process that runs users (each Locust worker, or the single local process) samples its own
CPU time (``time.process_time()``, stdlib) against wall time once a second while the test runs.
:class:`Detector` (pure: samples in, intervals out, no clock) turns the samples into intervals
where the CPU share stayed ≥ :data:`THRESHOLD_PERCENT` of one core for ≥ :data:`MIN_SECONDS`.
Workers ship their intervals to the master inside Locust's report message (like the counters),
the master keeps them merged and writes ``<prefix>_saturation.csv`` with the columns
:data:`COLUMNS` (a header-only file when there was none), the web UI's loadkit tab shows them and
the console prints them at the end of a headless run.

An interval that is still going on is shipped too (marked ongoing, its end = the latest sample)
and replaced by its final form when it ends, so a master sees it live. The intervals are kept
across Reset Stats (they are time-stamped facts, not statistics) and cleared when a new test starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

logger = logging.getLogger("loadkit.saturation")

THRESHOLD_PERCENT = 90.0  # of one core
MIN_SECONDS = 5.0
SAMPLE_SECONDS = 1.0
SUFFIX = "_saturation.csv"
COLUMNS: tuple[str, ...] = ("Worker", "Start", "End", "Seconds", "Mean CPU %", "Peak CPU %")
MESSAGE_KEY = "loadkit_saturation"
LOCAL_WORKER = "local"


@dataclass
class Interval:
    """One stretch of time in which ``worker``'s process used ≥ the threshold of one core.

    ``start``/``end`` are unix epoch seconds; ``mean`` = CPU seconds / wall seconds over the whole
    interval, in percent of one core; ``peak`` = the busiest single sample.
    """

    worker: str
    start: float
    end: float
    mean: float
    peak: float
    ongoing: bool = False

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def row(self) -> dict[str, str]:
        return {"Worker": self.worker, "Start": f"{self.start:.3f}", "End": f"{self.end:.3f}",
                "Seconds": f"{self.seconds:.1f}", "Mean CPU %": f"{self.mean:.1f}", "Peak CPU %": f"{self.peak:.1f}"}

    def wire(self) -> list[Any]:
        return [self.worker, self.start, self.end, self.mean, self.peak, self.ongoing]

    @classmethod
    def from_wire(cls, entry: Iterable[Any]) -> "Interval":
        worker, start, end, mean, peak, ongoing = entry
        start, end, mean, peak = float(start), float(end), float(mean), float(peak)
        if not end >= start:
            raise ValueError(f"interval ends ({end}) before it starts ({start})")
        return cls(str(worker), start, end, mean, peak, bool(ongoing))


def cpu_percent(cpu_before: float, cpu_after: float, wall_before: float, wall_after: float) -> float:
    """Share of one core used between two readings, in percent (0 when no wall time passed)."""
    wall = wall_after - wall_before
    return 100.0 * (cpu_after - cpu_before) / wall if wall > 0 else 0.0


class Detector:
    """Turns CPU samples of one process into saturation intervals. Pure: no clock, no Locust.

    Feed each sample with :meth:`add` (``start``/``end`` of the sampled period in epoch seconds,
    and the CPU percent over it). A run of consecutive busy samples (≥ ``threshold``, periods
    touching each other) that lasts ≥ ``min_seconds`` becomes an :class:`Interval` when a quiet
    sample, a gap between periods or :meth:`close` ends it.
    """

    def __init__(self, worker: str, threshold: float = THRESHOLD_PERCENT, min_seconds: float = MIN_SECONDS,
                 max_gap: float = 0.5) -> None:
        self.worker = worker
        self.threshold = threshold
        self.min_seconds = min_seconds
        self.max_gap = max_gap  # seconds between one period's end and the next one's start
        self._start: float | None = None
        self._end = 0.0
        self._cpu_seconds = 0.0
        self._peak = 0.0

    def add(self, start: float, end: float, percent: float) -> Interval | None:
        """One sample; returns the interval this sample ended, if any."""
        done = None
        if self._start is not None and (start - self._end > self.max_gap or percent < self.threshold):
            done = self.close()
        if percent >= self.threshold and end > start:
            if self._start is None:
                self._start, self._cpu_seconds, self._peak = start, 0.0, 0.0
            self._end = end
            self._cpu_seconds += percent / 100.0 * (end - start)
            self._peak = max(self._peak, percent)
        return done

    def current(self) -> Interval | None:
        """The busy run in progress, as an ongoing interval, once it is long enough to count."""
        if self._start is None or self._end - self._start < self.min_seconds:
            return None
        return self._interval(ongoing=True)

    def close(self) -> Interval | None:
        """End the busy run in progress (the test stopped, or a quiet sample came)."""
        if self._start is None:
            return None
        long_enough = self._end - self._start >= self.min_seconds
        interval = self._interval(ongoing=False) if long_enough else None
        self._start = None
        return interval

    def _interval(self, ongoing: bool) -> Interval:
        assert self._start is not None
        wall = self._end - self._start
        mean = 100.0 * self._cpu_seconds / wall if wall > 0 else 0.0
        return Interval(self.worker, self._start, self._end, mean, self._peak, ongoing)


def find_intervals(worker: str, samples: Iterable[tuple[float, float, float]], threshold: float = THRESHOLD_PERCENT,
                   min_seconds: float = MIN_SECONDS) -> list[Interval]:
    """Every saturation interval in ``samples`` of ``(start, end, cpu percent)``, the last one
    closed at the end of the samples."""
    detector = Detector(worker, threshold, min_seconds)
    found = [i for s in samples if (i := detector.add(*s)) is not None]
    if (last := detector.close()) is not None:
        found.append(last)
    return found


class Record:
    """The intervals known to this process, keyed by ``(worker, start)``: a worker's own, or on the
    master every worker's. A final interval replaces the ongoing one it grew from.

    ``outbox`` holds what changed since the last worker report (delta semantics, like the counters):
    a report carries the latest state of an ongoing interval and, once, its final form, so a test
    started later does not get the previous test's intervals again.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, float], Interval] = {}
        self.outbox: dict[tuple[str, float], Interval] = {}

    def add(self, interval: Interval) -> None:
        key = (interval.worker, round(interval.start, 3))
        known = self._by_key.get(key)
        if known is not None and not known.ongoing and interval.ongoing:
            return  # a late ongoing copy of an interval already closed
        self._by_key[key] = self.outbox[key] = interval

    def drain(self) -> list[list[Any]]:
        """What changed since the last call, for the worker report."""
        payload = [i.wire() for i in self.outbox.values()]
        self.outbox.clear()
        return payload

    def intervals(self) -> list[Interval]:
        return sorted(self._by_key.values(), key=lambda i: (i.start, i.worker))

    def rows(self) -> list[dict[str, str]]:
        return [i.row() for i in self.intervals()]

    def clear(self) -> None:
        self._by_key.clear()
        self.outbox.clear()

    def merge(self, payload: Iterable[Any], source: str = "?") -> None:
        for entry in payload or ():
            try:
                self.add(Interval.from_wire(entry))
            except (TypeError, ValueError) as exc:
                logger.error("loadkit saturation: dropped a malformed interval from worker %s: %s", source, exc)


RECORD = Record()  # this process's view: a worker's own intervals, the master's merged ones


# ------------------------------------------------------------------------------------ Locust wiring


class Sampler:
    """Samples this process's CPU once a second while the test runs and feeds a :class:`Detector`."""

    def __init__(self, worker: str, record: Record, interval: float = SAMPLE_SECONDS) -> None:
        self.detector = Detector(worker)
        self.record = record
        self.interval = interval
        self._greenlet: Any = None
        self._wall = time.time()
        self._cpu = time.process_time()

    def sample(self) -> None:
        wall, cpu = time.time(), time.process_time()
        done = self.detector.add(self._wall, wall, cpu_percent(self._cpu, cpu, self._wall, wall))
        self._wall, self._cpu = wall, cpu
        if done is not None:
            self.record.add(done)
        elif (ongoing := self.detector.current()) is not None:
            self.record.add(ongoing)

    def start(self) -> None:
        import gevent

        self._wall, self._cpu = time.time(), time.process_time()

        def loop() -> None:
            while True:
                gevent.sleep(self.interval)
                self.sample()

        self._greenlet = gevent.spawn(loop)

    def stop(self) -> None:
        if self._greenlet is None:
            return
        self._greenlet.kill(block=False)
        self._greenlet = None
        self.sample()
        done = self.detector.close()
        if done is not None:
            self.record.add(done)


_SAMPLER: list[Sampler] = []


def _worker_name(environment: Any) -> str:
    from loadkit.metrics.hdr import is_worker

    runner = getattr(environment, "runner", None)
    return str(getattr(runner, "client_id", LOCAL_WORKER)) if is_worker(environment) else LOCAL_WORKER


def _runs_users(environment: Any) -> bool:
    from locust.runners import MasterRunner

    return not isinstance(getattr(environment, "runner", None), MasterRunner)


def write_results(environment: Any) -> str | None:
    """Write ``<prefix>_saturation.csv`` on the master or a single process run with ``--csv``."""
    from loadkit.metrics.hdr import csv_prefix, is_worker
    from loadkit.metrics.histograms import write_csv_atomic

    prefix = csv_prefix(environment)
    if not prefix or is_worker(environment):
        return None
    path = prefix + SUFFIX
    try:
        write_csv_atomic(path, COLUMNS, RECORD.rows())
    except OSError as exc:
        logger.error("loadkit saturation: could not write %s: %s", path, exc)
        return None
    return path


def _on_test_start(environment: Any, **_kw: Any) -> None:
    RECORD.clear()
    if not _runs_users(environment):
        return
    while _SAMPLER:
        _SAMPLER.pop().stop()
    sampler = Sampler(_worker_name(environment), RECORD)
    _SAMPLER.append(sampler)
    sampler.start()


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    while _SAMPLER:
        _SAMPLER.pop().stop()
    write_results(environment)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    data[MESSAGE_KEY] = RECORD.drain()


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    RECORD.merge(data.get(MESSAGE_KEY) or (), source=client_id)


def _on_quitting(environment: Any, **_kw: Any) -> None:
    write_results(environment)


def install(events: Any) -> bool:
    """Register the listeners on ``events`` (the run's ``environment.events``); idempotent.
    Called by :func:`loadkit.plugin.install`."""
    from loadkit.metrics.hdr import add_listeners_once

    return add_listeners_once(events, "_loadkit_saturation_installed", {
        "test_start": _on_test_start, "test_stop": _on_test_stop, "report_to_master": _on_report_to_master,
        "worker_report": _on_worker_report, "quitting": _on_quitting,
    }) is not None
