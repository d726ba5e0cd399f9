"""Synthetic locustfile for the HDR/distributed tests: fires request events without any network.

Batch mode (default): user k fires exactly ``--synth-samples`` deterministic samples (seeded by its
global user number), every 20th marked failed, then idles, so one process with U users and U
workers with one user each record the same multiset. Continuous mode (``--synth-continuous``):
fires a sample every ~5 ms until stopped (for the fault tests). ``--synth-stop-delay S`` makes
each user take S seconds to stop and then fire one ``on_stop`` sample (a worker slow to stop).
"""

from __future__ import annotations

import itertools

import gevent
from locust import User, constant, events, task
from locust.runners import WorkerRunner

import loadkit.plugin
from hdr_synth_samples import samples, seed_for

_local_counter = itertools.count()
events.init.add_listener(loadkit.plugin.on_init)  # exact percentiles on this run's environment


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--synth-samples", type=int, default=1000, help="samples per user (batch mode)")
    parser.add_argument("--synth-stride", type=int, default=1, help="number of workers (seed stride)")
    parser.add_argument("--synth-continuous", action="store_true", default=False)
    parser.add_argument("--synth-stop-delay", type=float, default=0.0,
                        help="on_stop sleeps this long, then fires one 'on_stop' sample (a slow-to-stop worker)")


class SynthUser(User):
    wait_time = constant(600)

    def on_stop(self):
        delay = self.environment.parsed_options.synth_stop_delay
        if delay > 0:
            gevent.sleep(delay)
            self.environment.events.request.fire(request_type="synth", name="on_stop", response_time=delay * 1000,
                                                 response_length=0, exception=None, context={})

    @task
    def fire(self):
        env = self.environment
        opts = env.parsed_options
        fire = env.events.request.fire
        if opts.synth_continuous:
            for i in itertools.count():
                fire(request_type="synth", name="tick", response_time=0.2 + (i % 50) * 0.01,
                     response_length=0, exception=None, context={})
                gevent.sleep(0.005)
        runner = env.runner
        worker_index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        seed = seed_for(max(worker_index, 0), next(_local_counter), opts.synth_stride)
        for i, value in enumerate(samples(seed, opts.synth_samples)):
            exc = RuntimeError("synthetic failure") if i % 20 == 19 else None
            name = "fast" if value < 1.0 else "slow"
            fire(request_type="synth", name=name, response_time=value, response_length=1,
                 exception=exc, context={})
            if i % 200 == 0:
                gevent.sleep(0)
