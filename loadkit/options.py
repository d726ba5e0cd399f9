"""One validation of every loadkit option, for the command line and the web UI alike.

Why: a load tester is pointed at broken servers by people who mistype. A bad value used to be
accepted silently (``--chldo-turns-per-connection -1``), become a traceback in every spawned user
(a ``--host`` without a scheme), or, typed into the web UI, turn into an HTTP 500 from Locust's own
``int()`` or a value that stuck for later runs. Here each option has one check, which takes the
*raw text* (what the command line or the web form gave) and either accepts it or says, in a few
words, what is wrong — the caller names the option and, for ``--host``, the fix:

* command line: every problem, one line each, then exit 2 before any user starts
  (:func:`check_at_init`, run by :func:`loadkit.plugin.install` at Locust's ``init``);
* web UI: the ``/swarm`` request is refused with HTTP 400 and ``success: false`` and the message
  shown in the form, *before* Locust converts or stores anything (:func:`install_web_ui`).

User modules declare their options' checks next to the options (:func:`rule`), and their user
classes the URL schemes ``--host`` must have (``host_schemes`` and ``host_example`` class
attributes).

Defaults are declared once, in the option's ``add_argument``: a user reads an option with
:func:`value`, which falls back to that declared default (:func:`default`) when the run has no
parsed options (library mode) or lacks the option — never to a second copy of it; code that holds
the parsed-options namespace itself reads it with :func:`of`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

Check = Callable[[str], Any]


@dataclass(frozen=True)
class Rule:
    flag: str
    check: Check


RULES: dict[str, Rule] = {}  # option dest -> its rule
#: checks across options, declared by a scenario module: (dest -> value, the run's user classes) in,
#: a problem or None out; a check says nothing of a run without its user classes
Requirement = Callable[[dict[str, Any], list[Any]], "str | None"]
REQUIREMENTS: list[Requirement] = []


def rule(flag: str, check: Check) -> None:
    """Declare the check of ``--flag`` (its dest is derived from the flag, as argparse does)."""
    RULES[flag.lstrip("-").replace("-", "_")] = Rule(flag, check)


def requirement(check: Requirement) -> Requirement:
    """Declare a check that needs several options at once (``--mixed-ktb-url`` with
    ``--mixed-chldo-url``); it is run with the rules, on the command line and the web form."""
    REQUIREMENTS.append(check)
    return check


_PARSER: list[Any] = []  # Locust's parser with every option registered so far, built on first use
_UNKNOWN: dict[str, int] = {}  # dest -> len(sys.modules) when a rebuilt parser still lacked it


def default(dest: str) -> Any:
    """The default the option ``dest`` declares in its ``add_argument`` (Locust's parser, built
    once per process with every ``init_command_line_parser`` listener registered by then).

    A dest the parser lacks (its module was imported later) rebuilds it, but only once per set of
    imported modules: options are registered at import, and a per-call rebuild costs a millisecond
    — too much for a read in a periodic loop."""
    if not _PARSER or (_PARSER[0].get_default(dest) is None and _UNKNOWN.get(dest) != len(sys.modules)):
        from locust.argument_parser import get_parser

        _PARSER[:] = [get_parser(default_config_files=[])]
        if _PARSER[0].get_default(dest) is None:
            _UNKNOWN[dest] = len(sys.modules)
    return _PARSER[0].get_default(dest)


def value(environment: Any, dest: str) -> Any:
    """The run's value of option ``dest``, or its declared :func:`default`."""
    return of(getattr(environment, "parsed_options", None), dest)


def of(options: Any, dest: str) -> Any:
    """Option ``dest`` of a parsed-options namespace (None, or lacking it: the declared default)."""
    v = getattr(options, dest, None) if options is not None else None
    return default(dest) if v is None else v


# ------------------------------------------------------------------------------------ checks
def number(lo: float | None = None, hi: float | None = None, *, integer: bool = False,
           above: bool = False) -> Check:
    """A finite number (an integer with ``integer``), ``>= lo`` (``> lo`` with ``above``), ``<= hi``."""

    def check(text: str) -> float | int:
        try:
            value: float | int = int(text) if integer else float(text)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'a whole number' if integer else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {text!r}")
        if lo is not None and (value <= lo if above else value < lo):
            raise ValueError(f"must be {'>' if above else '>='} {lo:g}, got {text}")
        if hi is not None and value > hi:
            raise ValueError(f"must be <= {hi:g}, got {text}")
        return value

    return check


def choice(*values: str) -> Check:
    def check(text: str) -> str:
        if text not in values:
            raise ValueError(f"expected one of {', '.join(values)}, got {text!r}")
        return text

    return check


def url(*schemes: str, example: str, empty_ok: bool = False) -> Check:
    """A URL with one of ``schemes`` and a host (``example`` is shown as the fix)."""

    def check(text: str) -> str:
        if not text and empty_ok:
            return text
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}), e.g. {example}") from None
        if parts.scheme not in schemes or not parts.hostname:
            need = " or ".join(f"{s}://" for s in schemes)
            raise ValueError(f"needs a URL starting with {need} and naming a host, e.g. {example}; got {text!r}")
        return text

    return check


def parsed_by(parse: Callable[[str], Any]) -> Check:
    """Use an existing parser that raises ValueError (its message is kept, minus a leading
    ``--flag:`` it may carry itself)."""

    def check(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            message = str(exc)
            if message.startswith("--") and ": " in message:
                message = message.split(": ", 1)[1]
            raise ValueError(message) from None

    return check


def file_or_inline(text: str) -> str:
    """A file path, or inline text: a value that looks like a path but names no file is a mistake."""
    if text and "|" not in text and ("/" in text or text.endswith(".txt")) and not Path(text).is_file():
        raise ValueError(f"no such file: {text!r} (give a file, or inline values separated by '|')")
    return text


# ------------------------------------------------------------------------------------ checking
def _raw(value: Any) -> str:
    return "" if value is None else str(value)


def problems(values: dict[str, Any]) -> list[str]:
    """``--flag: what is wrong`` for every value in ``values`` (dest -> raw value) that has a rule."""
    out = []
    for dest, value in values.items():
        r = RULES.get(dest)
        if r is None:
            continue
        try:
            r.check(_raw(value))
        except ValueError as exc:
            out.append(f"{r.flag}: {exc}")
    return out


def host_problem(host: str | None, user_classes: Iterable[Any]) -> str | None:
    """What is wrong with ``host`` for these user classes (their ``host_schemes``), or None."""
    for cls in user_classes:
        schemes = getattr(cls, "host_schemes", None)
        if not schemes or getattr(cls, "host", None):
            continue  # not a loadkit user, or one that brings its own host
        example = getattr(cls, "host_example", f"{schemes[0]}://127.0.0.1:8080")
        if not host:
            return f"--host is required by {cls.__name__}, e.g. --host {example}"
        try:
            url(*schemes, example=example)(host)
        except ValueError as exc:
            return f"--host {exc}"
    return None


def run_problems(environment: Any, host: str | None = None, values: dict[str, Any] | None = None,
                 *, requirements: bool = True) -> list[str]:
    """Every problem of this run's options (``values`` overrides, e.g. from the web form);
    ``requirements=False`` leaves out the checks across options (the web form asks for those)."""
    options = getattr(environment, "parsed_options", None)
    merged = dict(vars(options)) if options is not None else {}
    merged.update(values or {})
    found = problems(merged)
    classes = list(getattr(environment, "user_classes", None) or ())
    if requirements and merged:  # library mode (no parsed options) brings its own values
        found += [p for p in (check(merged, classes) for check in REQUIREMENTS) if p]
    bad_host = host_problem(getattr(environment, "host", None) if host is None else host, classes)
    if bad_host:
        found.insert(0, bad_host)
    return found


def check_at_init(environment: Any) -> None:
    """Command line: every problem one line on stderr, then exit 2 (before any user starts)."""
    options = getattr(environment, "parsed_options", None)
    if options is None:
        return  # library mode: the caller's own values
    from loadkit.metrics.hdr import is_worker

    # the web form asks for --host and what the requirements need; they are checked when it is sent
    web_form = not getattr(options, "headless", False) and getattr(environment, "web_ui", None) is not None
    if is_worker(environment):  # a worker's host and scenario values come from its master
        found = problems(dict(vars(options)))
    else:
        found = run_problems(environment, requirements=not web_form)
    if web_form:
        found = [p for p in found if not p.startswith("--host is required")]
    if found:
        for line in found:
            sys.stderr.write(f"loadkit: error: {line}\n")
        sys.stderr.flush()
        raise SystemExit(2)


def install_web_ui(environment: Any) -> None:
    """Refuse a ``/swarm`` request with bad values (HTTP 400, ``success: false``) before Locust
    converts or keeps any of them."""
    web_ui = getattr(environment, "web_ui", None)
    if web_ui is None:
        return
    from flask import jsonify, request

    @web_ui.app.before_request
    def _validate_swarm() -> Any:
        if request.path != "/swarm" or request.method != "POST":
            return None
        form = {k: v for k, v in request.form.items() if k in RULES}
        host = request.form.get("host", environment.host)
        found = run_problems(environment, host=host, values=form)
        if not found:
            return None
        response = jsonify({"success": False, "message": "; ".join(found), "host": environment.host})
        response.status_code = 400
        return response
