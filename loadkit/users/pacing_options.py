"""The ``--arrival-*`` options of open-model pacing: their declaration, checks and parsed ``Settings``.

Kept apart from the run wiring (``users/pacing.py``) and the schedule (``users/pacer.py``): the
command line, the web UI and the sweep need the parsed settings, not the Locust patches.
"""

from __future__ import annotations

from typing import Any

from locust import events

from loadkit import pacing
from loadkit import options as declared



@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # parser.add_argument itself (not a group's): only that shows the option in the web UI form
    parser.add_argument("--arrival-rate", default="", metavar="RATE",
                        help="open model: start iterations at this total rate (all workers together), e.g. 20/s or "
                             "1200/m, instead of each user's wait time; with --arrival-stages the rate the first "
                             "stage ramps from")
    parser.add_argument("--arrival-stages", default="", metavar="STAGES",
                        help="open model, ramping like k6's ramping-arrival-rate: DURATION:RATE,... e.g. "
                             "'30s:10/s,60s:50/s' (each stage ramps linearly to its rate; the last rate holds)")
    parser.add_argument("--arrival-pattern", default="constant", metavar="PATTERN",
                        help="arrival pattern: constant (default), poisson, or gamma:K (K<1 bursty, K>1 smooth)")
    parser.add_argument("--arrival-seed", default="1", metavar="N", help="seed of poisson/gamma arrivals (default 1)")
    parser.add_argument("--arrival-max-lag", default="1s", metavar="DURATION",
                        help="an iteration not started this long after its intended time is dropped and counted "
                             "(default 1s)")


class Settings:
    """The parsed ``--arrival-*`` options of a run (``segments`` None: no pacing)."""

    def __init__(self, options: Any) -> None:
        get = (lambda name: declared.of(options, name) or declared.default(name))  # "" (web form): the default
        rate_text, stages_text = str(get("arrival_rate")).strip(), str(get("arrival_stages")).strip()
        self.rate = pacing.parse_rate(rate_text) if rate_text else None
        self.stages = pacing.parse_stages(stages_text) if stages_text else None
        self.pattern, self.shape = pacing.parse_pattern(str(get("arrival_pattern")))
        seed = str(get("arrival_seed")).strip()
        try:
            self.seed = int(seed)
        except ValueError:
            raise pacing.PacingError(f"--arrival-seed {seed!r}: expected a whole number") from None
        self.max_lag = pacing.parse_duration(str(get("arrival_max_lag")), "--arrival-max-lag")
        if self.max_lag < 0:
            raise pacing.PacingError("--arrival-max-lag must be >= 0")
        self.segments: list[pacing.Segment] | None = None
        if self.rate is None and self.stages is None:
            pass
        else:
            if self.stages is None and not self.rate:
                raise pacing.PacingError(f"--arrival-rate {rate_text!r}: must be > 0")
            self.segments = pacing.profile(self.rate, self.stages)

    def describe(self) -> str:
        if self.segments is None:
            return "closed model"
        what = (f"{self.rate:g}/s" if self.stages is None else
                f"stages {', '.join(f'{d:g}s:{r:g}/s' for d, r in self.stages)} from {self.rate or 0:g}/s")
        pattern = self.pattern + (f":{self.shape:g}" if self.pattern == "gamma" else "")
        return f"{what}, {pattern}"


def _check(parse: Any) -> Any:
    """A :mod:`loadkit.options` check from one of :mod:`loadkit.pacing`'s parsers (which name the
    option themselves: that part is left to the caller)."""
    def check(text: str) -> Any:
        if not text.strip():
            return None
        try:
            return parse(text)
        except pacing.PacingError as exc:
            message = str(exc)
            raise ValueError(message.split(" ", 1)[1] if message.startswith("--") and " " in message else message) from None

    return check


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise pacing.PacingError(f"--arrival-seed {text!r}: expected a whole number") from None


def _declare_rules() -> None:
    from loadkit.options import rule

    rule("--arrival-rate", _check(pacing.parse_rate))
    rule("--arrival-stages", _check(pacing.parse_stages))
    rule("--arrival-pattern", _check(pacing.parse_pattern))
    rule("--arrival-seed", _check(_seed))
    rule("--arrival-max-lag", _check(lambda t: pacing.parse_duration(t, "--arrival-max-lag")))


_declare_rules()


def options_problem(options: Any) -> str | None:
    """What is wrong with the ``--arrival-*`` values (one line), or None."""
    if options is None:
        return None
    try:
        Settings(options)
    except pacing.PacingError as exc:
        return f"loadkit: {exc}"
    return None
