"""``--workers-window``: a headless master counts the workers that connect instead of being told how many."""

from __future__ import annotations

import logging
import time
from typing import Any

from loadkit import options as declared
from loadkit.metrics.workers import is_master

logger = logging.getLogger("loadkit.distributed")




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


def start(environment: Any, **_kw: Any) -> None:
    options = getattr(environment, "parsed_options", None)
    window = float(declared.of(options, "workers_window") or 0)
    if window <= 0 or not is_master(environment) or not getattr(options, "headless", False):
        return
    import gevent

    minimum = max(1, int(options.expect_workers or 1))
    options.expect_workers = minimum + 1  # Locust's start loop waits until the counter below releases it
    gevent.spawn(_count_workers_then_start, environment.runner, options, minimum, window)
