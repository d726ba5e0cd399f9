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

The Locust *patches* (not listeners) all live here, below, and are applied at import, because a
worker connects to its master before ``init``: :func:`patch_locust`. Every Locust internal loadkit
patches or reads is listed in :data:`LOCUST_INTERNALS` with what it is for, and checked against the
installed Locust first (:func:`check_locust`): if one moved, the process ends with one line naming
the Locust version and what is missing, instead of a traceback mid-run or a patch that silently
does nothing. ``pyproject.toml`` bounds Locust to :data:`LOCUST_TESTED`.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

from loadkit.internals import Internal, check, wrap

_FLAG = "_loadkit_plugin_installed"

#: the Locust versions the suite ran on (the range in pyproject.toml's dependencies)
LOCUST_TESTED = ">=2.40,<2.48"

_CSV = "locust.stats:StatsCSVFileWriter"
#: every Locust internal (not a documented API) loadkit patches or reads, and what for
LOCUST_INTERNALS: tuple[Internal, ...] = (
    # the final CSV rows (patch_final_csv, metrics/final_csv.py)
    Internal(f"{_CSV}.close_files", "final CSV rows are written when Locust closes its files", "own"),
    *(Internal(f"{_CSV}.{m}", "the final CSV rows (Locust's own row writers)")
      for m in ("_requests_data_rows", "_failures_data_rows", "_exceptions_data_rows", "_stats_history_data_rows")),
    *(Internal(f"{_CSV}.{a}", "the final CSV rows", "self")
      for a in ("requests_csv_filehandle", "requests_csv_writer", "requests_csv_columns", "failures_csv_filehandle",
                "failures_csv_writer", "failures_columns", "exceptions_csv_filehandle", "exceptions_csv_writer",
                "exceptions_columns", "stats_history_csv_writer")),
    # bounded master/worker waits (patch_master_waits, LOADKIT_MASTER_WAIT / LOADKIT_MASTER_TIMEOUT)
    Internal("locust.runners:CONNECT_TIMEOUT", "LOADKIT_MASTER_WAIT"),
    Internal("locust.runners:CONNECT_RETRY_COUNT", "LOADKIT_MASTER_WAIT"),
    Internal("locust.runners:MASTER_HEARTBEAT_TIMEOUT", "LOADKIT_MASTER_TIMEOUT, lost-worker detection"),
    Internal("locust.runners:WorkerRunner.connect_to_master", "the one-line 'no master answered' exit", "own"),
    Internal("locust.runners:WorkerRunner.master_host", "the 'no master answered' line", "self"),
    Internal("locust.runners:WorkerRunner.master_port", "the 'no master answered' line", "self"),
    # the master waits for its workers' final reports (patch_final_reports, metrics/master_waits.py)
    Internal("locust.runners:MasterRunner.quit", "waiting for the workers' final reports", "own"),
    Internal("locust.runners:MasterRunner.clients", "the workers' states", "self"),
    Internal("locust.runners:MasterRunner.server", "sending 'quit' to the workers", "self"),
    Internal("locust.runners:WorkerNodes.all", "the workers' states and CPU"),
    Internal("locust.runners:WorkerNode.cpu_usage", "the workers' CPU on /metrics", "self"),
    Internal("locust.rpc:Message", "sending 'quit' to the workers"),
    Internal("locust.runners:Runner.spawning_greenlet", "waiting for the spawn to complete (ktb, --sweep)", "self"),
    # --arrival-rate / --arrival-stages (patch_taskset, users/pacing.py)
    Internal("locust.user.task:TaskSet.execute_next_task", "open-model pacing of iterations", "own"),
    Internal("locust.user.task:TaskSet.wait", "open-model pacing of iterations", "own"),
    Internal("locust.user.task:TaskSet._task_queue", "open-model pacing (a dropped iteration)", "self"),
    Internal("locust.user.users:User._state", "open-model pacing (stopping users)", "self"),
    Internal("locust.user.users:User._taskset_instance", "open-model pacing (the top-level task set)", "self"),
    Internal("locust.user.users:LOCUST_STATE_RUNNING", "open-model pacing"),
    Internal("locust.user.users:LOCUST_STATE_STOPPING", "open-model pacing"),
    Internal("locust.user.users:LOCUST_STATE_WAITING", "open-model pacing"),
    # the rest
    Internal("locust.stats:CONSOLE_STATS_INTERVAL_SEC", "the console metrics table's cadence"),
    Internal("locust.util.timespan:parse_timespan", "--slo/--goodput time spans"),
    Internal("locust.web:WebUI.auth_required_if_enabled", "the web UI's loadkit pages behind Locust's login"),
    Internal("locust.web:WebUI.template_args", "the web UI's loadkit tab", "self"),
)


def check_locust() -> None:
    """Every internal of :data:`LOCUST_INTERNALS` is where loadkit expects it, or the process ends
    with one line (``loadkit.internals.InternalsMoved``) naming the Locust version and what moved."""
    check("locust", LOCUST_TESTED, LOCUST_INTERNALS)


def patch_locust() -> None:
    """Check the Locust internals, then apply loadkit's patches of Locust classes (idempotent): the
    final CSV rows and bounded master/worker waits. (Pacing patches ``TaskSet`` on the first paced
    run only: :func:`patch_taskset`.)"""
    check_locust()
    patch_final_csv()
    patch_master_waits()
    patch_final_reports()
    _add_options_once()


def patch_final_csv() -> bool:
    """Wrap ``StatsCSVFileWriter.close_files`` so it writes the final rows first (why:
    ``loadkit.metrics.final_csv``); False if it was wrapped already."""

    def make(original: Callable[[Any], None]) -> Callable[[Any], None]:
        def close_files(self: Any) -> None:
            from loadkit.metrics import final_csv

            try:
                final_csv.final_write(self)
            except Exception:  # a failed final write must not lose what Locust already wrote
                logging.getLogger("loadkit.final_csv").exception("loadkit: could not write the final Locust CSV rows")
            original(self)

        return close_files

    return wrap("locust.stats:StatsCSVFileWriter.close_files", make)


def patch_master_waits() -> None:
    """Apply ``LOADKIT_MASTER_WAIT`` / ``LOADKIT_MASTER_TIMEOUT`` to Locust's worker constants, and
    make a worker that finds no master say so in one line."""
    from locust import runners

    from loadkit.metrics.master_waits import _env_seconds

    wait = _env_seconds("LOADKIT_MASTER_WAIT", 60.0)
    assert wait is not None
    runners.CONNECT_TIMEOUT = max(0.5, min(5.0, wait))
    # connect_to_master gives up once retry > CONNECT_RETRY_COUNT, i.e. after COUNT + 1 waits
    runners.CONNECT_RETRY_COUNT = max(0, math.ceil(wait / runners.CONNECT_TIMEOUT) - 1)
    timeout = _env_seconds("LOADKIT_MASTER_TIMEOUT", None)
    if timeout is not None:
        runners.MASTER_HEARTBEAT_TIMEOUT = timeout

    def make(original: Callable[[Any], None]) -> Callable[[Any], None]:
        def connect_to_master(self: Any) -> None:
            try:
                original(self)
            except ConnectionError as exc:
                if exc.args:  # already explained by an inner (recursive) attempt
                    raise
                raise ConnectionError(
                    f"no Locust master answered at {self.master_host}:{self.master_port} within "
                    f"{wait:.0f}s (LOADKIT_MASTER_WAIT); is the master running and reachable? "
                    "This worker exits."
                ) from None

        return connect_to_master

    wrap("locust.runners:WorkerRunner.connect_to_master", make)


def patch_final_reports() -> None:
    """Make the master wait for its workers' last reports when it quits (bounded).

    Locust's ``MasterRunner.quit`` sends "quit" to the workers and waits a fixed 0.5 s for their final
    stats; a worker busy for longer (slow ``on_stop``, busy CPU) loses its last seconds of samples.
    The wrapper first sends "quit" itself and waits until every connected worker has sent the report
    it makes after stopping (or has gone), at most ``LOADKIT_FINAL_REPORT_WAIT`` seconds (default
    5; ``loadkit.metrics.master_waits._await_final_reports``), then runs Locust's own ``quit`` as
    usual. Only the first call waits (Locust calls ``quit`` again during shutdown, when the message
    loop is already gone).
    """

    def make(original: Callable[[Any], None]) -> Callable[[Any], None]:
        def quit(self: Any) -> None:
            from loadkit.metrics import master_waits

            wait = master_waits._env_seconds("LOADKIT_FINAL_REPORT_WAIT", 5.0) or 0.0
            if not getattr(self, "_loadkit_waited", False) and wait > 0:
                self._loadkit_waited = True
                try:
                    master_waits._await_final_reports(self, wait)
                except Exception as exc:  # noqa: BLE001 - never get in the way of Locust's own shutdown
                    master_waits.logger.debug("loadkit: waiting for final reports failed: %s", exc)
            original(self)

        return quit

    wrap("locust.runners:MasterRunner.quit", make)


def patch_taskset(execute_next_task: Callable[[Any], Callable[[Any], Any]],
                  wait: Callable[[Any], Callable[[Any], Any]]) -> None:
    """Open-model pacing (``loadkit.users.pacing``): wrap ``TaskSet.execute_next_task`` and
    ``TaskSet.wait``; each argument makes the wrapper from Locust's original."""
    wrap("locust.user.task:TaskSet.execute_next_task", execute_next_task)
    wrap("locust.user.task:TaskSet.wait", wait)


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
