"""``--slo`` / ``--slo-abort-after`` / ``--goodput`` in a Locust run: judge the SLOs, count goodput,
write ``_slo.csv`` and ``_goodput.csv``, set the exit code.

Why here: the master (or the single local process) holds the exact, worker-merged figures
(:data:`loadkit.metrics.hdr.STORE`, :data:`loadkit.metrics.hdr.METRICS`, Locust's merged request
stats), so it alone judges the SLOs (grammar and figures: :mod:`loadkit.metrics.slo`).

* at ``init``: a bad ``--slo`` or ``--slo-abort-after`` is one line on stderr and exit 2, before
  any user starts; values typed into the web UI are checked at ``test_start`` (a bad one stops that
  run with one logged line, the web UI stays up);
* every :data:`LIVE_INTERVAL` seconds during a run: the SLOs are judged on the figures so far
  (cumulative, like k6's thresholds); :func:`live_status` returns that for the web UI. With
  ``--slo-abort-after 30s`` a run is stopped once an SLO has failed for 30 s without a break
  (an SLO without samples yet is not failing);
* at ``test_stop`` and ``quitting``: ``<prefix>_slo.csv`` (with ``--csv``); at ``quitting`` the
  exit code becomes :data:`EXIT_SLO_FAILED` when any SLO failed (unless another part of the run
  already set one: Locust's own reasons and loadkit's 3 keep theirs), and one line per SLO is
  printed after Locust's final table: ``PASS ttft p95 312.4 ms < 500 ms``.

Goodput (:mod:`loadkit.metrics.goodput`): every process counts good/total requests of the
``--goodput`` operations (a worker takes the master's option at ``test_start``). An operation whose
targets are all on its own time is judged by a ``request`` listener, added only when ``--goodput``
is given (no cost otherwise); one with phase targets (``sendmsg: ttft<500ms``) by the user that
knows the turn's figures together (``Measure.goodput``, see :class:`loadkit.users.chldo.ChldoUser`).
Workers ship their counts in Locust's report; the master sums them and writes ``_goodput.csv``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from locust import events

from loadkit import options as declared
from loadkit.metrics import goodput, hdr, slo
from loadkit.metrics.histograms import write_csv_atomic

logger = logging.getLogger("loadkit.slo")

#: process exit code when at least one SLO failed (Locust: 1 = failures/errors, 2 = bad options or an
#: unhandled error, -1 = bad setup; loadkit: 3 = a worker lost its master)
EXIT_SLO_FAILED = 4
LIVE_INTERVAL = 2.0

#: this process's goodput counts (``Measure.goodput`` is this object while ``--goodput`` is given)
GOODPUT = goodput.GoodputCounts()

def _declare_rules() -> None:
    from loadkit.options import rule

    rule("--slo", check_slo)
    rule("--slo-abort-after", check_abort_after)
    rule("--goodput", check_goodput)


_state: dict[str, Any] = {"slos": [], "results": [], "failing_since": {}, "aborted": None, "final": None}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # parser.add_argument itself (not a group's): only that shows the option in the web UI form
    parser.add_argument(
        "--slo", action="append", default=None, metavar="EXPR",
        help="service level objective, e.g. 'ttft:p95<500ms' (repeatable, or several separated by ';'): "
             "[TYPE:]NAME:STAT OP NUMBER[UNIT], STAT pNN|median|mean|min|max|fail_rate|rps|goodput, UNIT ms|s|%%|/s (STAT goodput: share of --goodput's good requests); "
             f"judged on the exact merged figures at the end; any failing SLO makes the exit code {EXIT_SLO_FAILED}")
    parser.add_argument(
        "--slo-abort-after", default="", metavar="DURATION",
        help="stop the run once an SLO has failed continuously this long, e.g. 30s or 2m (default: never)")
    parser.add_argument(
        "--goodput", action="append", default=None, metavar="SPEC",
        help="count requests that met every target, e.g. 'sendmsg: ttft<500ms, sendmsg<5s' (repeatable, or "
             "several operations separated by ';'); written to <prefix>_goodput.csv")


def _without_flag(message: str) -> str:
    """``--slo 'x': what`` → ``'x': what`` (:mod:`loadkit.options` names the option itself)."""
    return message.split(" ", 1)[1] if message.startswith("--") and " " in message else message


def _list_value(text: str) -> Any:
    """The raw value of a repeatable option: a form's string, or the command line's list as text."""
    if text.startswith("[") and text.endswith("]"):
        import ast

        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            pass
    return text


def check_slo(text: str) -> Any:
    """:mod:`loadkit.options` check of ``--slo`` (command line and web UI form alike)."""
    try:
        return slo.parse_all(_list_value(text))
    except ValueError as exc:
        raise ValueError(_without_flag(str(exc))) from None


def check_goodput(text: str) -> Any:
    try:
        return goodput.parse(_list_value(text))
    except ValueError as exc:
        raise ValueError(_without_flag(str(exc))) from None


def check_abort_after(text: str) -> Any:
    try:
        return abort_after_seconds(text)
    except ValueError as exc:
        raise ValueError(_without_flag(str(exc))) from None


def abort_after_seconds(text: str | None) -> float | None:
    """``--slo-abort-after`` → seconds (None: never); ValueError with a one-line reason."""
    text = (text or "").strip()
    if not text:
        return None
    from locust.util.timespan import parse_timespan

    try:
        seconds = float(text) if text.replace(".", "", 1).isdigit() else float(parse_timespan(text))
    except ValueError:
        raise ValueError(f"--slo-abort-after {text!r}: expected a duration such as 30s, 2m or 1m30s") from None
    if seconds <= 0:
        raise ValueError(f"--slo-abort-after {text!r}: must be > 0")
    return seconds


def options_problem(options: Any) -> str | None:
    """What is wrong with ``--slo`` / ``--slo-abort-after`` (one line), or None."""
    if options is None:
        return None
    try:
        slos = slo.parse_all(getattr(options, "slo", None))
        abort = abort_after_seconds(declared.of(options, "slo_abort_after"))
        goodput.parse(getattr(options, "goodput", None))
    except ValueError as exc:
        return f"loadkit: {exc}"
    if abort is not None and not slos:
        return "loadkit: --slo-abort-after needs at least one --slo"
    return None


def slos() -> list[slo.Slo]:
    """The SLOs of the current run (parsed at ``test_start``)."""
    return list(_state["slos"])


def _sweeping(environment: Any) -> bool:
    """``--sweep`` judges the SLOs per stage itself (:mod:`loadkit.users.sweep`)."""
    return bool(declared.value(environment, "sweep"))


def _environment_slos(environment: Any) -> list[slo.Slo]:
    return slo.parse_all(getattr(getattr(environment, "parsed_options", None), "slo", None))


def figures(environment: Any) -> slo.Figures:
    """This process's exact figures: merged over the workers on a master."""
    counts: dict[tuple[str, str], tuple[int, int, float]] = {}
    runner = getattr(environment, "runner", None)
    stats = getattr(runner, "stats", None) or getattr(environment, "stats", None)
    for (name, method), entry in (getattr(stats, "entries", None) or {}).items():
        counts[(str(method), str(name))] = (entry.num_requests, entry.num_failures, entry.total_rps)
    return slo.Figures(requests=dict(hdr.STORE.ops), metrics=dict(hdr.METRICS.ops), counts=counts,
                       goodput={k: (good, total) for k, (good, total) in GOODPUT.counts.items()})


def judge(environment: Any) -> list[slo.Result]:
    """Judge the run's SLOs on the figures so far; the results are also :func:`live_status`'s."""
    results = slo.evaluate_all(_state["slos"], figures(environment))
    _state["results"] = results
    return results


def live_status() -> dict[str, Any]:
    """The SLOs of the current run as last judged (every :data:`LIVE_INTERVAL` s and at the end),
    for the web UI: ``{"slos": [row, ...], "aborted": reason or None, "final": bool}``; each row is
    a ``_slo.csv`` row plus ``"failing_for"`` (seconds the SLO has failed without a break)."""
    now = time.monotonic()
    rows = []
    for r in _state["results"]:
        since = _state["failing_since"].get(r.slo.text)
        rows.append({**r.row(), "failing_for": round(now - since, 1) if since is not None else 0.0})
    return {"slos": rows, "aborted": _state["aborted"], "final": bool(_state["final"])}


def write_csv(environment: Any, results: list[slo.Result]) -> str | None:
    prefix = hdr.csv_prefix(environment)
    if not prefix or not results:
        return None
    path = f"{prefix}{slo.CSV_SUFFIX}"
    try:
        write_csv_atomic(path, slo.CSV_COLUMNS, [r.row() for r in results])
    except OSError as exc:
        logger.error("loadkit: could not write %s: %s", path, exc)
        return None
    return path


# ------------------------------------------------------------------------------------ live check


def _track(results: list[slo.Result], now: float) -> slo.Result | None:
    """Update how long each SLO has been failing; the first that failed for ``abort_after`` s."""
    failing_since = _state["failing_since"]
    abort_after = _state.get("abort_after")
    over = None
    for r in results:
        if r.passed or r.measured is None:  # passing, or nothing measured yet: not failing
            failing_since.pop(r.slo.text, None)
            continue
        since = failing_since.setdefault(r.slo.text, now)
        if abort_after is not None and now - since >= abort_after and over is None:
            over = r
    return over


def _live_loop(environment: Any) -> None:
    import gevent

    runner = environment.runner
    while True:
        gevent.sleep(LIVE_INTERVAL)
        if _state["final"] or runner.state not in ("spawning", "running") or _sweeping(environment):
            continue
        try:
            over = _track(judge(environment), time.monotonic())
        except Exception as exc:  # noqa: BLE001 - bookkeeping never kills the run
            logger.debug("loadkit: live SLO check failed: %s", exc)
            continue
        if over is not None:
            reason = f"SLO {over.slo.text!r} had failed for {_state['abort_after']:g}s without a break ({over.line()})"
            _state["aborted"] = reason
            logger.error("loadkit: %s; stopping the run (--slo-abort-after)", reason)
            options = environment.parsed_options
            if getattr(options, "headless", False) or getattr(options, "autostart", False):
                gevent.spawn(runner.quit)
            else:
                gevent.spawn(runner.stop)


# ------------------------------------------------------------------------------------ Locust wiring


def _configure_goodput(environment: Any) -> None:
    """Take this run's ``--goodput`` (a worker: the master's, which arrived with the spawn message)."""
    try:
        specs = goodput.parse(getattr(getattr(environment, "parsed_options", None), "goodput", None))
    except ValueError:
        specs = {}  # reported by the master (or at init) as a bad option
    GOODPUT.configure(specs)
    GOODPUT.clear()
    listening = getattr(environment.events, "_loadkit_goodput_listening", False)
    wanted = any(s.own_only for s in specs.values())
    if wanted and not listening:
        environment.events.request.add_listener(GOODPUT.on_request)
    elif listening and not wanted:
        environment.events.request.remove_listener(GOODPUT.on_request)
    environment.events._loadkit_goodput_listening = wanted


def goodput_recorder() -> goodput.GoodputCounts | None:
    """What ``Measure.goodput`` holds: the counts when ``--goodput`` is given, else None."""
    return GOODPUT if GOODPUT.specs else None


def _run_seconds(environment: Any) -> float | None:
    stats = getattr(getattr(environment, "runner", None), "stats", None) or getattr(environment, "stats", None)
    start, last = getattr(stats, "start_time", None), getattr(stats, "last_request_timestamp", None)
    return (last - start) if start and last and last > start else None


def goodput_rows(environment: Any) -> list[dict[str, str]]:
    """Rows of ``_goodput.csv`` so far (merged over the workers on a master)."""
    return GOODPUT.rows(_run_seconds(environment))


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    if GOODPUT.specs:
        data[goodput.MESSAGE_KEY] = GOODPUT.drain()


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    GOODPUT.merge(data.get(goodput.MESSAGE_KEY) or ())


def _on_reset_stats(**_kw: Any) -> None:
    GOODPUT.clear()


def _on_test_start(environment: Any, **_kw: Any) -> None:
    _configure_goodput(environment)
    if hdr.is_worker(environment):
        return
    problem = options_problem(getattr(environment, "parsed_options", None))
    if problem:  # a value typed into the web UI: stop this run, keep the UI
        logger.error("%s; the run is stopped", problem)
        runner = getattr(environment, "runner", None)
        _state["slos"] = []
        if runner is not None:
            import gevent

            gevent.spawn(runner.stop)
        return
    _state.update(slos=_environment_slos(environment), results=[], failing_since={}, aborted=None, final=None,
                  abort_after=abort_after_seconds(declared.value(environment, "slo_abort_after")))


def write_goodput_csv(environment: Any) -> str | None:
    prefix = hdr.csv_prefix(environment)
    if not prefix or not GOODPUT.specs:
        return None
    path = f"{prefix}{goodput.CSV_SUFFIX}"
    try:
        write_csv_atomic(path, goodput.CSV_COLUMNS, goodput_rows(environment))
    except OSError as exc:
        logger.error("loadkit: could not write %s: %s", path, exc)
        return None
    return path


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    if hdr.is_worker(environment):
        return
    write_goodput_csv(environment)
    if _state["slos"] and not _sweeping(environment):
        write_csv(environment, judge(environment))


def _on_quitting(environment: Any, **_kw: Any) -> None:
    if hdr.is_worker(environment):
        return
    write_goodput_csv(environment)
    _state["goodput"] = goodput_rows(environment) if GOODPUT.specs else []
    if not _state["slos"] or _sweeping(environment):
        return
    results = judge(environment)
    _state["final"] = results
    write_csv(environment, results)
    failed = [r for r in results if not r.passed]
    if failed and environment.process_exit_code is None:
        environment.process_exit_code = EXIT_SLO_FAILED


def _on_quit(**_kw: Any) -> None:
    """After Locust's final table: goodput, then one line per SLO and the verdict."""
    if _state.get("quiet"):
        return
    if _state.get("goodput"):
        lines = ["loadkit goodput (requests that succeeded and met every target)", *goodput.console_lines(_state["goodput"])]
        print("\n".join(lines) + "\n", flush=True)
    results = _state["final"]
    if not results:
        return
    failed = sum(not r.passed for r in results)
    lines = ["loadkit SLOs (exact figures" + (", merged over the workers)" if _state.get("master") else ")")]
    lines += [r.line() for r in results]
    if _state["aborted"]:
        lines.append(f"run stopped early (--slo-abort-after): {_state['aborted']}")
    lines.append(f"SLO verdict: {failed} of {len(results)} failed" + (f" (exit code {EXIT_SLO_FAILED})" if failed else ""))
    print("\n".join(lines) + "\n", flush=True)


def install(events_: Any) -> bool:
    """Register the listeners (called once by :func:`loadkit.plugin.install`)."""
    return hdr.add_listeners_once(events_, "_loadkit_slo_installed", {
        "test_start": _on_test_start, "test_stop": _on_test_stop, "quitting": _on_quitting, "quit": _on_quit,
        "report_to_master": _on_report_to_master, "worker_report": _on_worker_report, "reset_stats": _on_reset_stats,
    }) is not None


def start(environment: Any) -> None:
    """At ``init`` (from :func:`loadkit.plugin.install`): refuse bad options (exit 2) and, on a master
    or local runner, start the live check."""
    options = getattr(environment, "parsed_options", None)
    problem = options_problem(options)
    if problem:
        sys.stderr.write(problem + "\n")
        raise SystemExit(2)
    runner = getattr(environment, "runner", None)
    if runner is None or hdr.is_worker(environment):
        return
    from locust.runners import MasterRunner

    _state["master"] = isinstance(runner, MasterRunner)
    _state["quiet"] = bool(getattr(options, "json", False))  # stdout is Locust's JSON then
    if slo.split_expressions(getattr(options, "slo", None)) or not getattr(options, "headless", False):
        import gevent

        gevent.spawn(_live_loop, environment)


_declare_rules()
