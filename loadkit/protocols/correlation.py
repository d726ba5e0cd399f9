"""Socket.IO client decisions, sans-I/O: which event answers which request, the CONNECT handshake,
reconnect backoff, and the errors and results a client reports.

Theory of operation. A load test sends a request (an EVENT, optionally with an ack id) and waits
for *its* answer: an ack with the same id, or an answer event chosen by name and an optional
predicate over its arguments, unless a failure event (also chosen by name and predicate) comes
first. :class:`PendingRequests` holds the requests still waiting, in send order, and is fed every
decoded :class:`~loadkit.protocols.socketio.Event` and :class:`~loadkit.protocols.socketio.Ack`
with the time it was read; it answers which request that resolved (the first one, in send order,
that claims it), or ``None`` when nobody claimed it (the shell then hands it to the handlers for
unclaimed events and counts it). A request is resolved exactly once: its ``done`` flips,
``value`` (an :class:`Answer`) or ``error`` (an exception of :mod:`loadkit.protocols.errors`) is
set, and so are ``t_recv`` and ``nbytes``: the request is its own result object, timings included
(exceptions carry no timings). An answer whose arguments the
predicate cannot even inspect fails that request alone (:class:`BadAnswer`), never the connection.

:class:`Handshake` is what happens between the websocket upgrade and the first request: Engine.IO
OPEN → CONNECT every namespace → every CONNECT acked (or one refused). The shell feeds it the same
decoded events as every later frame (one dispatch path), and it tells what to send and when it is
done.

Nothing here reads a clock, a socket or a random generator: times and the jitter draw are passed in.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from loadkit.protocols.errors import (
    ConnectFailed,
    ConnectionLost,
    LoadkitError,
    Rejected,
    RemoteProtocolError,
    Timeout,
)
from loadkit.protocols.socketio import Ack, ConnectError, Connected, EioClosed, EioOpen, Event

Predicate = Callable[[list[Any]], bool]

__all__ = [
    "Answer", "AnswerTimeout", "BadAnswer", "ConnectRefused", "ConnectionFailed", "Disconnect",
    "ErrorAnswer", "Handshake", "Pending", "PendingRequests", "SocketIOError", "reconnect_delay",
    "Backoff", "Outcome",
]


# --------------------------------------------------------------------------------------- errors
class SocketIOError(LoadkitError):
    """Base class of every failure the Socket.IO client reports."""


class ConnectionFailed(SocketIOError, ConnectFailed):
    """The websocket or the Engine.IO OPEN could not be established."""


class ConnectRefused(SocketIOError, ConnectFailed, Rejected):
    """The server answered Socket.IO CONNECT with CONNECT_ERROR (e.g. ``Authentication error``)."""

    def __init__(self, namespace: str, data: Any) -> None:
        self.namespace = namespace
        self.data = data
        msg = data.get("message", data) if isinstance(data, dict) else data
        self.server_message = str(msg)  # (errors.Rejected; Socket.IO's CONNECT_ERROR has no code)
        super().__init__(f"CONNECT_ERROR {namespace}: {msg}")


class Disconnect(SocketIOError, ConnectionLost):
    """The connection closed (or was closed) while an answer was pending."""


class AnswerTimeout(SocketIOError, Timeout):
    """No matching answer arrived in time."""


class ErrorAnswer(SocketIOError, Rejected):
    """A failure event (e.g. ``error`` or ``joinRoomError``) answered the request. ``code`` and
    ``server_message`` are the payload's ``code`` and ``message`` when it has them (a protocol
    such as KTB turns this into its own classes: ``SocketIOUser.classify_error``). When it was
    sent and read, and its size, are the request's (:class:`Pending`), not the exception's."""

    def __init__(self, event: str, args: list[Any]) -> None:
        self.event = event
        self.event_args = args  # (``Exception.args`` is taken by the message)
        payload = self.payload
        if isinstance(payload, dict):
            code = payload.get("code")
            self.code = code if isinstance(code, str) else None
            self.server_message = str(payload.get("message", ""))
        elif isinstance(payload, str):
            self.server_message = payload
        super().__init__(f"{event}: {payload!r}")

    @property
    def payload(self) -> Any:
        return self.event_args[0] if self.event_args else None


class BadAnswer(SocketIOError, RemoteProtocolError):
    """An event that could answer (or fail) a request arrived with a payload the request's
    predicate could not even inspect (e.g. a list where a dict was due): a malformed answer,
    reported as this request's failure instead of tearing down the connection."""

    def __init__(self, event: str, exc: BaseException) -> None:
        self.event = event
        super().__init__(f"malformed {event!r}: {type(exc).__name__}: {exc}")


# -------------------------------------------------------------------------------------- results
class Answer:
    """What answered a request: the event name (``"ack"`` for an ack), its arguments and when it
    arrived."""

    __slots__ = ("event", "args", "nbytes", "t_sent", "t_recv")

    def __init__(self, event: str, args: list[Any], nbytes: int, t_sent: float, t_recv: float) -> None:
        self.event = event
        self.args = args
        self.nbytes = nbytes
        self.t_sent = t_sent
        self.t_recv = t_recv

    @property
    def data(self) -> Any:
        return self.args[0] if self.args else None

    @property
    def elapsed_ms(self) -> float:
        return (self.t_recv - self.t_sent) * 1000.0


class Pending:
    """One request waiting for its answer, and then its outcome: the result object a client
    returns (``SocketIOClient.exchange``) and a user reports from. The shell may subclass it
    (adding slots) to make the same object its waitable result: one allocation per request
    instead of two.

    ``answer`` is the answer event's name (``None`` for an ack-only request), ``match`` an optional
    predicate over the answer's arguments, ``errors`` maps failure event names to an optional
    predicate saying whether that event belongs to this request.

    The outcome: ``value`` (an :class:`Answer`) or ``error`` (a
    :class:`~loadkit.protocols.errors.LoadkitError`), and, either way, ``t_sent`` (just before the
    send), ``t_recv`` (when what resolved it was read; for a failure nothing on the wire decided —
    a timeout, a lost connection — when it was detected; ``None`` while pending) and ``nbytes``
    (the size of the frame that resolved it, 0 if none). Why here and not in the exceptions: a
    failure is timed like a success, from one place, and an exception is only the failure's kind
    and text.
    """

    __slots__ = ("answer", "match", "errors", "namespace", "t_sent", "t_recv", "nbytes", "done", "value", "error")

    def __init__(self, answer: Optional[str], match: Optional[Predicate],
                 errors: dict[str, Optional[Predicate]], namespace: str, t_sent: float = 0.0) -> None:
        self.answer = answer
        self.match = match
        self.errors = errors
        self.namespace = namespace
        self.t_sent = t_sent
        self.t_recv: Optional[float] = None
        self.nbytes = 0
        self.done = False
        self.value: Optional[Answer] = None
        self.error: Optional[BaseException] = None

    def resolve(self, value: Answer) -> bool:
        """Complete with ``value`` (its read time and size become the outcome's); False if it was
        resolved already."""
        if self.done:
            return False
        self.done = True
        self.value = value
        self.t_recv = value.t_recv
        self.nbytes = value.nbytes
        return True

    def fail(self, exc: BaseException, now: Optional[float] = None, nbytes: int = 0) -> bool:
        """Fail with ``exc``, read (or detected) at ``now``; False if it was resolved already."""
        if self.done:
            return False
        self.done = True
        self.error = exc
        self.t_recv = now
        self.nbytes = nbytes
        return True

    @property
    def elapsed_ms(self) -> float:
        """Send → resolution in ms (the request event's ``response_time``); needs ``t_recv``."""
        assert self.t_recv is not None, "elapsed_ms of a request still pending"
        return (self.t_recv - self.t_sent) * 1000.0

    def result(self) -> Answer:
        """The answer, or raise the failure."""
        if self.error is not None:
            raise self.error
        assert self.value is not None, "result() of a request still pending"
        return self.value


#: what a finished :class:`Pending` is to its reader: value-or-error, t_sent, t_recv, nbytes
Outcome = Pending


class PendingRequests:
    """The requests of one connection still waiting, and the rules that resolve them.

    A connection rarely has more than one or two requests pending, so a list scanned per received
    event beats per-event-name indexes kept up to date per request.
    """

    __slots__ = ("waiting", "acks")

    def __init__(self) -> None:
        self.waiting: list[Pending] = []  # answer/failure events claim these, in send order
        self.acks: dict[int, Pending] = {}  # ack id -> request

    def __len__(self) -> int:
        return len({id(p) for p in self.waiting} | {id(p) for p in self.acks.values()})

    def add(self, p: Pending, ack_id: Optional[int] = None) -> Pending:
        """Register ``p`` before its request is sent (so its answer can never be missed). With an
        ``ack_id`` the ack answers it and events only fail it (when ``p.errors`` names any)."""
        if ack_id is None:
            self.waiting.append(p)
        else:
            self.acks[ack_id] = p
            if p.errors:
                self.waiting.append(p)
        return p

    def forget(self, p: Pending, ack_id: Optional[int] = None) -> None:
        """Drop ``p`` (its caller gave up: timeout, or it was resolved elsewhere)."""
        try:
            self.waiting.remove(p)
        except ValueError:
            pass
        if ack_id is not None and self.acks.get(ack_id) is p:
            del self.acks[ack_id]

    def event(self, ev: Event, now: float) -> Optional[Pending]:
        """Feed one decoded event read at ``now``: the request it resolved, or None if unclaimed."""
        name = ev.name
        args = ev.args
        ns = ev.namespace
        waiting = self.waiting
        for p in waiting:
            if p.namespace != ns:
                continue
            if name == p.answer:
                match = p.match
                try:
                    ok = match is None or match(args)
                except Exception as exc:  # noqa: BLE001 - a malformed answer fails this request only
                    waiting.remove(p)
                    p.fail(BadAnswer(name, exc), now, ev.nbytes)
                    return p
                if ok:
                    waiting.remove(p)
                    p.done = True  # (resolve(), inlined: this is the hot path)
                    p.t_recv = now
                    p.nbytes = nbytes = ev.nbytes
                    p.value = Answer(name, args, nbytes, p.t_sent, now)
                    return p
            elif name in p.errors:
                pred = p.errors[name]
                try:
                    ok = pred is None or pred(args)
                except Exception as exc:  # noqa: BLE001 - a malformed failure event fails this request only
                    waiting.remove(p)
                    p.fail(BadAnswer(name, exc), now, ev.nbytes)
                    return p
                if ok:
                    waiting.remove(p)
                    p.fail(ErrorAnswer(name, args), now, ev.nbytes)
                    return p
        return None

    def ack(self, ev: Ack, now: float) -> Optional[Pending]:
        """Feed one decoded ack read at ``now``: the request it resolved, or None (unknown id, or
        its request was failed or given up already)."""
        p = self.acks.pop(ev.ack_id, None)
        if p is None or p.done:
            return None
        if p.errors:
            self.forget(p)
        p.done = True
        p.t_recv = now
        p.nbytes = nbytes = ev.nbytes
        p.value = Answer("ack", ev.args, nbytes, p.t_sent, now)
        return p

    def fail_all(self, exc: BaseException, namespace: Optional[str] = None,
                 now: Optional[float] = None) -> list[Pending]:
        """Fail every pending request, or only those on ``namespace`` (the server disconnected that
        one namespace; the connection and the others live on), as detected at ``now`` (None: the
        shell stamps each when its waiter wakes). Returns the requests failed now."""
        if namespace is None:
            hit = {id(p): p for p in self.waiting}
            hit.update({id(p): p for p in self.acks.values()})
            self.waiting.clear()
            self.acks.clear()
        else:
            hit = {id(p): p for p in self.waiting if p.namespace == namespace}
            hit.update({id(p): p for p in self.acks.values() if p.namespace == namespace})
            self.waiting[:] = [p for p in self.waiting if id(p) not in hit]
            for ack_id in [k for k, p in self.acks.items() if id(p) in hit]:
                del self.acks[ack_id]
        return [p for p in hit.values() if p.fail(exc, now)]


class Handshake:
    """Engine.IO OPEN, then a Socket.IO CONNECT per namespace, then every CONNECT acked.

    Feed it every decoded event of the connection until ``done``; :meth:`on_event` returns the
    namespaces to send CONNECT for now (all of them, on OPEN) and raises :class:`ConnectRefused`
    (CONNECT_ERROR) or :class:`ConnectionFailed` (Engine.IO CLOSE) when the connect cannot succeed.
    Events that are no part of the handshake return ``()`` (the shell dispatches them as usual).
    """

    __slots__ = ("namespaces", "waiting", "opened", "sid")

    def __init__(self, namespaces: Iterable[str]) -> None:
        self.namespaces = list(namespaces) or ["/"]
        self.waiting = set(self.namespaces)
        self.opened = False
        self.sid: Optional[str] = None

    @property
    def done(self) -> bool:
        return self.opened and not self.waiting

    def on_event(self, ev: Any) -> list[str]:
        t = type(ev)
        if t is EioOpen:
            if self.opened:
                return []
            self.opened = True
            return list(self.namespaces)
        if t is Connected:
            self.waiting.discard(ev.namespace)
            if ev.namespace == "/":
                self.sid = ev.sid
        elif t is ConnectError:
            raise ConnectRefused(ev.namespace, ev.data)
        elif t is EioClosed:
            raise ConnectionFailed("server sent CLOSE during handshake")
        return []


# -------------------------------------------------------------------------------------- reconnect
def reconnect_delay(attempt: int, base: float, cap: float, jitter: float, u: float) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): ``base * 2**attempt``,
    capped at ``cap``, then spread by ``±jitter`` (a fraction) with ``u`` uniform in [0, 1), so
    that users who lost their connections together do not all come back in the same instant."""
    delay: float = min(cap, base * (2.0**attempt))
    return max(0.0, delay * (1.0 + jitter * (2 * u - 1)))


class Backoff:
    """The reconnect schedule of one connection: ``next_delay(u)`` gives the wait before the next
    attempt (``u`` a uniform draw in [0, 1) for the jitter), or None once ``attempts`` are spent
    (``attempts=None``: never give up). ``reset()`` after a success."""

    __slots__ = ("base", "cap", "jitter", "attempts", "attempt")

    def __init__(self, base: float, cap: float, jitter: float, attempts: Optional[int]) -> None:
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.attempts = attempts
        self.attempt = 0

    def next_delay(self, u: float) -> Optional[float]:
        if self.attempts is not None and self.attempt >= self.attempts:
            return None
        delay = reconnect_delay(self.attempt, self.base, self.cap, self.jitter, u)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
