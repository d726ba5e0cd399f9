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
- :mod:`loadkit.metrics.distributed` — which workers reported what, lost workers, ``--workers-window``;
- :mod:`loadkit.metrics.prometheus` — the live ``/metrics`` (web UI port, ``--metrics-port``);
- :mod:`loadkit.metrics.failures` — failed requests by exception class, merged across workers;
- :mod:`loadkit.metrics.saturation` — intervals in which a load generator's CPU was saturated,
  ``<prefix>_saturation.csv``;
- :mod:`loadkit.metrics.webui` — on a run with a web UI: the "loadkit" tabs and the live page.
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
    _add_options_once()


def _add_options_once() -> None:
    """loadkit's own command-line options, on Locust's global parser event (the parser is built
    after the locustfile is imported, before ``init``)."""
    from locust import events

    if getattr(events, "_loadkit_options_added", False):
        return
    events._loadkit_options_added = True
    from loadkit.metrics import prometheus, workers_window

    events.init_command_line_parser.add_listener(workers_window.add_options)
    events.init_command_line_parser.add_listener(prometheus.add_options)


def install(environment: Any, **_kw: Any) -> bool:
    """Install loadkit's listeners on ``environment.events``; True when this call did it.

    Accepts (and ignores) the extra keyword arguments of Locust's ``init`` event, so it can be
    added as an ``init`` listener as it is.
    """
    events = environment.events
    if getattr(events, _FLAG, False):
        _install_web_ui(environment)  # a web UI made after the first call (library mode)
        return False
    setattr(events, _FLAG, True)
    from loadkit import options
    from loadkit.metrics import counters, distributed, early_warning, failures, hdr, prometheus, saturation, unfinished
    from loadkit.metrics import slo_gate
    from loadkit.users import pacing, sweep

    options.check_at_init(environment)  # bad values: one line each, exit 2, before any user starts
    options.install_web_ui(environment)
    hdr.install(events)
    counters.install(events)
    failures.install(events)
    saturation.install(events)
    distributed.install(events)
    distributed.start(environment)
    early_warning.install(environment)
    unfinished.install(environment)
    prometheus.start(environment)
    _print_metrics_in_console(environment)
    pacing.install(events)
    pacing.start(environment)
    sweep.install(events)
    sweep.start(environment)
    slo_gate.install(events)  # after the metrics block: its verdict lines are printed last
    slo_gate.start(environment)
    _install_web_ui(environment)
    return True


def _install_web_ui(environment: Any) -> None:
    """The loadkit tabs of the web UI, when this run has one (the master, or a local run)."""
    if getattr(environment, "web_ui", None) is None:
        return
    from loadkit.metrics import webui

    try:
        webui.install(environment)
    except AssertionError as exc:  # Flask refuses new routes once the app has served a request
        import logging

        logging.getLogger("loadkit.webui").error("loadkit: the web UI is already serving; no loadkit tab: %s", exc)


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

    def show_at_end() -> None:
        show()
        from loadkit.metrics import saturation
        from loadkit.metrics.console import saturation_lines

        print("\n".join(saturation_lines(saturation.RECORD.rows())) + "\n", flush=True)

    def every_interval() -> None:
        while True:
            gevent.sleep(locust_stats.CONSOLE_STATS_INTERVAL_SEC)
            show()

    if not getattr(options, "only_summary", False):
        gevent.spawn(every_interval)
    environment.events.quit.add_listener(lambda **_kw: show_at_end())


def on_init(environment: Any, **_kw: Any) -> None:
    """Locust ``init`` listener that loadkit's user modules register: :func:`install`."""
    install(environment)


patch_locust()
from loadkit.metrics import slo_gate as _slo_gate  # noqa: E402,F401 - registers --slo before Locust parses
from loadkit.users import pacing as _pacing  # noqa: E402,F401 - registers --arrival-* before Locust parses
from loadkit.users import sweep as _sweep  # noqa: E402,F401 - registers --sweep before Locust parses
