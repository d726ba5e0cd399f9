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
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from locust import events

from loadkit import pacing
from loadkit.metrics import catalog, hdr
from loadkit.metrics.counters import counters

logger = logging.getLogger("loadkit.pacing")

TYPE = "loadkit"
LAG = "schedule_lag"
FROM_INTENDED = catalog.FROM_INTENDED_SUFFIX
COUNTERS = counters(TYPE)
SWEEP_INTERVAL = 0.5
SLOTS_OPTION = "loadkit_pacing_slots"
MESSAGE_KEY = "loadkit_pacing"  # key inside Locust's worker report: [schedule start, stop] wall clock
START_WAIT = 10.0  # seconds the schedule waits at most for the last user to finish on_start


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # parser.add_argument itself (not a group's): only that shows the option in the web UI form
    parser.add_argument("--arrival-rate", default="", metavar="RATE",
                        help="open model: start iterations at this total rate (all workers together), e.g. 20/s or "
                             "1200/m, instead of each user's wait time; with --arrival-stages the rate the first "
                             "stage ramps from")
    parser.add_argument("--arrival-stages", default="", metavar="STAGES",
                        help="open model, ramping like k6's ramping-arrival-rate: DURATION:RATE,... e.g. "
                             "'30s:10/s,60s:50/s' (each stage ramps linearly to its rate; the last rate holds)")
    parser.add_argument("--arrival-pattern", default="constant", metavar="PATTERN",
                        help="arrival pattern: constant (default), poisson, or gamma:K (K<1 bursty, K>1 smooth)")
    parser.add_argument("--arrival-seed", default="1", metavar="N", help="seed of poisson/gamma arrivals (default 1)")
    parser.add_argument("--arrival-max-lag", default="1s", metavar="DURATION",
                        help="an iteration not started this long after its intended time is dropped and counted "
                             "(default 1s)")


class Settings:
    """The parsed ``--arrival-*`` options of a run (``segments`` None: no pacing)."""

    def __init__(self, options: Any) -> None:
        get = (lambda name, default: getattr(options, name, default) or default)
        rate_text, stages_text = str(get("arrival_rate", "")).strip(), str(get("arrival_stages", "")).strip()
        self.rate = pacing.parse_rate(rate_text) if rate_text else None
        self.stages = pacing.parse_stages(stages_text) if stages_text else None
        self.pattern, self.shape = pacing.parse_pattern(str(get("arrival_pattern", "constant")))
        seed = str(get("arrival_seed", "1")).strip()
        try:
            self.seed = int(seed)
        except ValueError:
            raise pacing.PacingError(f"--arrival-seed {seed!r}: expected a whole number") from None
        self.max_lag = pacing.parse_duration(str(get("arrival_max_lag", "1s")), "--arrival-max-lag")
        if self.max_lag < 0:
            raise pacing.PacingError("--arrival-max-lag must be >= 0")
        self.segments: list[pacing.Segment] | None = None
        if self.rate is None and self.stages is None:
            pass
        else:
            if self.stages is None and not self.rate:
                raise pacing.PacingError(f"--arrival-rate {rate_text!r}: must be > 0")
            self.segments = pacing.profile(self.rate, self.stages)

    def describe(self) -> str:
        if self.segments is None:
            return "closed model"
        what = (f"{self.rate:g}/s" if self.stages is None else
                f"stages {', '.join(f'{d:g}s:{r:g}/s' for d, r in self.stages)} from {self.rate or 0:g}/s")
        pattern = self.pattern + (f":{self.shape:g}" if self.pattern == "gamma" else "")
        return f"{what}, {pattern}"


def _check(parse: Any) -> Any:
    """A :mod:`loadkit.options` check from one of :mod:`loadkit.pacing`'s parsers (which name the
    option themselves: that part is left to the caller)."""
    def check(text: str) -> Any:
        if not text.strip():
            return None
        try:
            return parse(text)
        except pacing.PacingError as exc:
            message = str(exc)
            raise ValueError(message.split(" ", 1)[1] if message.startswith("--") and " " in message else message) from None

    return check


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise pacing.PacingError(f"--arrival-seed {text!r}: expected a whole number") from None


def _declare_rules() -> None:
    from loadkit.options import rule

    rule("--arrival-rate", _check(pacing.parse_rate))
    rule("--arrival-stages", _check(pacing.parse_stages))
    rule("--arrival-pattern", _check(pacing.parse_pattern))
    rule("--arrival-seed", _check(_seed))
    rule("--arrival-max-lag", _check(lambda t: pacing.parse_duration(t, "--arrival-max-lag")))


_declare_rules()


def options_problem(options: Any) -> str | None:
    """What is wrong with the ``--arrival-*`` values (one line), or None."""
    if options is None:
        return None
    try:
        Settings(options)
    except pacing.PacingError as exc:
        return f"loadkit: {exc}"
    return None


class Pacer:
    """This process's schedule: hands out intended start times (``time.perf_counter()`` clock)."""

    def __init__(self) -> None:
        self.active = False
        self.settings: Settings | None = None
        self._times: Any = iter(())
        self._next: float | None = None
        self.share, self.slot = 1, 0
        self.closed: Any = None
        self.first_asked: float | None = None
        self.asking = 0
        self.generation = 0  # +1 whenever the schedule changes: start times of an older one are void
        self.inflight = 0  # iterations running now
        self.t0: float | None = None
        #: [wall clock at t = 0, wall clock at the stop] of this process's schedule
        self.wall: list[float | None] = [None, None]
        self.stopped_at: float | None = None
        self.started = 0
        self.dropped = 0

    def begin(self, settings: Settings, share: int, slot: int) -> None:
        """Arm the schedule. It starts (t = 0) once this process has spawned its users and every one
        of them has finished ``on_start`` and asks for its first start time (at most
        :data:`START_WAIT` s after the first asks), so log-in and connect at the beginning of a
        test do not show up as lag: like k6's pre-allocated VUs, users are capacity, not load."""
        self.settings = settings
        self.share, self.slot = share, slot
        self.t0, self.stopped_at = None, None
        self.started = self.dropped = 0
        self._times, self._next = iter(()), None
        self.first_asked: float | None = None
        self.asking = 0
        self.wall = [None, None]
        self.closed: Any = None  # closed mode (the sweep's baseline/throughput): see begin_closed
        self.active = True
        self._changed()

    def hold(self) -> None:
        """Start no iteration until the next ``begin``/``begin_closed`` (a sweep between stages)."""
        self.settings, self.closed, self.t0 = None, None, None
        self._times, self._next = iter(()), None
        self.active = True
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        _CHANGE[0].set()  # users sleeping towards a start time of the old schedule wake now
        from gevent.event import Event

        _CHANGE[0] = Event()

    def begin_closed(self, limit: int | None) -> None:
        """Closed mode (a sweep's synchronous and throughput stages): users start iterations back to
        back, at most ``limit`` at a time (None: every user), no schedule and no lag."""
        from gevent.lock import BoundedSemaphore

        self.settings = None
        self.t0 = time.perf_counter()
        self._times, self._next = iter(()), None
        self.closed = BoundedSemaphore(limit) if limit else True
        self.active = True
        self._changed()

    def _start(self, now: float) -> None:
        settings = self.settings
        assert settings is not None and settings.segments is not None
        self.t0 = now
        self.wall = [time.time() - (time.perf_counter() - now), None]
        self._times = pacing.arrival_times(settings.segments, settings.pattern, settings.shape,
                                           share=self.share, slot=self.slot, seed=settings.seed)
        self._advance()

    def _advance(self) -> None:
        t = next(self._times, None)
        self._next = None if t is None else self.t0 + t

    def _drop(self) -> None:
        self.dropped += 1
        COUNTERS.bump("dropped_iterations")
        self._advance()

    def sweep(self, now: float) -> None:
        """Count the start times more than max lag in the past as dropped."""
        limit = now - self.settings.max_lag if self.settings else now
        while self._next is not None and self._next < limit:
            self._drop()

    def take(self, now: float) -> float | None:
        """The next start time not yet dropped (None: the schedule has ended)."""
        if self.t0 is None:
            self._start(now)
        self.sweep(now)
        t = self._next
        if t is not None:
            self._advance()
        return t

    def finish(self, now: float) -> None:
        """End of the run: start times already due but never taken are dropped."""
        if not self.active:
            return
        if self.closed is not None:
            self.active, self.closed = False, None
            self._changed()
            return
        while self._next is not None and self._next <= now:
            self._drop()
        self.active = False
        self.stopped_at = now
        self._changed()
        if self.wall[0] is not None:
            self.wall[1] = time.time() - (time.perf_counter() - now)


PACER = Pacer()
_START_EVENT: Any = None  # gevent Event set when PACER starts (made in _on_test_start)


def _new_event() -> Any:
    from gevent.event import Event

    return Event()


_CHANGE: list[Any] = [_new_event()]  # set (and replaced) whenever PACER's schedule changes
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
