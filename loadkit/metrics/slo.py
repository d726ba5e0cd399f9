"""Service level objectives (``--slo``): parse ``NAME:STAT<OP>VALUE[UNIT]`` and judge it on exact figures.

Why: a load test in CI must end in a yes or no (k6's ``thresholds``). loadkit has exact,
worker-merged HDR histograms of every request (:data:`loadkit.metrics.hdr.STORE`) and every loadkit
metric (:data:`loadkit.metrics.hdr.METRICS`), so an SLO is judged on those, never on Locust's
rounded percentiles or on one worker's share.

Grammar (one expression; several are separated by ``;``)::

    [TYPE:]NAME:STAT OP NUMBER[UNIT]
    STAT = pNN[.N] | median | mean | min | max | fail_rate | rps | goodput
    OP   = <  <=  >  >=
    UNIT = ms | s           (percentiles, median, mean, min, max of a latency)
         | %                (fail_rate, goodput; a bare number is a fraction, 0.01 = 1 %)
         | /s               (rps; optional)

``NAME`` is a request name (``sendmsg``, ``chatMessage``, ``/api/auth/login``; ``Aggregated`` =
all requests, ``ktb:Aggregated`` = all requests of one type) or a loadkit metric name (``ttft``, ``delivery``, ``chunks``; see
:mod:`loadkit.metrics.catalog`). ``TYPE`` (``ktb``, ``chldo``, ``POST``, ...) is needed only when a
name exists under several types, or when the name itself holds a ``:``. A number without a unit is
in the figure's own unit: milliseconds for requests and latency metrics, the catalog unit for
count and rate metrics.

Which figures (the same on a single process and on a Locust master, after merging its workers):

* percentiles, median, mean, min, max: the request's or metric's exact HDR histogram (failed
  requests included, as in Locust's own columns; percentiles within 0.1 %);
* ``fail_rate``: failures / requests of Locust's merged request statistics;
* ``rps``: Locust's merged "Requests/s" of the row (requests / (last request − start));
* ``goodput``: good / requests of the operation's ``--goodput`` targets (:mod:`loadkit.metrics.goodput`).

An SLO with no samples fails ("no samples"): a gate that measured nothing must not pass.

Pure code (no Locust, no gevent): the report and the tests import it.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from loadkit.metrics.catalog import LATENCY, lookup
from loadkit.metrics.histograms import AGGREGATED_NAME, OpHistogram

OPS = ("<", "<=", ">", ">=")
PASS, FAIL = "PASS", "FAIL"
CSV_SUFFIX = "_slo.csv"
CSV_COLUMNS = ("SLO", "Type", "Name", "Stat", "Op", "Target", "Measured", "Unit", "Result", "Detail")
GRAMMAR = ("[TYPE:]NAME:STAT OP NUMBER[UNIT], e.g. ttft:p95<500ms; STAT: pNN[.N], median, mean, min, max, "
           "fail_rate, rps, goodput; OP: < <= > >=; UNIT: ms, s, % or /s")

_EXPR = re.compile(
    r"^\s*(?P<subject>[^<>=]+?)\s*:\s*(?P<stat>p\d+(?:\.\d+)?|median|mean|min|max|fail_rate|rps|goodput)\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|%|/s)?\s*$"
)
_TIME_STATS = ("median", "mean", "min", "max")


class SloError(ValueError):
    """An expression that does not follow the grammar; the text is the one line to show."""


@dataclass(frozen=True)
class Slo:
    """One parsed objective. ``target`` is in the base unit: ms (times), a fraction (fail_rate),
    1/s (rps) or the catalog unit of a count/rate metric; ``unit`` is the unit it was written in."""

    text: str
    type: str | None
    name: str
    stat: str
    op: str
    target: float
    unit: str
    percentile: float | None = None

    @property
    def subject(self) -> str:
        return f"{self.type}:{self.name}" if self.type else self.name

    def holds(self, value: float) -> bool:
        t = self.target
        return {"<": value < t, "<=": value <= t, ">": value > t, ">=": value >= t}[self.op]

    def shown(self, value: float) -> float:
        """A base-unit ``value`` in the unit the target was written in."""
        if self.unit == "s":
            return value / 1000.0
        if self.unit == "%":
            return value * 100.0
        return value


def parse(text: str) -> Slo:
    """One expression → :class:`Slo`; :class:`SloError` with a one-line reason otherwise."""
    m = _EXPR.match(text or "")
    if not m:
        raise SloError(f"--slo {text!r}: expected {GRAMMAR}")
    subject, stat, op, unit = m["subject"].strip(), m["stat"], m["op"], m["unit"] or ""
    type_, sep, name = subject.partition(":")
    if not sep:
        type_, name = "", subject
    type_, name = type_.strip(), name.strip()
    if not name or (sep and not type_):
        raise SloError(f"--slo {text!r}: no name before ':{stat}'; expected {GRAMMAR}")
    number = float(m["num"])
    if not math.isfinite(number) or number < 0:
        raise SloError(f"--slo {text!r}: the target must be a number >= 0")
    percentile = None
    if stat.startswith("p"):
        percentile = float(stat[1:])
        if not 0 < percentile <= 100:
            raise SloError(f"--slo {text!r}: a percentile must be p0 < pNN <= p100")
    if stat in ("fail_rate", "goodput"):
        if unit not in ("", "%"):
            raise SloError(f"--slo {text!r}: {stat} takes % or a fraction (0.01 = 1 %), not {unit!r}")
        target = number / 100.0 if unit == "%" else number
        if target > 1:
            raise SloError(f"--slo {text!r}: {stat} is at most 100 % (a bare number is a fraction)")
    elif stat == "rps":
        if unit not in ("", "/s"):
            raise SloError(f"--slo {text!r}: rps takes no unit or /s, not {unit!r}")
        target, unit = number, "/s"
    else:
        if unit in ("%", "/s"):
            raise SloError(f"--slo {text!r}: {unit!r} is for fail_rate, goodput and rps; {stat} takes ms, s or no unit")
        if unit:
            m_ = lookup(type_, name) if type_ else None
            if m_ is not None and m_.kind != LATENCY:
                raise SloError(f"--slo {text!r}: {subject} is a {m_.kind} ({m_.unit}), not a time: drop {unit!r}")
        target = number * 1000.0 if unit == "s" else number
    return Slo(text.strip(), type_ or None, name, stat, op, target, unit, percentile)


def split_expressions(value: Any) -> list[str]:
    """The ``--slo`` option's value (None, one string, or a list from repeating the option; each
    string may hold several expressions separated by ``;``) → one string per expression."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(";") if part.strip()]


def parse_all(value: Any) -> list[Slo]:
    """Every expression of the option's value; the first bad one raises :class:`SloError`."""
    return [parse(text) for text in split_expressions(value)]


# ------------------------------------------------------------------------------------ evaluation


@dataclass
class Figures:
    """What an SLO is judged on: histograms of requests and of loadkit metrics by ``(type, name)``,
    ``counts[(type, name)] = (requests, failures, requests per second)`` of each request, and
    ``goodput[(type, name)] = (good, judged)`` of each ``--goodput`` operation."""

    requests: Mapping[tuple[str, str], OpHistogram] = field(default_factory=dict)
    metrics: Mapping[tuple[str, str], OpHistogram] = field(default_factory=dict)
    counts: Mapping[tuple[str, str], tuple[int, int, float]] = field(default_factory=dict)
    goodput: Mapping[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    slo: Slo
    passed: bool
    measured: float | None  # base unit; None without samples
    detail: str = ""

    @property
    def status(self) -> str:
        return PASS if self.passed else FAIL

    def line(self) -> str:
        """The console line: ``PASS ttft p95 312.4 ms < 500 ms``."""
        s = self.slo
        measured = "(" + (self.detail or "no samples") + ")" if self.measured is None else _with_unit(
            s.shown(self.measured), s.unit)
        line = f"{self.status} {s.subject} {s.stat} {measured} {s.op} {_with_unit(s.shown(s.target), s.unit, True)}"
        if self.measured is not None and self.detail:
            line += f" ({self.detail})"
        return line

    def row(self) -> dict[str, str]:
        s = self.slo
        return {
            "SLO": s.text, "Type": s.type or "", "Name": s.name, "Stat": s.stat, "Op": s.op,
            "Target": f"{s.shown(s.target):g}",
            "Measured": "" if self.measured is None else _number(s.shown(self.measured)),
            "Unit": s.unit, "Result": self.status, "Detail": self.detail,
        }


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _with_unit(value: float, unit: str, as_written: bool = False) -> str:
    text = f"{value:g}" if as_written else _number(value)
    if unit in ("%", "/s"):
        return f"{text}{unit}"
    return f"{text} {unit}" if unit else text


def _stat_value(op: OpHistogram, slo: Slo) -> float:
    """A histogram's statistic in its base unit (values are stored × 1000: µs for ms)."""
    if slo.percentile is not None or slo.stat == "median":
        p = 50.0 if slo.stat == "median" else float(slo.percentile)  # type: ignore[arg-type]
        value = op.hist.get_value_at_percentile(p)
        return min(max(value, op.min_us), op.max_us) / 1000.0
    if slo.stat == "mean":
        return op.sum_us / op.count / 1000.0
    if slo.stat == "min":
        return op.min_us / 1000.0
    return op.max_us / 1000.0


def _matches(keys: Iterable[tuple[str, str]], slo: Slo) -> list[tuple[str, str]]:
    return sorted(k for k in keys if k[1] == slo.name and (slo.type is None or k[0] == slo.type))


def evaluate(slo: Slo, figures: Figures) -> Result:
    """Judge one SLO; no samples, an ambiguous name or a statistic a metric does not have fail."""
    if slo.stat == "goodput":
        found_g = _matches(figures.goodput.keys(), slo)
        if len(found_g) > 1:
            return Result(slo, False, None, "ambiguous, write " + " or ".join(f"{t}:{n}" for t, n in found_g))
        good, total = figures.goodput.get(found_g[0], (0, 0)) if found_g else (0, 0)
        if not total:
            return Result(slo, False, None, "no samples (give its targets with --goodput)")
        value = good / total
        return Result(slo, slo.holds(value), value)
    counting = slo.stat in ("fail_rate", "rps")
    if slo.name == AGGREGATED_NAME:  # all requests (of TYPE, when given)
        counts = [c for k, c in figures.counts.items() if slo.type is None or k[0] == slo.type]
        if counting:
            n = sum(c[0] for c in counts)
            if not n:
                return Result(slo, False, None, "no samples")
            if slo.stat == "fail_rate":
                value = sum(c[1] for c in counts) / n
            else:
                value = sum(c[2] for c in counts)
            return Result(slo, slo.holds(value), value)
        total = OpHistogram()
        for k, op in figures.requests.items():
            if slo.type is None or k[0] == slo.type:
                total.add(op)
        if not total.count:
            return Result(slo, False, None, "no samples")
        value = _stat_value(total, slo)
        return Result(slo, slo.holds(value), value)
    requests = _matches(figures.requests.keys() | figures.counts.keys(), slo)
    metrics = _matches(figures.metrics.keys(), slo)
    found = requests + [k for k in metrics if k not in requests]
    if len(found) > 1:
        options = " or ".join(f"{t}:{n}" for t, n in found)
        return Result(slo, False, None, f"ambiguous, write {options}")
    if not found:
        known = sorted({n for _t, n in (*figures.requests, *figures.metrics, *figures.counts)})
        near = difflib.get_close_matches(slo.name, known, n=3)
        return Result(slo, False, None, "no samples" + (f"; did you mean {', '.join(near)}?" if near else ""))
    key = found[0]
    if counting:
        if key not in requests:
            return Result(slo, False, None, f"{slo.stat} is a figure of requests; {slo.name} is a metric")
        n, failures, rps = figures.counts.get(key, (0, 0, 0.0))
        if not n:
            return Result(slo, False, None, "no samples")
        value = failures / n if slo.stat == "fail_rate" else rps
        return Result(slo, slo.holds(value), value)
    op = (figures.requests if key in requests else figures.metrics).get(key)
    if op is None or not op.count:
        return Result(slo, False, None, "no samples")
    value = _stat_value(op, slo)
    return Result(slo, slo.holds(value), value)


def evaluate_all(slos: Iterable[Slo], figures: Figures) -> list[Result]:
    return [evaluate(s, figures) for s in slos]
