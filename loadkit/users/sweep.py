"""``--sweep``: find the highest arrival rate at which every ``--slo`` still holds, in one run.

Why: "how much does my service hold?" is answered today by hand with several runs. GuideLLM's
sweep is the model: a **synchronous** baseline (one iteration at a time: the rate of an idle
server), a **throughput** stage (every user back to back: the saturated rate), then
``--sweep-rates`` **constant** arrival rates evenly spaced above the baseline up to the throughput
(:func:`loadkit.pacing.sweep_rates`), each an open-model stage of ``--sweep-stage-time``.

Each stage: hold the pacing (:mod:`loadkit.users.pacing`) until the previous stage's iterations
have finished (its queue drained), switch, reset every figure (Locust's stats, the exact
histograms, the counters, goodput: the ``reset_stats`` event; a closed stage first runs
``SETTLE`` s), run the stage, then judge every ``--slo`` on that stage's figures alone. A constant stage **passes** when every SLO held and the users started at
least 95 % of the offered iterations (otherwise the load generator, not the server, fell short:
add users). The **capacity** is the highest passing constant rate.

Output: one console line per stage and the capacity, ``<prefix>_sweep.csv`` (one row per stage;
columns :data:`CSV_COLUMNS` then one column per SLO with its measured value), the report's knee
chart. Exit code 0 when a capacity was found, else 4 (:data:`loadkit.metrics.slo_gate.EXIT_SLO_FAILED`).
The run ends after the last stage (``--run-time`` is not needed; a shorter one cuts the sweep).
Single process only (a local runner): a distributed sweep is not supported.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from locust import events

from loadkit import pacing
from loadkit import options as declared
from loadkit.metrics import hdr, slo, slo_gate
from loadkit.metrics.histograms import write_csv_atomic

logger = logging.getLogger("loadkit.sweep")

CSV_SUFFIX = pacing.SWEEP_SUFFIX
CSV_COLUMNS = pacing.SWEEP_COLUMNS
SETTLE = 1.0  # seconds a closed stage runs before its figures count (its users ramp up together)
DRAIN_MAX = 60.0  # seconds at most to wait for the previous stage's iterations to finish
MIN_SHARE = 0.95  # a constant stage must start this share of its offered iterations

_state: dict[str, Any] = {"stages": [], "capacity": None, "done": False, "greenlet": None}


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--sweep", action="store_true", default=False,
                        help="capacity sweep: synchronous baseline, throughput, then --sweep-rates constant arrival "
                             "rates; reports the highest rate at which every --slo held (<prefix>_sweep.csv)")
    parser.add_argument("--sweep-rates", default="6", metavar="N",
                        help="number of constant-rate stages of --sweep (default 6)")
    parser.add_argument("--sweep-stage-time", default="10s", metavar="DURATION",
                        help="duration of each --sweep stage (default 10s)")


def _declare_rules() -> None:
    from loadkit.options import rule

    def rates(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"{text!r}: expected a whole number >= 1") from None
        if n < 1:
            raise ValueError(f"{text!r}: expected a whole number >= 1")
        return n

    def stage_time(text: str) -> float:
        try:
            seconds = pacing.parse_duration(text, "--sweep-stage-time")
        except pacing.PacingError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
        if seconds < 1:
            raise ValueError(f"{text!r}: at least 1s")
        return seconds

    rule("--sweep-rates", rates)
    rule("--sweep-stage-time", stage_time)


_declare_rules()


def settings(options: Any) -> tuple[int, float] | None:
    """(constant stages, stage seconds) of ``--sweep`` (None: no sweep); PacingError when bad."""
    if not declared.of(options, "sweep"):
        return None
    text = str(declared.of(options, "sweep_rates")).strip()
    try:
        n = int(text)
    except ValueError:
        raise pacing.PacingError(f"--sweep-rates {text!r}: expected a whole number >= 1") from None
    if n < 1:
        raise pacing.PacingError(f"--sweep-rates {text!r}: expected a whole number >= 1")
    seconds = pacing.parse_duration(str(declared.of(options, "sweep_stage_time")), "--sweep-stage-time")
    if seconds < 1:
        raise pacing.PacingError("--sweep-stage-time must be at least 1s")
    return n, seconds


def options_problem(options: Any, master: bool = False) -> str | None:
    """What is wrong with the ``--sweep*`` values (one line), or None."""
    try:
        got = settings(options)
    except pacing.PacingError as exc:
        return f"loadkit: {exc}"
    if got is None:
        return None
    if master or getattr(options, "master", False):
        return "loadkit: --sweep runs in one process (no --master/--worker): each stage must be judged alone"
    if declared.of(options, "arrival_rate") or declared.of(options, "arrival_stages"):
        return "loadkit: --sweep chooses the arrival rates itself: drop --arrival-rate/--arrival-stages"
    try:
        if not slo.parse_all(getattr(options, "slo", None)):
            return "loadkit: --sweep needs at least one --slo (the capacity is the highest rate at which every SLO held)"
    except ValueError:
        return None  # reported by the SLO check
    return None


def active(options: Any) -> bool:
    return bool(declared.of(options, "sweep"))


def results() -> dict[str, Any]:
    """The stages so far and the capacity (for the web UI or a caller)."""
    return {"stages": list(_state["stages"]), "capacity": _state["capacity"], "done": _state["done"]}


# ------------------------------------------------------------------------------------ the stages


def _subject_percentiles(slos: list[slo.Slo], figures: slo.Figures) -> tuple[float, float, float] | None:
    """p50/p95/p99 (ms) of the first SLO's latency subject, for the knee chart."""
    for s in slos:
        if s.stat in ("fail_rate", "rps", "goodput"):
            continue
        for store in (figures.metrics, figures.requests):
            keys = [k for k in store if k[1] == s.name and (s.type is None or k[0] == s.type)]
            if len(keys) == 1 and store[keys[0]].count:
                pct = store[keys[0]].percentiles_us()
                return pct[50] / 1000.0, pct[95] / 1000.0, pct[99] / 1000.0
    return None


def _reset(environment: Any) -> None:
    runner = environment.runner
    runner.stats.reset_all()
    environment.events.reset_stats.fire()


def _run_stage(environment: Any, name: str, kind: str, offered: float | None, seconds: float) -> dict[str, Any]:
    import gevent

    from loadkit.users import pacing as pacing_run

    pacer = pacing_run.PACER
    pacing_run.ensure_installed(environment)
    pacing_run.arm()  # users asking for a start time wait ...
    pacer.hold()  # ... and none is handed out until this stage begins
    deadline = time.monotonic() + DRAIN_MAX
    while pacer.inflight > 0 and time.monotonic() < deadline:  # the previous stage's iterations finish
        gevent.sleep(0.05)
    if kind == "constant":
        opts = type("O", (), {"arrival_rate": f"{offered}", "arrival_stages": "",
                              **{dest: declared.value(environment, dest)
                                 for dest in ("arrival_pattern", "arrival_seed", "arrival_max_lag")}})()
        pacer.begin(pacing_run.Settings(opts), 1, 0)
        _reset(environment)
        pacer._start(time.perf_counter())  # every user is waiting: t = 0 is now
        pacing_run.release_waiting()
    else:
        pacer.begin_closed(1 if kind == "synchronous" else None)
        pacing_run.release_waiting()
        gevent.sleep(SETTLE)  # the closed loop reaches its steady state
        _reset(environment)
    started0, dropped0 = pacer.started, pacer.dropped
    t0 = time.perf_counter()
    gevent.sleep(seconds)
    elapsed = time.perf_counter() - t0
    if kind == "constant":
        pacer.sweep(time.perf_counter())
    started, dropped = pacer.started - started0, pacer.dropped - dropped0
    figures = slo_gate.figures(environment)
    results_ = slo.evaluate_all(slo_gate.slos(), figures)
    achieved = started / elapsed if elapsed > 0 else 0.0
    lag = hdr.METRICS.ops.get((pacing_run.TYPE, pacing_run.LAG))
    pct = _subject_percentiles(slo_gate.slos(), figures)
    gp = [(g, t) for (g, t) in figures.goodput.values()]
    failed = [r for r in results_ if not r.passed]
    short = kind == "constant" and offered and started < MIN_SHARE * offered * elapsed
    detail = "; ".join(r.line() for r in failed)
    if short:
        detail = (f"only {started} of {offered * elapsed:.0f} offered iterations started (add users); " + detail).rstrip("; ")
    stage = {
        "Stage": name, "Kind": kind, "offered": offered if offered is not None else achieved,
        "kind": kind, "passed": not failed and not short,
        "Offered/s": f"{offered:.3f}" if offered is not None else "",
        "Achieved/s": f"{achieved:.3f}", "Iterations": str(started), "Dropped": str(dropped),
        "Lag p99 ms": f"{lag.percentiles_us()[99] / 1000:.3f}" if lag is not None and lag.count else "",
        "p50 ms": f"{pct[0]:.3f}" if pct else "", "p95 ms": f"{pct[1]:.3f}" if pct else "",
        "p99 ms": f"{pct[2]:.3f}" if pct else "",
        "Goodput %": f"{100.0 * sum(g for g, _ in gp) / sum(t for _, t in gp):.2f}" if gp and sum(t for _, t in gp) else "",
        "Passed": "yes" if not failed and not short else "no", "Detail": detail,
    }
    for r in results_:
        stage[r.slo.text] = "" if r.measured is None else r.row()["Measured"]
    return stage


def _line(stage: dict[str, Any]) -> str:
    offered = f"offered {stage['Offered/s']}/s, " if stage["Offered/s"] else ""
    return (f"loadkit sweep {stage['Stage']:<12} {offered}achieved {stage['Achieved/s']}/s, "
            f"{stage['Iterations']} iterations, {stage['Dropped']} dropped: "
            + ("every SLO held" if stage["Passed"] == "yes" else f"FAILED ({stage['Detail']})"))


def _controller(environment: Any, n: int, seconds: float) -> None:
    import gevent

    from loadkit.users import pacing as pacing_run

    runner = environment.runner
    while runner.state == "spawning" or (runner.spawning_greenlet is not None and not runner.spawning_greenlet.dead):
        gevent.sleep(0.1)
    deadline = time.monotonic() + 30.0  # users finish on_start and wait for the first stage
    while pacing_run.PACER.asking < runner.user_count and time.monotonic() < deadline:
        gevent.sleep(0.05)
    stages: list[dict[str, Any]] = _state["stages"]
    try:
        for name, kind in (("synchronous", "synchronous"), ("throughput", "throughput")):
            stages.append(_run_stage(environment, name, kind, None, seconds))
            print(_line(stages[-1]), flush=True)
        rates = pacing.sweep_rates(float(stages[0]["Achieved/s"]), float(stages[1]["Achieved/s"]), n)
        for i, rate in enumerate(rates, start=1):
            stages.append(_run_stage(environment, f"constant-{i}", "constant", round(rate, 3), seconds))
            print(_line(stages[-1]), flush=True)
    except gevent.GreenletExit:
        raise
    except Exception:  # noqa: BLE001 - report what was measured, never a silent hang
        logger.exception("loadkit sweep: a stage failed; reporting the stages done so far")
    _finish(environment)


def _finish(environment: Any) -> None:
    stages = _state["stages"]
    _state["capacity"] = pacing.capacity(stages)
    _state["done"] = True
    write_csv(environment)
    cap = _state["capacity"]
    print(f"loadkit sweep: capacity {cap:.2f}/s (the highest constant arrival rate at which every SLO held)"
          if cap is not None else "loadkit sweep: no constant arrival rate met every SLO", flush=True)
    if cap is None and environment.process_exit_code is None:
        environment.process_exit_code = slo_gate.EXIT_SLO_FAILED
    import gevent

    options = environment.parsed_options
    if getattr(options, "headless", False) or getattr(options, "autostart", False):
        gevent.spawn(environment.runner.quit)
    else:
        gevent.spawn(environment.runner.stop)


def write_csv(environment: Any) -> str | None:
    prefix = hdr.csv_prefix(environment)
    stages = _state["stages"]
    if not prefix or not stages:
        return None
    columns = [*CSV_COLUMNS, *(s.text for s in slo_gate.slos())]
    path = f"{prefix}{CSV_SUFFIX}"
    try:
        write_csv_atomic(path, columns, [{c: st.get(c, "") for c in columns} for st in stages])
    except OSError as exc:
        logger.error("loadkit: could not write %s: %s", path, exc)
        return None
    return path


def _on_test_start(environment: Any, **_kw: Any) -> None:
    options = getattr(environment, "parsed_options", None)
    got = None
    try:
        got = settings(options)
    except pacing.PacingError:
        pass
    if got is None or hdr.is_worker(environment):
        return
    import gevent

    from loadkit.users import pacing as pacing_run

    _state.update(stages=[], capacity=None, done=False)
    pacing_run.ensure_installed(environment)
    pacing_run.arm()
    pacing_run.PACER.hold()  # no user starts an iteration before the first stage
    _state["greenlet"] = gevent.spawn(_controller, environment, *got)


def _on_test_stop(environment: Any, **_kw: Any) -> None:
    g = _state.get("greenlet")
    if g is not None and not g.dead and g is not __import__("gevent").getcurrent():
        g.kill(block=False)
        if _state["stages"] and not _state["done"]:
            _state["capacity"] = pacing.capacity(_state["stages"])
            write_csv(environment)


def install(events_: Any) -> bool:
    return hdr.add_listeners_once(events_, "_loadkit_sweep_installed", {
        "test_start": _on_test_start, "test_stop": _on_test_stop,
    }) is not None


def start(environment: Any) -> None:
    """At ``init``: a bad ``--sweep*`` combination is one line on stderr and exit 2."""
    import sys

    from locust.runners import MasterRunner

    options = getattr(environment, "parsed_options", None)
    problem = options_problem(options, isinstance(getattr(environment, "runner", None), MasterRunner))
    if problem:
        sys.stderr.write(problem + "\n")
        raise SystemExit(2)
