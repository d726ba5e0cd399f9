"""A locustfile whose processes report a steady 95 % CPU, for the end-to-end saturation test.

The detection is unit-tested with literal samples (tests/test_saturation.py); this checks the rest of
the path — sampling while the test runs, shipping from the workers, merging on the master,
``_saturation.csv`` and the console line — without depending on how busy the shared test machine
is: ``process_time`` is replaced by a clock that advances 0.95 s per wall second.
"""

from __future__ import annotations

import time as _time

from locust import User, constant, events, task

import loadkit.plugin
from loadkit.metrics import saturation

events.init.add_listener(loadkit.plugin.on_init)


class _BusyClock:
    """``time`` for the sampler: real wall clock, CPU time at 95 % of it."""

    time = staticmethod(_time.time)
    _start = _time.time()

    @staticmethod
    def process_time() -> float:
        return 0.95 * (_time.time() - _BusyClock._start)


saturation.time = _BusyClock  # type: ignore[assignment]


class Idle(User):
    wait_time = constant(0.5)

    @task
    def noop(self) -> None:
        self.environment.events.request.fire(request_type="x", name="noop", response_time=1.0, response_length=0,
                                             exception=None, context={})
