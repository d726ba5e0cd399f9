"""Fault injection for the reference servers: ``--fault drop=0.01,error=0.02,stall=0.005`` and a seed.

Why: a team rehearsing its load test wants to see what its dashboards, SLO gates and alerts do when
the service drops connections, answers with errors or stops answering — before the real service
does it during the launch test. The reference servers draw one fault (or none) per request from a
seeded generator, so a run can be repeated exactly.

Kinds (what each server does with them is in its docs):

=========  ======================================================================================
drop       close the connection abruptly in the middle of the answer
error      answer with a server error
stall      stop answering the request (the stream never ends, the answer never comes)
noend      chldo: stream the answer but never send END
=========  ======================================================================================

One syntax and one validation for every server: each passes the kinds it implements to
:func:`parse_faults` (``loadkit serve ktb`` has no ``noend``). Pure code: parsing and the dice, no I/O.
"""

from __future__ import annotations

import random

KINDS = ("drop", "error", "stall", "noend")


def parse_faults(text: str, kinds: tuple[str, ...] = KINDS) -> dict[str, float]:
    """``"drop=0.01,error=0.02"`` → ``{"drop": 0.01, "error": 0.02}``; ValueError says what is wrong.

    ``kinds``: the fault kinds the server implements (a kind it does not know is an error, never
    silently ignored)."""
    rates: dict[str, float] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        kind, sep, value = part.partition("=")
        kind = kind.strip()
        if not sep or kind not in kinds:
            raise ValueError(f"--fault: expected KIND=P with KIND one of {', '.join(kinds)}, got {part!r}")
        try:
            p = float(value)
        except ValueError:
            raise ValueError(f"--fault: {kind}={value!r} is not a probability") from None
        if not 0.0 <= p <= 1.0:  # NaN fails this too
            raise ValueError(f"--fault: {kind}={value} must be between 0 and 1")
        rates[kind] = p
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"--fault: the probabilities add up to {sum(rates.values()):g}, more than 1")
    return rates


class FaultDice:
    """One draw per request: a fault kind with its probability, or None. Seeded: the same seed and
    the same order of requests give the same faults."""

    def __init__(self, rates: dict[str, float], seed: int = 0) -> None:
        self._table = [(kind, rates[kind]) for kind in KINDS if rates.get(kind, 0.0) > 0.0]
        self._rng = random.Random(seed)
        self.drawn = {kind: 0 for kind in KINDS}
        self.draws = 0  # requests that drew (faulted or not)

    def __bool__(self) -> bool:
        return bool(self._table)

    def draw(self) -> str | None:
        if not self._table:
            return None
        self.draws += 1
        u = self._rng.random()
        for kind, p in self._table:
            if u < p:
                self.drawn[kind] += 1
                return kind
            u -= p
        return None

    def summary(self) -> str:
        """``"drop 3, error 5, stall 1 of 412 requests"``: what the server injected (its stop line)."""
        parts = ", ".join(f"{kind} {self.drawn[kind]}" for kind, _ in self._table)
        return f"{parts} of {self.draws} requests"
