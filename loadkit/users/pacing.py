"""Open-model pacing of a Locust run: ``--arrival-rate`` / ``--arrival-stages`` (schedules: :mod:`loadkit.pacing`).

With the option, **every user of the run** takes its iterations (one task execution of its top-level
task set) from one schedule per process instead of sleeping its ``wait_time``:

* a user that is free takes the next intended start time and sleeps until then (as ``waiting``,
  so Locust stops it at once); a free user finds a start time already past when all users were
  busy at it — it starts at once and the delay is recorded as the loadkit metric
  ``loadkit schedule_lag`` (intended → actual start, ms). A start time more than
  ``--arrival-max-lag`` (default 1 s) in the past is **dropped** (not run), counted as the counter
  ``loadkit dropped_iterations``; started ones count as ``loadkit iterations``;
* each request of a paced iteration is also timed from the iteration's intended start: the
  loadkit metric ``<request name>_from_intended`` (latency, ms) = completion − intended start, so
  it is the request's own time plus the schedule lag plus whatever the iteration did before
  sending (coordinated omission: a slow server shows up as latency, not as less load);
* distributed: the master gives each ready worker a slot (``loadkit_pacing_slots`` in the options
  it sends with the spawn message); worker k of N takes every N-th arrival (constant) or draws its
  own stream of 1/N of the rate (poisson, gamma), so the workers together run at the target.

Locust's ``constant_throughput``/``constant_pacing`` are per-user *caps*: a user whose iteration
took longer than its interval starts the next one late, nothing records how late, and the total
rate depends on how many users are free. Here the arrival times are fixed in advance for the whole
run and lateness is measured.

Cost without the option: none on the request path (the listener and the Locust patches are only
installed when a run uses pacing).

The options and their parsed ``Settings`` are in :mod:`loadkit.users.pacing_options`, the schedule
(``PACER``) in :mod:`loadkit.users.pacer`; this module wires them into Locust (the task-set patch,
the listeners, the slots the master hands out, the end-of-run summary).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from loadkit import pacing
from loadkit.metrics import catalog, hdr

from .pacer import _CHANGE, COUNTERS, PACER, TYPE
from .pacing_options import Settings, options_problem

logger = logging.getLogger("loadkit.pacing")

LAG = "schedule_lag"
FROM_INTENDED = catalog.FROM_INTENDED_SUFFIX
SWEEP_INTERVAL = 0.5
SLOTS_OPTION = "loadkit_pacing_slots"
MESSAGE_KEY = "loadkit_pacing"  # key inside Locust's worker report: [schedule start, stop] wall clock
START_WAIT = 10.0  # seconds the schedule waits at most for the last user to finish on_start

_START_EVENT: Any = None  # gevent Event set when PACER starts (made in _on_test_start)
_ITERATION: dict[Any, float] = {}  # greenlet -> intended start of the iteration it runs
_HOLDING: dict[Any, Any] = {}  # greenlet -> the closed-mode semaphore it holds during its iteration


def _release(greenlet: Any) -> None:
    sem = _HOLDING.pop(greenlet, None)
    if sem is not None:
        sem.release()
_SEEN: set[tuple[str, str]] = set()
_state: dict[str, Any] = {"sweeper": None, "patched": False, "listening": False, "settings": None,
                          "window": None, "master": False}


def _wait_for_slot(user: Any) -> float | None:
    """Sleep (as ``waiting``) until this user's next intended start; record the lag.

    A start time belongs to one schedule (``PACER.generation``): when the schedule changes while a
    user sleeps towards one (a sweep's next stage), the user wakes at once and takes a new one.
    """
    import gevent
    from locust.exception import StopUser
    from locust.user.users import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

    user._state = LOCUST_STATE_WAITING
    me = gevent.getcurrent()
    while True:
        if user._state == LOCUST_STATE_STOPPING or not PACER.active:
            raise StopUser()  # the run is stopping: a start time reached meanwhile is not run
        gen = PACER.generation
        closed = PACER.closed
        if closed is not None:  # closed mode: back to back, at most N at a time
            if closed is not True:
                if not closed.acquire(timeout=0.05):
                    continue
                if PACER.generation != gen:
                    closed.release()
                    continue
                _HOLDING[me] = closed
            gevent.sleep(0)  # back to back, yet never starving the other greenlets
            if user._state == LOCUST_STATE_STOPPING or not PACER.active or PACER.generation != gen:
                _release(me)
                continue
            user._state = LOCUST_STATE_RUNNING
            PACER.started += 1
            COUNTERS.bump("iterations")
            return time.perf_counter()
        if PACER.t0 is None:  # wait for the schedule to start (all users ready, or the sweep's go)
            PACER.asking += 1
            if PACER.first_asked is None:
                PACER.first_asked = time.perf_counter()
            try:
                if _START_EVENT is not None:
                    _START_EVENT.wait()
            finally:
                PACER.asking -= 1
            if PACER.t0 is None and PACER.generation == gen and PACER.closed is None and PACER.active:
                PACER._start(time.perf_counter()) if PACER.settings is not None else gevent.sleep(0.05)
            continue
        t = PACER.take(time.perf_counter())
        if t is None:  # the rate stays at 0: nothing more to start
            _CHANGE[0].wait(1.0)
            continue
        delay = t - time.perf_counter()
        if delay > 0:
            _CHANGE[0].wait(delay)
        if PACER.generation == gen:
            break
    if user._state == LOCUST_STATE_STOPPING or not PACER.active:
        raise StopUser()
    user._state = LOCUST_STATE_RUNNING
    lag_ms = (time.perf_counter() - t) * 1000.0
    hdr.METRICS.record(TYPE, LAG, lag_ms if lag_ms > 0 else 0.0)
    PACER.started += 1
    COUNTERS.bump("iterations")
    return t


def _patch_taskset() -> None:
    """Pace the top-level task set of every user while :data:`PACER` is active (installed once,
    on the first paced run of the process)."""
    if _state["patched"]:
        return
    import gevent
    from locust.exception import StopUser
    from locust.user.users import LOCUST_STATE_STOPPING

    from loadkit.plugin import patch_taskset

    def make_execute(original_execute: Any) -> Any:
        def execute_next_task(self: Any) -> None:
            if not PACER.active or self.user._taskset_instance is not self:
                return original_execute(self)
            intended = _wait_for_slot(self.user)
            if intended is None:
                self._task_queue.popleft()
                return None
            me = gevent.getcurrent()
            _ITERATION[me] = intended
            PACER.inflight += 1
            try:
                return original_execute(self)
            finally:
                PACER.inflight -= 1
                _ITERATION.pop(me, None)
                if me in _HOLDING:
                    _release(me)

        return execute_next_task

    def make_wait(original_wait: Any) -> Any:
        def wait(self: Any) -> None:
            if PACER.active and self.user._taskset_instance is self:
                if self.user._state == LOCUST_STATE_STOPPING:
                    raise StopUser()
                return None  # the next iteration waits for its start time instead
            return original_wait(self)

        return wait

    patch_taskset(make_execute, make_wait)  # (loadkit.plugin: every Locust patch, with its guard)
    _state["patched"] = True


def ensure_installed(environment: Any) -> None:
    """The Locust patches, the ``_from_intended`` listener and the start event (idempotent); for a
    caller that drives :data:`PACER` itself (the sweep)."""
    global _START_EVENT
    _patch_taskset()
    if not _state["listening"]:
        environment.events.request.add_listener(_on_request)
        _state["listening"] = True
    if _START_EVENT is None:
        from gevent.event import Event

        _START_EVENT = Event()


def arm() -> None:
    """A fresh, unset start event (users asking for a start time wait until :func:`release_waiting`);
    whoever waited on the old one wakes and waits on the new one."""
    global _START_EVENT
    from gevent.event import Event

    old, _START_EVENT = _START_EVENT, Event()
    if old is not None:
        old.set()


def release_waiting() -> None:
    """Let users waiting for the schedule's start take their start times (after ``PACER._start``)."""
    if _START_EVENT is not None:
        _START_EVENT.set()


def _on_request(request_type: str = "", name: str = "", **_kw: Any) -> None:
    """``<name>_from_intended``: completion − intended start of the iteration that sent it."""
    import gevent

    intended = _ITERATION.get(gevent.getcurrent())
    if intended is None:
        return
    metric = name + FROM_INTENDED
    if (request_type, metric) not in _SEEN:
        _SEEN.add((request_type, metric))
        catalog.metric(request_type, metric)  # kind and definition from the catalog's suffix rule
    hdr.METRICS.record(request_type, metric, (time.perf_counter() - intended) * 1000.0)


def _start_when_ready(runner: Any) -> None:
    """Start :data:`PACER` once every spawned user asks for its first start time (see ``begin``)."""
    import gevent

    while PACER.active and PACER.t0 is None:
        spawning = getattr(runner, "spawning_greenlet", None)
        spawned = spawning is None or spawning.dead
        users = runner.user_count
        now = time.perf_counter()
        if (spawned and users and PACER.asking >= users) or (
                PACER.first_asked is not None and now - PACER.first_asked > START_WAIT):
            PACER._start(now)
            break
        gevent.sleep(0.005)
    _START_EVENT.set()


def _sweep_forever() -> None:
    import gevent

    while True:
        gevent.sleep(SWEEP_INTERVAL)
        if PACER.active:
            PACER.sweep(time.perf_counter())


def _slot_of(environment: Any) -> tuple[int, int]:
    """(share, slot) of this process: from the master's map on a worker, (1, 0) otherwise."""
    runner = environment.runner
    slots = getattr(environment.parsed_options, SLOTS_OPTION, None) or {}
    if hdr.is_worker(environment) and slots:
        cid = getattr(runner, "client_id", None)
        if cid in slots:
            return len(slots), int(slots[cid])
        logger.warning("loadkit pacing: this worker has no slot in the master's map; taking the whole rate")
    return 1, 0


def _on_test_start(environment: Any, **_kw: Any) -> None:
    options = getattr(environment, "parsed_options", None)
    try:
        settings = Settings(options)
    except pacing.PacingError as exc:  # typed into the web UI: the master stops that run
        if not hdr.is_worker(environment):
            logger.error("loadkit: %s; the run is stopped", exc)
            import gevent

            gevent.spawn(environment.runner.stop)
        return
    _state["settings"] = settings if settings.segments is not None else None
    _state["window"] = [None, None]
    if settings.segments is None:
        PACER.active = False
        return
    from locust.runners import MasterRunner

    runner = environment.runner
    if isinstance(runner, MasterRunner):
        _state["master"] = True
        ready = sorted(c.id for c in runner.clients.ready)
        setattr(options, SLOTS_OPTION, {cid: k for k, cid in enumerate(ready)})
        return  # the master runs no users
    _patch_taskset()
    if not _state["listening"]:
        environment.events.request.add_listener(_on_request)
        _state["listening"] = True
    share, slot = _slot_of(environment)
    import gevent
    from gevent.event import Event

    global _START_EVENT
    if _START_EVENT is not None:
        _START_EVENT.set()  # release anyone still waiting on a previous run's start
    _START_EVENT = Event()
    PACER.begin(settings, share, slot)
    gevent.spawn(_start_when_ready, runner)
    logger.info("loadkit pacing: %s, this process takes slot %d of %d", settings.describe(), slot, share)
    if _state["sweeper"] is None:
        _state["sweeper"] = gevent.spawn(_sweep_forever)


def _on_test_stopping(environment: Any, **_kw: Any) -> None:
    """The schedule ends when Locust begins to stop the users (not when it has stopped them all:
    stopping takes time, and start times reached meanwhile are neither run nor late)."""
    PACER.finish(time.perf_counter())
    _merge_window(PACER.wall)


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    _on_test_stopping(environment)  # a run stopped without test_stopping (library mode)


def _merge_window(wall: Any) -> None:
    """The run's schedule window: earliest start and latest stop over the processes (wall clock)."""
    window = _state["window"]
    try:
        t0, stop = (float(wall[0]) if wall[0] else None), (float(wall[1]) if wall[1] else None)
    except (TypeError, ValueError, IndexError):
        return
    if window is None:
        return
    if t0 is not None and (window[0] is None or t0 < window[0]):
        window[0] = t0
    if stop is not None and (window[1] is None or stop > window[1]):
        window[1] = stop


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    if PACER.wall[0] is not None:
        data[MESSAGE_KEY] = list(PACER.wall)


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    wall = data.get(MESSAGE_KEY)
    if wall:
        _merge_window(wall)


def summary_line() -> str | None:
    """Master/local, end of a paced run: target, started, dropped, achieved rate, schedule lag."""
    settings = _state["settings"]
    window = _state["window"]
    if settings is None or window is None or window[0] is None:
        return None
    from loadkit.metrics import counters as counters_mod

    got = counters_mod.snapshot().get(TYPE, {})
    started, dropped = int(got.get("iterations", 0)), int(got.get("dropped_iterations", 0))
    seconds = (window[1] or time.time()) - window[0]
    lag = hdr.METRICS.ops.get((TYPE, LAG))
    lag_text = "no iteration started"
    if lag is not None and lag.count:
        pct = lag.percentiles_us()
        lag_text = f"schedule lag p50 {pct[50] / 1000:.3f} ms, p99 {pct[99] / 1000:.3f} ms, max {lag.max_us / 1000:.3f} ms"
    target = pacing.expected_arrivals(settings.segments, seconds) / seconds if seconds > 0 else 0.0
    return (f"loadkit pacing ({settings.describe()}): {started + dropped} iterations due in the "
            f"{seconds:.1f} s of the schedule, "
            f"{started} started ({started / seconds if seconds > 0 else 0:.2f}/s, target {target:.2f}/s), "
            f"{dropped} dropped (> {settings.max_lag:g} s late); {lag_text}")


def _on_quit(**_kw: Any) -> None:
    line = summary_line()
    if line and not _state.get("quiet") and not _state.get("worker"):
        print(line + "\n", flush=True)


def install(events_: Any) -> bool:
    """Register the listeners (called once by :func:`loadkit.plugin.install`)."""
    return hdr.add_listeners_once(events_, "_loadkit_pacing_installed", {
        "test_start": _on_test_start, "test_stopping": _on_test_stopping, "test_stop": _on_test_stop,
        "quit": _on_quit,
        "report_to_master": _on_report_to_master, "worker_report": _on_worker_report,
    }) is not None


def start(environment: Any) -> None:
    """At ``init``: a bad ``--arrival-*`` value is one line on stderr and exit 2."""
    options = getattr(environment, "parsed_options", None)
    problem = options_problem(options)
    if problem:
        sys.stderr.write(problem + "\n")
        raise SystemExit(2)
    _state["quiet"] = bool(getattr(options, "json", False))
    _state["worker"] = hdr.is_worker(environment)
