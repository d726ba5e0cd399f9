"""Guards for the internals of other packages that loadkit patches or reads (Locust,
python-socketio, python-engineio, gevent-websocket).

Why: a patch of a private method or a constant that a new release renamed does not fail; it
either raises deep inside a run (a traceback in the middle of a load test) or, worse, silently does
nothing (a wrapper installed on a name nobody calls any more). So every such internal is listed,
with what loadkit uses it for, next to the code that patches it, and :func:`check` resolves the
whole list once at start: whatever is missing ends the process with one line naming the package,
its installed version and the internals that moved — before any user or server starts.

Pure (stdlib only): importable by the Locust plugin and by the reference servers alike.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterable

__all__ = ["Internal", "InternalsMoved", "check", "in_range", "missing", "resolve", "version", "wrap"]


class InternalsMoved(SystemExit):
    """Internals loadkit relies on are not where it expects them. A ``SystemExit``: raised at
    start (a locustfile's import, a server's start), it ends the process with its one-line message
    and exit status 1, not a traceback."""


@dataclass(frozen=True)
class Internal:
    """One internal of another package: ``path`` is ``module:Attr.attr`` (the part after ``:`` is
    an attribute chain). ``how``:

    - ``"attr"``: the chain resolves (a constant, a function, a method, inherited or not);
    - ``"own"``: the last attribute is defined on that class itself, not inherited (a method loadkit
      replaces: wrapping an inherited one would change the parent's behaviour, or none at all);
    - ``"self"``: an instance attribute the class's code (or a base class's) assigns
      (``self.name = ...``): what loadkit reads or sets on instances.
    """

    path: str
    why: str
    how: str = "attr"


def resolve(path: str) -> Any:
    """The object at ``module:Attr.attr``; raises ``ImportError``/``AttributeError`` if absent."""
    module, _, chain = path.partition(":")
    obj: Any = importlib.import_module(module)
    for name in chain.split(".") if chain else ():
        obj = getattr(obj, name)
    return obj


def _present(internal: Internal) -> bool:
    module, _, chain = internal.path.partition(":")
    owner_chain, _, name = chain.rpartition(".")
    try:
        if internal.how == "attr":
            resolve(internal.path)
            return True
        owner = resolve(f"{module}:{owner_chain}" if owner_chain else module)
        if internal.how == "own":
            return name in vars(owner)
        if internal.how == "self":
            assigned = re.compile(rf"\bself\.{re.escape(name)}\s*(:[^=\n]*)?=")
            return any(assigned.search(_source(cls)) for cls in owner.__mro__ if cls is not object)
    except (ImportError, AttributeError, OSError, TypeError):
        return False
    raise ValueError(f"unknown kind of internal {internal.how!r} for {internal.path}")


@functools.lru_cache(maxsize=None)
def _source(cls: type) -> str:
    """The source of the functions defined on ``cls`` (read through their code objects: a class
    defined twice under one name, in the branches of an ``if``, has the right one)."""
    parts = []
    for value in vars(cls).values():
        func = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
        if inspect.isfunction(func):
            try:
                parts.append(inspect.getsource(func))
            except (OSError, TypeError):  # no source to read
                pass
    return "\n".join(parts)


def missing(internals: Iterable[Internal]) -> list[Internal]:
    """The internals of ``internals`` that are not there."""
    return [i for i in internals if not _present(i)]


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3])


def in_range(installed: str, spec: str) -> bool:
    """Is version ``installed`` inside ``spec`` (``>=A.B,<C.D``: comparisons joined by commas)?"""
    have = _release(installed)
    ops: dict[str, Callable[[tuple[int, ...], tuple[int, ...]], bool]] = {
        ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b,
        ">": lambda a, b: a > b, "<": lambda a, b: a < b,
    }
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(>=|<=|==|>|<)\s*([\d.]+)\s*", part)
        if m is None:
            raise ValueError(f"unsupported version range {spec!r}")
        if not ops[m.group(1)](have, _release(m.group(2))):
            return False
    return True


def check(distribution: str, tested: str, internals: Iterable[Internal]) -> None:
    """Raise :class:`InternalsMoved` (one line) if any of ``internals`` of ``distribution`` is
    missing; ``tested`` is the version range loadkit was tested with (as in ``pyproject.toml``).
    A version outside that range whose internals are all there gets one warning line."""
    installed = version(distribution)
    if installed[:1].isdigit() and not in_range(installed, tested):
        logging.getLogger("loadkit").warning(
            "loadkit: %s %s is outside the tested range %s%s; the internals loadkit relies on are present",
            distribution, installed, distribution, tested)
    gone = missing(internals)
    if gone:
        what = "; ".join(f"{i.path.replace(':', '.')} ({i.why})" for i in gone)
        raise InternalsMoved(
            f"loadkit: {distribution} {version(distribution)} lacks what loadkit patches or reads: {what}; "
            f"loadkit is tested with {distribution}{tested} (pip install '{distribution}{tested}')")


def wrap(path: str, make: Callable[[Any], Any], distribution: str = "locust") -> bool:
    """Replace the method at ``path`` (``module:Class.method``, defined on that class) by
    ``make(original)``, once: False if it was wrapped already. The wrapper keeps the original in
    ``_loadkit_original``. Raises :class:`InternalsMoved` if the method is not there."""
    module, _, chain = path.partition(":")
    owner_chain, _, name = chain.rpartition(".")
    owner = resolve(f"{module}:{owner_chain}")
    original = vars(owner).get(name)
    if original is None:
        raise InternalsMoved(f"loadkit: {distribution} {version(distribution)} has no "
                             f"{path.replace(':', '.')} to patch; install a version loadkit was tested with")
    if getattr(original, "_loadkit_original", None) is not None:
        return False
    wrapper = make(original)
    wrapper._loadkit_original = original
    setattr(owner, name, wrapper)
    return True
