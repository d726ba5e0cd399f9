"""loadkit as a Locust plugin: everything it adds to a run, installed on that run's ``Environment``.

Why explicit: listeners added to Locust's global ``locust.events`` at import reach only the runs
that use the global events; a library-mode ``Environment(events=Events())`` would silently lose the
exact percentiles, the metrics and the counters. :func:`install` puts them on the environment it is
given, once. loadkit's user modules call it from Locust's ``init`` (and every loadkit user from its
constructor, which covers library mode); a locustfile of your own may call it too — it is idempotent.

What it installs (each module's own ``install`` says more):
- :mod:`loadkit.metrics.hdr` — exact request histograms and loadkit metric histograms, merged
  across workers, ``<prefix>_hdr.csv`` and ``<prefix>_metrics.csv``;
- :mod:`loadkit.metrics.counters` — counts of what is not a request, ``<prefix>_counters.csv``;
- :mod:`loadkit.metrics.distributed` — which workers reported what, lost workers;
- :mod:`loadkit.users.pacing` — ``--arrival-rate``/``--arrival-stages`` (open model): users take
  iterations from a schedule, schedule lag and dropped iterations recorded;
- :mod:`loadkit.users.sweep` — ``--sweep``: stage after stage, the highest rate where every SLO held;
- :mod:`loadkit.metrics.slo_gate` — ``--slo`` judged on the merged figures, ``<prefix>_slo.csv``,
  the exit code of a failed SLO; ``--goodput``.

The Locust *patches* (not listeners) are applied at import, because a worker connects to its
master before ``init``: :func:`patch_locust`.
"""

from __future__ import annotations

from typing import Any

_FLAG = "_loadkit_plugin_installed"


def patch_locust() -> None:
    """Apply loadkit's patches of Locust classes (idempotent): the final CSV rows and bounded
    master/worker waits."""
    from loadkit.metrics import distributed, final_csv

    final_csv.install()
    distributed.patch_locust()
from loadkit.metrics import slo_gate as _slo_gate  # noqa: E402,F401 - registers --slo before Locust parses
from loadkit.users import pacing as _pacing  # noqa: E402,F401 - registers --arrival-* before Locust parses
from loadkit.users import sweep as _sweep  # noqa: E402,F401 - registers --sweep before Locust parses


def install(environment: Any, **_kw: Any) -> bool:
    """Install loadkit's listeners on ``environment.events``; True when this call did it.

    Accepts (and ignores) the extra keyword arguments of Locust's ``init`` event, so it can be
    added as an ``init`` listener as it is.
    """
    events = environment.events
    if getattr(events, _FLAG, False):
        return False
    setattr(events, _FLAG, True)
    from loadkit.metrics import counters, distributed, hdr, slo_gate
    from loadkit.users import pacing, sweep

    hdr.install(events)
    counters.install(events)
    distributed.install(events)
    distributed.start(environment)
    _print_metrics_in_console(environment)
    pacing.install(events)
    pacing.start(environment)
    sweep.install(events)
    sweep.start(environment)
    slo_gate.install(events)  # after the metrics block: its verdict lines are printed last
    slo_gate.start(environment)
    return True


def _print_metrics_in_console(environment: Any) -> None:
    """Headless master or local run: print the loadkit metrics block after Locust's request table,
    at Locust's console cadence (not with ``--only-summary``) and once at the end."""
    options = getattr(environment, "parsed_options", None)
    if options is None or not getattr(options, "headless", False) or getattr(options, "json", False):
        return
    from loadkit.metrics import hdr

    if hdr.is_worker(environment):
        return
    import gevent
    from locust import stats as locust_stats

    from loadkit.metrics.console import metrics_table

    def show() -> None:
        lines = metrics_table(hdr.METRICS.metric_rows())
        if lines:
            print("\n".join(lines) + "\n", flush=True)

    def every_interval() -> None:
        while True:
            gevent.sleep(locust_stats.CONSOLE_STATS_INTERVAL_SEC)
            show()

    if not getattr(options, "only_summary", False):
        gevent.spawn(every_interval)
    environment.events.quit.add_listener(lambda **_kw: show())


def on_init(environment: Any, **_kw: Any) -> None:
    """Locust ``init`` listener that loadkit's user modules register: :func:`install`."""
    install(environment)


patch_locust()
from loadkit.metrics import slo_gate as _slo_gate  # noqa: E402,F401 - registers --slo before Locust parses
from loadkit.users import pacing as _pacing  # noqa: E402,F401 - registers --arrival-* before Locust parses
from loadkit.users import sweep as _sweep  # noqa: E402,F401 - registers --sweep before Locust parses
