"""An abstract Locust ``SocketIOUser`` whose client fires one request event per round trip.

In the spirit of ``locust.contrib.fasthttp.FastHttpUser``: the user owns ``self.sio``, a
:class:`LocustSocketIOClient`, and every measured operation fires exactly one
``environment.events.request``:

==============  ======================================================================================
name            response_time (ms, ``time.perf_counter`` deltas) / response_length
==============  ======================================================================================
``connect``     websocket open start → Socket.IO CONNECT ack of every namespace / 0
``<event>``     for ``request(event, answer=...)``: just before the send → receipt of the matching
                answer event (taken as soon as the frame is read) / answer frame bytes
``<event>``     for ``call(event)``: just before the send → receipt of the ack / ack frame bytes
==============  ======================================================================================

Fire-and-forget ``emit()`` fires nothing (there is no round trip to time). Received events are
never recorded with a fake 0 ms response time (unlike ``locust.contrib.socketio``).

Failures carry the exception: ``ConnectionFailed``, ``ConnectRefused`` (CONNECT_ERROR),
``AnswerTimeout``, ``Disconnect``, ``BadAnswer`` (an answer whose payload the request's predicate
could not read), or what ``classify_error`` makes of an ``ErrorAnswer`` (all of them
``loadkit.protocols.errors.LoadkitError``: see that module for the shared kinds). After
reporting, the method raises the same exception so the task can react. The timing and size of a
failure come from the request's outcome (``exchange()``), exactly as for an answer: send → the
failure event or malformed answer was read, or → a timeout or a lost connection was detected.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Callable

import gevent
from gevent import GreenletExit
from locust import User

from loadkit.redact import redact_exception
from loadkit.users.measure import Measure
from loadkit.clients.socketio import (
    Answer,
    AnswerTimeout,
    BadAnswer,
    Disconnect,
    ErrorAnswer,
    Outcome,
    SocketIOClient,
    SocketIOError,
)

perf_counter = time.perf_counter

__all__ = ["LocustSocketIOClient", "SocketIOUser", "Answer", "SocketIOError", "AnswerTimeout", "BadAnswer", "Disconnect",
           "ErrorAnswer"]


class LocustSocketIOClient:
    """A :class:`SocketIOClient` that reports every round trip to Locust."""

    def __init__(
        self,
        request_event: Any,  # anything with Locust's ``fire(**request_meta)``: a Measure, events.request
        url: str,
        *,
        request_type: str = "socketio",
        classify_error: Callable[[ErrorAnswer], Exception] | None = None,
        user: Any = None,
        **client_kwargs: Any,
    ) -> None:
        self.raw = SocketIOClient(url, **client_kwargs)
        self._fire = request_event.fire
        self._unfinished = getattr(request_event, "unfinished", None)  # a Measure records them
        self._measure = request_event
        self.request_type = request_type
        self.classify_error = classify_error or (lambda e: e)
        self.user = user

    # passthroughs ----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.raw.connected

    def on(self, event: str, handler: Callable[..., Any], namespace: str = "/", *, claimed: bool = True) -> None:
        self.raw.on(event, handler, namespace, claimed=claimed)

    def emit(self, event: str, *args: Any, namespace: str = "/") -> float:
        return self.raw.emit(event, *args, namespace=namespace)

    def close(self) -> None:
        self.raw.close()

    # measured operations -----------------------------------------------------------------------
    def _report(self, name: str, t0: float, t1: float, length: int, exc: BaseException | None) -> None:
        if exc is not None:  # a failure's text shows no secret the server echoed (loadkit.redact)
            redact_exception(exc, getattr(self._measure, "secrets", ()))
        self._fire(
            request_type=self.request_type,
            name=name,
            response_time=(t1 - t0) * 1000.0,
            response_length=length,
            exception=exc,
            context={},
        )

    def connect(self, name: str = "connect") -> None:
        """Open + CONNECT; one ``connect`` event; raises the failure after reporting it."""
        t0 = perf_counter()
        try:
            self.raw.connect()
        except SocketIOError as exc:
            self._report(name, t0, perf_counter(), 0, exc)
            raise
        self._report(name, t0, perf_counter(), 0, None)

    def request(
        self,
        event: str,
        *args: Any,
        answer: str,
        name: str | None = None,
        match: Callable[[list], bool] | None = None,
        errors: Any = (),
        namespace: str = "/",
        timeout: float = 30.0,
        ack: bool = False,
    ) -> Answer:
        """``SocketIOClient.request`` plus one request event named ``name or event``."""
        t0 = perf_counter()
        # exchange(), inlined: the hot path. 1801 vs 1828 bytecodes per round trip (-1.5 %) against
        # request() calling self.exchange(...); `python3 bench/bench_ktb_cpu.py --classes LoadkitChat
        # --opcodes --trees <this>,<calling>` (2026-12-06; CPU medians of 7 interleaved: 60.9 vs 67.2 µs)
        try:
            if ack and not answer:
                o = self.raw._exchange_ack(event, args, errors, namespace, timeout)
            else:
                o = self.raw._exchange(event, args, answer, match, errors, namespace, timeout)
        except GreenletExit:  # the user is being stopped (end of the run) while this request waits
            if self._unfinished is not None:
                self._unfinished(name or event, (perf_counter() - t0) * 1000.0)
            raise
        exc = o.error
        if exc is not None:
            if isinstance(exc, ErrorAnswer):
                exc = o.error = self.classify_error(exc)
            self.report(name or event, o)
            raise exc
        self._fire(
            request_type=self.request_type,
            name=name or event,
            response_time=(o.t_recv - o.t_sent) * 1000.0,  # type: ignore[operator]
            response_length=o.nbytes,
            exception=None,
            context={},
        )
        return o.value  # type: ignore[return-value]

    def exchange(
        self,
        event: str,
        *args: Any,
        answer: str,
        name: str | None = None,
        match: Callable[[list], bool] | None = None,
        errors: Any = (),
        namespace: str = "/",
        timeout: float = 30.0,
        ack: bool = False,
    ) -> Outcome:
        """The request's outcome, not reported yet (for a caller that decides what it means before
        reporting it, e.g. a KTB join): a failure event's ``ErrorAnswer`` is already what
        ``classify_error`` makes of it. Report with :meth:`report`."""
        t0 = perf_counter()
        try:
            if ack and not answer:
                o = self.raw._exchange_ack(event, args, errors, namespace, timeout)
            else:
                o = self.raw._exchange(event, args, answer, match, errors, namespace, timeout)
        except GreenletExit:  # the user is being stopped (end of the run) while this request waits
            if self._unfinished is not None:
                self._unfinished(name or event, (perf_counter() - t0) * 1000.0)
            raise
        exc = o.error
        if exc is not None and isinstance(exc, ErrorAnswer):
            o.error = self.classify_error(exc)
        return o

    def report(self, name: str, o: Outcome, exc: BaseException | None = None) -> None:
        """One request event for outcome ``o``, timed and sized by it (send → what resolved it, or
        → its detection for a timeout or a lost connection); ``exc`` overrides ``o.error`` (e.g. an
        answer that arrived but does not count)."""
        self._report(name, o.t_sent, o.t_recv if o.t_recv is not None else perf_counter(), o.nbytes,
                     exc if exc is not None else o.error)

    def call(
        self,
        event: str,
        *args: Any,
        name: str | None = None,
        errors: Any = (),
        namespace: str = "/",
        timeout: float = 30.0,
    ) -> Answer:
        """Emit with ack and wait for the ack (one request event). ``errors=`` as in ``request``:
        a failure event arriving before the ack fails the call."""
        return self.request(event, *args, answer="", ack=True, name=name, errors=errors, namespace=namespace,
                            timeout=timeout)


def _tune_gc(**_kw: Any) -> None:
    """Once all users are spawned, move everything alive into the GC's permanent generation and
    make young collections rarer.

    Why: a load generator allocates a few short-lived containers per message while holding a large,
    stable heap (users, connections, greenlets); CPython's full collections rescan that heap again
    and again. Profiling 500 users showed ~10-15 % of the generator's CPU in ``gc_collect_main``.
    Disable with ``LOADKIT_GC_TUNING=0``.
    """
    if os.environ.get("LOADKIT_GC_TUNING", "1") == "0":
        return
    gc.collect()
    gc.freeze()
    g0, g1, g2 = gc.get_threshold()
    gc.set_threshold(max(g0, 20000), max(g1, 20), max(g2, 20))
    every = _gc_every()
    if every > 0 and not _COLLECTOR:
        _COLLECTOR.append(gevent.spawn(_collect_every, every))


def _gc_every() -> float:
    """Seconds between the full collections of a process whose collector ``_tune_gc`` slowed
    down: ``LOADKIT_GC_EVERY`` (default 10; 0 = none, Python's thresholds alone)."""
    try:
        value = float(os.environ.get("LOADKIT_GC_EVERY", "") or 10.0)
    except ValueError:
        return 10.0
    return value if value >= 0 and value == value else 10.0

_COLLECTOR: list[Any] = []  # the process's one collecting greenlet, once started


def _collect_every(seconds: float) -> None:
    """A full collection every ``seconds``, for as long as the process lives.

    Why: with the thresholds of ``_tune_gc`` a full collection only comes after millions of
    surviving allocations, i.e. practically never, so cyclic garbage (exceptions with their
    tracebacks, the ctypes array types hdrh makes per encoding, ...) piled up for the whole run:
    a 10-minute soak saw the worker running the KTB users grow from 100 to 350 MB
    (docs/distributed.md#soak-long-runs-stay-flat). The heap alive at the spawn is frozen, so a
    collection only scans what was allocated since (a few hundred objects in that soak).
    """
    while True:
        gevent.sleep(seconds)
        gc.collect()




class SocketIOUser(User):
    """Abstract user with a Socket.IO connection in ``self.sio`` (connected in ``on_start``).

    Class attributes: ``socket_url`` (default: ``host``), ``socketio_path``, ``namespaces``,
    ``auth`` (or override ``socketio_auth()``), ``request_type``, ``verify_tls`` (TLS certificate
    verification for wss://, on by default), ``connect_timeout``, ``socketio_headers``,
    ``heartbeat_check``.
    """

    abstract = True
    socket_url: str | None = None
    socketio_path: str = "/socket.io"
    namespaces: tuple[str, ...] = ("/",)
    auth: Any = None
    request_type: str = "socketio"
    verify_tls: bool = True
    connect_timeout: float = 10.0
    socketio_headers: dict[str, str] | None = None
    #: declare a connection lost when the server sends no Engine.IO ping for
    #: pingInterval + 2 x pingTimeout (off: for a server that announces pings but never sends them)
    heartbeat_check: bool = True
    sio: LocustSocketIOClient

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        #: the one measurement path (request events and loadkit metrics), see loadkit.users.measure
        self.measure = Measure(environment, self.request_type)
        events = environment.events
        if not getattr(events, "_loadkit_gc_tuning", False):  # on this run's events, once
            events._loadkit_gc_tuning = True
            events.spawning_complete.add_listener(_tune_gc)
        self.sio = self.make_client()

    def socketio_auth(self) -> Any:
        """The CONNECT ``auth`` payload; called on every (re)connect."""
        return self.auth

    def classify_error(self, exc: ErrorAnswer) -> Exception:
        """Turn a failure event into the exception reported to Locust (override per protocol)."""
        return exc

    def make_client(self, url: str | None = None) -> LocustSocketIOClient:
        url = url or self.socket_url or self.host
        if not url:
            raise ValueError(f"{type(self).__name__}: no Socket.IO URL (set socket_url or --host)")
        return LocustSocketIOClient(
            self.measure,
            url,
            request_type=self.request_type,
            classify_error=self.classify_error,
            user=self,
            path=self.socketio_path,
            auth=self.socketio_auth,
            namespaces=self.namespaces,
            headers=self.socketio_headers,
            verify_tls=self.verify_tls,
            connect_timeout=self.connect_timeout,
            heartbeat_check=self.heartbeat_check,
        )

    def on_start(self) -> None:
        self.sio.connect()

    def on_stop(self) -> None:
        self.sio.close()
