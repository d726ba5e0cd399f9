"""This process's open-model schedule (``PACER``): hands out intended start times and counts drops.

The schedule's decisions (when it starts, which start times are due, which are dropped as too
late) live here; ``users/pacing.py`` wires them into Locust (patched task sets, listeners).
"""

from __future__ import annotations

import time
from typing import Any

from loadkit import pacing
from loadkit.metrics.counters import counters

from .pacing_options import Settings

TYPE = "loadkit"
COUNTERS = counters(TYPE)


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


def _new_event() -> Any:
    from gevent.event import Event

    return Event()


_CHANGE: list[Any] = [_new_event()]  # set (and replaced) whenever PACER's schedule changes
