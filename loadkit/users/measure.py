"""The one measurement path of every loadkit user: a request event, or a loadkit metric.

The contract (docs/ARCHITECTURE.md, README "Metrics reference"):

* **A Locust request event is a request a user sent that completed or failed** — REST calls,
  ``connect``, the KTB operations, chldo ``sendmsg``. :meth:`Measure.fire` is that path (it *is*
  ``environment.events.request.fire``, so it costs nothing on the hot path, and it can be handed to
  Locust's ``FastHttpSession`` as its request event). Locust's RPS and Aggregated row then mean what
  Locust users think they mean.
* **Everything else is a loadkit metric** — phases of a request (ttft, ...), receive-side latencies
  (delivery, ...), per-turn counts and rates (chunks, chunks_per_s, ...): :meth:`Measure.metric`
  records the value, in the unit the catalog (:mod:`loadkit.metrics.catalog`) gives it, into the
  exact metric histograms (:data:`loadkit.metrics.hdr.METRICS`), merged across workers and written
  to ``<prefix>_metrics.csv`` — never into Locust's request statistics.

``--loadkit-phase-rows on`` (off by default) also fires the *latency* metrics as request events of
type ``<protocol>-phase``, for whoever wants Locust's own charts of them; those rows then count in
Locust's RPS, which is why it is off by default.
"""

from __future__ import annotations

from typing import Any

from locust import events

from loadkit import plugin
from loadkit import options as declared
from loadkit.metrics import hdr, slo_gate
from loadkit.metrics.unfinished import PREFIX as UNFINISHED, WAITED_MS, WAITED_PREFIX
from loadkit.metrics.catalog import LATENCY, metric as catalog_metric
from loadkit.metrics.counters import counters
from loadkit.redact import redact_exception

PHASE_SUFFIX = "-phase"


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    parser.add_argument("--loadkit-phase-rows", choices=("off", "on"), default="off",
                        help="also show loadkit's latency metrics (ttft, delivery, ...) as Locust request rows "
                             "of type '<protocol>-phase' (they then count in Locust's RPS); default off")


events.init.add_listener(plugin.on_init)


class _Event:
    __slots__ = ("fire",)

    def __init__(self, fire: Any) -> None:
        self.fire = fire


class Measure:
    """One user's (or client's) reporting handle for one protocol ``request_type``."""

    __slots__ = ("fire", "request_type", "secrets", "_record", "_phase_rows", "_kinds", "_counters", "goodput")

    def __init__(self, environment: Any, request_type: str) -> None:
        plugin.install(environment)  # library mode: no Locust ``init`` ran our listener
        #: Locust's request event; the only way a loadkit user reports a request
        self.fire = environment.events.request.fire
        self.request_type = request_type
        #: literal secrets of this user (its password, current token, API key) that no failure text
        #: may show; patterns (``"password": …``, JWTs, session ids) are masked anyway (loadkit.redact)
        self.secrets: list[str] = []
        self._record = hdr.METRICS.record
        options = getattr(environment, "parsed_options", None)
        self._phase_rows = declared.of(options, "loadkit_phase_rows") == "on"
        self._kinds: dict[str, str] = {}
        self._counters = counters(request_type)
        #: ``--goodput`` counts, or None without the option: a user that knows a request's phases
        #: together (a chldo turn) calls ``goodput.judge_phases(...)`` only when this is not None
        self.goodput = slo_gate.goodput_recorder()

    def request(self, name: str, response_time: float, response_length: int = 0,
                exception: BaseException | None = None, context: dict | None = None) -> None:
        """Report one request a user sent (completed, or failed with ``exception``, whose text is
        masked of secrets first)."""
        if exception is not None:
            redact_exception(exception, self.secrets)
        self.fire(request_type=self.request_type, name=name, response_time=response_time,
                  response_length=response_length, exception=exception, context=context or {})

    def fire_checked(self, **request_meta: Any) -> None:
        """Locust's request-event signature, failures masked of secrets: for clients that fire
        events themselves (``FastHttpSession``'s ``request_event.fire``; see :attr:`rest_event`)."""
        exception = request_meta.get("exception")
        if exception is not None:
            redact_exception(exception, self.secrets)
        self.fire(**request_meta)

    @property
    def rest_event(self) -> Any:
        """An object with ``fire`` = :meth:`fire_checked`, to hand to ``FastHttpSession``."""
        return _Event(self.fire_checked)

    def unfinished(self, name: str, age_ms: float, request_type: str | None = None) -> None:
        """A request still waiting when its user was stopped (the end of the run): neither a
        success nor a failure of the server — counted as ``unfinished:<name>`` with its age as the
        metric ``unfinished_age``, never dropped (see :mod:`loadkit.metrics.unfinished`).
        ``request_type``: the request's own type when it is not the user's (a REST call's method),
        so that the count sits beside the request's row (``POST /api/auth/login``)."""
        counter = self._counters if request_type is None else counters(request_type)
        counter.bump(UNFINISHED + name)
        if age_ms >= WAITED_MS:  # evidence the server does not answer; younger is no evidence
            counter.bump(WAITED_PREFIX + name)
        self._record(self.request_type, "unfinished_age", age_ms)

    def metric(self, name: str, value: float) -> None:
        """Record one loadkit metric sample, ``value`` in the catalog unit of ``name``."""
        self._record(self.request_type, name, value)
        if self._phase_rows:
            kind = self._kinds.get(name)
            if kind is None:
                kind = self._kinds[name] = catalog_metric(self.request_type, name).kind
            if kind == LATENCY:
                self.fire(request_type=self.request_type + PHASE_SUFFIX, name=name, response_time=value,
                          response_length=0, exception=None, context={})
