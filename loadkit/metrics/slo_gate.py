"""``--slo`` / ``--slo-abort-after`` in a Locust run: judge the SLOs, write ``_slo.csv``, set the exit code.

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
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from locust import events

from loadkit.metrics import hdr, slo
from loadkit.metrics.histograms import write_csv_atomic

logger = logging.getLogger("loadkit.slo")

#: process exit code when at least one SLO failed (Locust: 1 = failures/errors, 2 = bad options or an
#: unhandled error, -1 = bad setup; loadkit: 3 = a worker lost its master)
EXIT_SLO_FAILED = 4
LIVE_INTERVAL = 2.0

_state: dict[str, Any] = {"slos": [], "results": [], "failing_since": {}, "aborted": None, "final": None}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # parser.add_argument itself (not a group's): only that shows the option in the web UI form
    parser.add_argument(
        "--slo", action="append", default=None, metavar="EXPR",
        help="service level objective, e.g. 'ttft:p95<500ms' (repeatable, or several separated by ';'): "
             "[TYPE:]NAME:STAT OP NUMBER[UNIT], STAT pNN|median|mean|min|max|fail_rate|rps, UNIT ms|s|%%|/s; "
             f"judged on the exact merged figures at the end; any failing SLO makes the exit code {EXIT_SLO_FAILED}")
    parser.add_argument(
        "--slo-abort-after", default="", metavar="DURATION",
        help="stop the run once an SLO has failed continuously this long, e.g. 30s or 2m (default: never)")


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
        abort = abort_after_seconds(getattr(options, "slo_abort_after", ""))
    except ValueError as exc:
        return f"loadkit: {exc}"
    if abort is not None and not slos:
        return "loadkit: --slo-abort-after needs at least one --slo"
    return None


def _environment_slos(environment: Any) -> list[slo.Slo]:
    return slo.parse_all(getattr(getattr(environment, "parsed_options", None), "slo", None))


def figures(environment: Any) -> slo.Figures:
    """This process's exact figures: merged over the workers on a master."""
    counts: dict[tuple[str, str], tuple[int, int, float]] = {}
    runner = getattr(environment, "runner", None)
    stats = getattr(runner, "stats", None) or getattr(environment, "stats", None)
    for (name, method), entry in (getattr(stats, "entries", None) or {}).items():
        counts[(str(method), str(name))] = (entry.num_requests, entry.num_failures, entry.total_rps)
    return slo.Figures(requests=dict(hdr.STORE.ops), metrics=dict(hdr.METRICS.ops), counts=counts)


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
        if _state["final"] or runner.state not in ("spawning", "running"):
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


def _on_test_start(environment: Any, **_kw: Any) -> None:
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
                  abort_after=abort_after_seconds(getattr(environment.parsed_options, "slo_abort_after", "")))


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    if hdr.is_worker(environment) or not _state["slos"]:
        return
    write_csv(environment, judge(environment))


def _on_quitting(environment: Any, **_kw: Any) -> None:
    if hdr.is_worker(environment) or not _state["slos"]:
        return
    results = judge(environment)
    _state["final"] = results
    write_csv(environment, results)
    failed = [r for r in results if not r.passed]
    if failed and environment.process_exit_code is None:
        environment.process_exit_code = EXIT_SLO_FAILED


def _on_quit(**_kw: Any) -> None:
    """After Locust's final table: one line per SLO, then the verdict."""
    results = _state["final"]
    if not results or _state.get("quiet"):
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
