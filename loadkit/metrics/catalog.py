"""What loadkit measures that is *not* a request: every loadkit metric, with its unit and kind.

Why a catalog: Locust's request statistics mean "requests a user sent" — its RPS, its Aggregated
row and its "(ms)" columns are only true for those. A phase of a request (ttft), a receive-side
latency (delivery) or a per-turn count (chunks) fired as a request event inflated RPS six-fold and
put counts in millisecond columns. So those figures are *metrics*: recorded into their own exact
HDR histograms (merged across workers like the request histograms) and written to
``<prefix>_metrics.csv``, never into Locust's stats. This module is the one place that says which
names are metrics, in which unit, and what kind of figure they are; users, the web UI tab, the
console, Prometheus and the report all read it.

Pure data: no Locust, no gevent, so the report can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENCY, COUNT, RATE = "latency", "count", "rate"
KINDS = (LATENCY, COUNT, RATE)
UNIT_BY_KIND = {LATENCY: "ms", COUNT: "count", RATE: "1/s"}


@dataclass(frozen=True)
class Metric:
    """One loadkit metric. ``unit`` is the unit of every value column and chart axis of it."""

    type: str
    name: str
    kind: str
    definition: str

    @property
    def unit(self) -> str:
        return UNIT_BY_KIND[self.kind]


_DEFS: tuple[tuple[str, str, str, str], ...] = (
    # chldo: phases of one sendmsg turn (send = just before the request frame is written)
    ("chldo", "time_to_start", LATENCY, "send → START (<SOM>) frame read"),
    ("chldo", "ttft", LATENCY, "send → first on_chat_model_stream frame read (time to first token)"),
    ("chldo", "som_to_eom", LATENCY, "START → END (<EOM>) frame read"),
    ("chldo", "first_voice", LATENCY, "send → first voice_ready frame read"),
    ("chldo", "chunk_gap", LATENCY, "mean gap between consecutive token frames of one turn"),
    ("chldo", "chunk_gap_max", LATENCY, "largest gap between consecutive token frames of one turn"),
    ("chldo", "voice_ms", LATENCY, "seconds of speech announced in one turn (Σ voice_length) × 1000"),
    # chldo: per-turn figures
    ("chldo", "chunks", COUNT, "token frames in one successful turn"),
    ("chldo", "chars", COUNT, "characters streamed in one successful turn"),
    ("chldo", "chunks_per_s", RATE, "(chunks − 1) / (last token − first token) of one turn"),
    # KTB: receive-side latencies, wall clock of the sender at emit → wall clock of a receiver
    ("ktb", "delivery", LATENCY,
     "sender's time.time() at emit (carried in the message) → another member of the room reads it; "
     "only between processes on one host clock"),
    ("ktb", "read_receipt", LATENCY,
     "reader's perf_counter() just before the markMessagesAsRead emit → the first receipt, by another "
     "member of the room in the same process, of the messagesRead naming the reader and those ids"),
    # both protocols: a request still waiting when the run ended (its user was stopped)
    ("chldo", "unfinished_age", LATENCY, "age of a request still waiting when the run ended: send → the stop"),
    ("ktb", "unfinished_age", LATENCY, "age of a request still waiting when the run ended: send → the stop"),
    ("ktb", "leave_seen", LATENCY,
     "leaver's perf_counter() just before the leaveRoom emit → the first receipt, by a member who stays "
     "(same process), of the system message announcing the leave"),
    # open-model pacing (--arrival-rate): per iteration of any user
    ("loadkit", "schedule_lag", LATENCY,
     "intended start of an iteration (its arrival time) → the moment a user actually started it"),
)

#: ``<request name>_from_intended`` (open model): completion of a request − intended start of the
#: iteration that sent it = the request's time + schedule lag + the iteration's work before sending
FROM_INTENDED_SUFFIX = "_from_intended"
FROM_INTENDED_DEFINITION = ("intended start of the iteration (its arrival time) → this request completed: "
                            "its own time + the schedule lag + the iteration's work before sending")

CATALOG: dict[tuple[str, str], Metric] = {(t, n): Metric(t, n, k, d) for t, n, k, d in _DEFS}


def lookup(request_type: str, name: str) -> Metric | None:
    """The catalog entry of ``(type, name)``, or None when it is not a loadkit metric."""
    return CATALOG.get((request_type, name))


def is_metric(request_type: str, name: str) -> bool:
    """True when ``(type, name)`` is a loadkit metric (used to read old runs that fired metrics
    as Locust request events)."""
    return (request_type, name) in CATALOG


def metric(request_type: str, name: str, kind: str = LATENCY, definition: str = "") -> Metric:
    """The catalog's entry, or a new one of ``kind`` for a metric a custom user defines."""
    found = CATALOG.get((request_type, name))
    if found is not None:
        return found
    if name.endswith(FROM_INTENDED_SUFFIX) and not definition:
        kind, definition = LATENCY, FROM_INTENDED_DEFINITION
    if kind not in KINDS:
        raise ValueError(f"metric kind {kind!r} is not one of {', '.join(KINDS)}")
    made = CATALOG[(request_type, name)] = Metric(request_type, name, kind, definition)
    return made
