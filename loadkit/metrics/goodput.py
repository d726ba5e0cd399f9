"""Goodput (``--goodput``): the share and rate of requests that met *every* per-request target.

Why: a p95 says how slow the slowest 5 % were, not how many requests a user would call good. LLM
serving benchmarks (vLLM, GuideLLM, llmperf) report goodput — requests meeting all their latency
targets at once (time to first token *and* total time) — because a turn with a fast first token
and a 30 s answer is not good, and neither is one whose figures are each fine in a percentile of
its own but never together.

Grammar (several operations separated by ``;``)::

    [TYPE:]OPERATION: FIGURE<NUMBER[UNIT], FIGURE<=NUMBER[UNIT], ...
    e.g.  sendmsg: ttft<500ms, sendmsg<5s
          chatMessage: chatMessage<200ms

``OPERATION`` is a request name; each ``FIGURE`` is that request's own time (its name) or a latency
metric recorded for the same request (``ttft``, ``time_to_start``, ``som_to_eom``, ``first_voice``
of a chldo turn); ``UNIT`` ms (default) or s. A request is **good** when it succeeded and every
figure met its target; a figure the request does not have (no first token) is not met.

``Goodput`` = good / requests of that operation; ``good/s`` = good requests / run time (the same
time base as Locust's Requests/s). Counted on every process, shipped in Locust's worker report and
summed on the master (:mod:`loadkit.metrics.slo_gate` wires it).

Pure code (no Locust): the report and the tests import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

CSV_SUFFIX = "_goodput.csv"
CSV_COLUMNS = ("Type", "Name", "Targets", "Requests", "Good", "Goodput %", "Good/s", "Requests/s")
MESSAGE_KEY = "loadkit_goodput"
GRAMMAR = "[TYPE:]OPERATION: FIGURE<NUMBER[ms|s], ..., e.g. 'sendmsg: ttft<500ms, sendmsg<5s'"

_TARGET = re.compile(r"^\s*(?P<figure>[^<>=,\s]+)\s*(?P<op><=|<)\s*(?P<num>\d+\.?\d*|\.\d+)\s*(?P<unit>ms|s)?\s*$")


class GoodputError(ValueError):
    """A ``--goodput`` value that does not follow the grammar; the text is the one line to show."""


@dataclass(frozen=True)
class Target:
    figure: str
    op: str  # "<" or "<="
    limit_ms: float
    text: str

    def met(self, value: float | None) -> bool:
        if value is None or value != value:  # missing or NaN
            return False
        return value < self.limit_ms if self.op == "<" else value <= self.limit_ms


@dataclass(frozen=True)
class Spec:
    type: str | None
    name: str
    targets: tuple[Target, ...]

    @property
    def own_only(self) -> bool:
        """True when every target is on the request's own time: judged from the request event."""
        return all(t.figure == self.name for t in self.targets)

    @property
    def text(self) -> str:
        return ", ".join(t.text for t in self.targets)

    def good(self, ok: bool, figures: Mapping[str, float | None]) -> bool:
        return ok and all(t.met(figures.get(t.figure)) for t in self.targets)


def parse(value: Any) -> dict[str, Spec]:
    """The option's value (None, a string or a list of strings) → ``{operation: Spec}``."""
    if value is None:
        return {}
    items = [value] if isinstance(value, str) else list(value)
    specs: dict[str, Spec] = {}
    for part in (p.strip() for item in items for p in str(item).split(";")):
        if not part:
            continue
        head, sep, body = part.rpartition(":")
        if not sep or not head.strip():
            raise GoodputError(f"--goodput {part!r}: expected {GRAMMAR}")
        type_, tsep, name = head.strip().partition(":")
        if not tsep:
            type_, name = "", type_
        name, type_ = name.strip(), type_.strip()
        if not name:
            raise GoodputError(f"--goodput {part!r}: no operation before ':'; expected {GRAMMAR}")
        targets = []
        for t in body.split(","):
            m = _TARGET.match(t)
            if not m:
                raise GoodputError(f"--goodput {part!r}: target {t.strip()!r} is not FIGURE<NUMBER[ms|s] "
                                   "(goodput targets are upper bounds on times)")
            limit = float(m["num"]) * (1000.0 if m["unit"] == "s" else 1.0)
            targets.append(Target(m["figure"], m["op"], limit, f"{m['figure']}{m['op']}{m['num']}{m['unit'] or 'ms'}"))
        if name in specs:
            raise GoodputError(f"--goodput: {name!r} is given twice; put all its targets in one 'OP: a<.., b<..'")
        specs[name] = Spec(type_ or None, name, tuple(targets))
    return specs


class GoodputCounts:
    """Good and total requests per ``(type, name)`` in this process (a worker drains its deltas)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}
        self.specs: dict[str, Spec] = {}

    def configure(self, specs: Mapping[str, Spec]) -> None:
        self.specs = dict(specs)

    def judge(self, request_type: str, name: str, ok: bool, figures: Mapping[str, float | None]) -> None:
        """Count one request of ``name`` (``ok``: it succeeded) with its figures in ms."""
        spec = self.specs.get(name)
        if spec is None or (spec.type is not None and spec.type != request_type):
            return
        c = self.counts.get((request_type, name))
        if c is None:
            c = self.counts[(request_type, name)] = [0, 0]
        c[1] += 1
        if spec.good(ok, figures):
            c[0] += 1

    def judge_phases(self, request_type: str, name: str, ok: bool, figures: Mapping[str, float | None]) -> None:
        """A user's call with a request's figures together (its own time and its phases); only
        operations with phase targets are counted here (the others by :meth:`on_request`)."""
        spec = self.specs.get(name)
        if spec is not None and not spec.own_only:
            self.judge(request_type, name, ok, figures)

    def on_request(self, request_type: str = "", name: str = "", response_time: Any = None,
                   exception: Any = None, **_kw: Any) -> None:
        """Locust ``request`` listener: operations whose targets are all on their own time."""
        spec = self.specs.get(name)
        if spec is None or not spec.own_only:
            return
        self.judge(request_type, name, exception is None, {name: response_time})

    def drain(self) -> list[list[Any]]:
        out = [[t, n, good, total] for (t, n), (good, total) in self.counts.items() if total]
        self.counts = {}
        return out

    def merge(self, payload: Iterable[Any]) -> None:
        for entry in payload or ():
            try:
                t, n, good, total = entry
                good, total = int(good), int(total)
            except (TypeError, ValueError):
                continue
            c = self.counts.setdefault((str(t), str(n)), [0, 0])
            c[0] += good
            c[1] += total

    def clear(self) -> None:
        self.counts = {}

    def rows(self, seconds: float | None) -> list[dict[str, str]]:
        """``_goodput.csv`` rows; ``seconds`` = run time the rates are over (None: no rates)."""
        out = []
        for (t, n), (good, total) in sorted(self.counts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            spec = self.specs.get(n)
            share = 100.0 * good / total if total else 0.0
            out.append({
                "Type": t, "Name": n, "Targets": spec.text if spec else "", "Requests": str(total), "Good": str(good),
                "Goodput %": f"{share:.2f}",
                "Good/s": f"{good / seconds:.3f}" if seconds else "",
                "Requests/s": f"{total / seconds:.3f}" if seconds else "",
            })
        return out


def console_lines(rows: Iterable[Mapping[str, str]]) -> list[str]:
    """``sendmsg: 95.20 % good (1904 of 2000 requests), 31.733 good/s of 33.333/s; ttft<500ms, sendmsg<5s``."""
    lines = []
    for r in rows:
        rate = f", {r['Good/s']} good/s of {r['Requests/s']}/s" if r.get("Good/s") else ""
        lines.append(f"{r['Type']} {r['Name']}: {r['Goodput %']} % good ({r['Good']} of {r['Requests']} requests)"
                     f"{rate}; targets {r['Targets']}")
    return lines
