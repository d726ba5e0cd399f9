"""Locustfile for bench/bench_master_cost.py: workers that report as much as they can.

Each user fires request events for ``$BENCH_OPS`` operation names (default 16, about what a mixed
KTB + chldo run has) with spread-out response times, as fast as its process allows (a yield every
200 samples), a 1 in 50 of them failed with one of 3 exception classes. No network: the workers'
reports to the master (Locust's stats + loadkit's HDR histograms + bookkeeping, every 3 s) are the
full-rate load the bench measures on the master.
"""

from __future__ import annotations

import os
import random

import gevent
from locust import User, constant, events, task

import loadkit.plugin

events.init.add_listener(loadkit.plugin.on_init)  # the HDR histograms travel to the master as in a real run

OPS = [f"op{i:02d}" for i in range(int(os.environ.get("BENCH_OPS", "16")))]
ERRORS = [ValueError("bad answer"), TimeoutError("no answer"), ConnectionError("lost")]


class Firehose(User):
    wait_time = constant(0)

    @task
    def fire(self) -> None:
        fire = self.environment.events.request.fire
        rnd = random.Random()
        while True:
            for _ in range(200):
                name = OPS[rnd.randrange(len(OPS))]
                failed = rnd.random() < 0.02
                fire(request_type="bench", name=name, response_time=rnd.lognormvariate(1.0, 1.0),
                     response_length=0, exception=ERRORS[rnd.randrange(3)] if failed else None, context={})
            gevent.sleep(0)
