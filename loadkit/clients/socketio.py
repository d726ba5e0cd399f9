"""A fast gevent Socket.IO 5 client on websocket-client (no asyncio, no threads).

Why not python-socketio's own client: its threaded design (a reader thread, a writer queue and a
ping thread per connection) costs several times more CPU per message than this shell, which has:

- one Engine.IO websocket opened directly (``/socket.io/?EIO=4&transport=websocket``, no polling),
- no receive greenlet of its own: a greenlet waiting for an answer reads the socket itself (the
  "reader role" of the shared transport, ``transport.py``); data arriving while nobody waits is
  read by a process-wide pool of drain greenlets, which also answer pings; never more than one
  greenlet reads a connection,
- request/answer correlation: ``request(event, ..., answer="joinRoomSuccess", match=...)`` waits for
  an answer *event* chosen by name and an optional predicate, with failure events and a timeout,
- ``call()`` for Socket.IO acks, ``emit()`` for fire-and-forget, ``on()`` for handlers,
- pending answers that never leak: timeouts, ``close()`` and disconnects resolve them as failures,
- optional reconnect with exponential backoff and jitter.

The receive time of an answer is taken with ``time.perf_counter()`` as soon as the frame is read
(by whichever greenlet holds the reader role), so a waiting greenlet that is scheduled late does not
inflate it.

Layout: this module is the facade (the public API); ``sio_connection.py`` has the handshake, the
per-read dispatch, loss and reconnect; ``transport.py`` the I/O shared with the chldo client; the
decisions (which event answers which request, the handshake, backoff) are the pure cores of
``loadkit.protocols.correlation`` and ``loadkit.protocols.socketio``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable
import time

from loadkit.clients.sio_connection import SocketIOConnection, _Expired, _Waiter
from loadkit.clients.transport import sslopt
from loadkit.protocols.correlation import (  # the errors and results are re-exported from here
    Answer,
    AnswerTimeout,
    BadAnswer,
    ConnectionFailed,
    ConnectRefused,
    Disconnect,
    ErrorAnswer,
    Outcome,
    SocketIOError,
    reconnect_delay,
)
from loadkit.protocols.socketio import Event, websocket_url
from loadkit.protocols.wsframe import OP_CLOSE, OP_TEXT

__all__ = ["Answer", "AnswerTimeout", "BadAnswer", "ConnectionFailed", "ConnectRefused", "Disconnect", "ErrorAnswer",
           "Outcome", "SocketIOClient", "SocketIOError", "reconnect_delay"]

perf_counter = time.perf_counter


class SocketIOClient(SocketIOConnection):
    """One Socket.IO connection (default namespace plus any others) over one websocket.

    ``auth`` is the CONNECT payload, or a callable returning it (called on every (re)connect).
    TLS certificates are verified for ``wss://``/``https://`` unless ``verify_tls=False``.
    """

    def __init__(
        self,
        url: str,
        *,
        path: str = "/socket.io",
        auth: Any = None,
        namespaces: Iterable[str] = ("/",),
        headers: dict[str, str] | None = None,
        verify_tls: bool = True,
        ca_certs: str | None = None,
        connect_timeout: float = 10.0,
        reconnect: bool = False,
        reconnect_attempts: int | None = 5,
        reconnect_delay: float = 0.5,
        reconnect_delay_max: float = 10.0,
        reconnect_jitter: float = 0.5,
        heartbeat_check: bool = True,
    ) -> None:
        self._init_transport()
        self.url = websocket_url(url, path)
        self.auth = auth
        self.namespaces = list(namespaces) or ["/"]
        self.headers = dict(headers or {})
        # some servers refuse an upgrade without one (the KTB server among them)
        self.headers.setdefault("User-Agent", "loadkit-socketio")
        self.sslopt = sslopt(verify_tls, ca_certs)
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.reconnect_delay_max = reconnect_delay_max
        self.reconnect_jitter = reconnect_jitter
        self.heartbeat_check = heartbeat_check
        self._init_connection()
        self.on_disconnect: Callable[[str], None] | None = None  # called with a reason, from the reader
        self.on_reconnect: Callable[[], None] | None = None
        # an event no handler exists for and no pending request took (as answer or failure)
        self.on_unhandled: Callable[[Event], None] | None = None
        self.unhandled_events = 0

    # ------------------------------------------------------------------------------ connection
    def connect(self) -> float:
        """Open the websocket, read Engine.IO OPEN, CONNECT every namespace, wait for the acks.

        Returns the elapsed seconds. Raises ``ConnectionFailed``, ``ConnectRefused`` or
        ``AnswerTimeout``. Runs in the caller's greenlet; afterwards the socket is read by whoever
        waits for an answer, or by the drain pool when data arrives while nobody waits.
        """
        t0 = perf_counter()
        self._stop_reconnector()  # an explicit connect() replaces a pending automatic one
        if self.ws is not None:  # connect() on a live connection replaces it, leaking nothing
            self._abort()
            self._fail_all(Disconnect("connect() replaced the connection"))
        self._closing = False
        self._open()
        return perf_counter() - t0

    def close(self) -> None:
        """Clean close: Socket.IO DISCONNECT per namespace, Engine.IO CLOSE, websocket CLOSE (1000),
        then the socket is closed without waiting for the peer's CLOSE (nothing more to read).

        Every pending answer fails with ``Disconnect("client closed")``.
        """
        self._closing = True
        self._stop_reconnector()
        ws = self.ws
        if ws is not None and self.connected:
            try:
                for ns in list(self.proto.namespaces):
                    self._send_frames(self.proto.disconnect(ns))
                self._send_frames(self.proto.close())
                self._send_control(OP_CLOSE, (1000).to_bytes(2, "big"))
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass
        self._abort()
        self._fail_all(Disconnect("client closed"))

    def on(self, event: str, handler: Callable[..., Any], namespace: str = "/", *, claimed: bool = True) -> None:
        """Call ``handler(*args)`` for every ``event``, in whichever greenlet reads the socket at
        that moment (a greenlet waiting for an answer, or a drain worker): keep it short; a
        handler that blocks delays every answer on this connection until it returns.

        ``claimed=False``: only for the events that no pending request took as its answer or
        failure. Why: a load test's own answers (e.g. the echo of its chat message) arrive once
        per round trip, and the request already hands them to its caller; a handler that only
        cares about the rest (other members' messages) then costs nothing on the hot path.
        """
        table = self._handlers if claimed else self._unclaimed_handlers
        table.setdefault((namespace, event), []).append(handler)

    def emit(self, event: str, *args: Any, namespace: str = "/") -> float:
        """Fire and forget; returns the perf_counter time just before the send."""
        if not self.connected:
            raise Disconnect("not connected")
        wire = self.proto.emit_utf8(event, args, namespace)
        t = perf_counter()
        if wire is not None:
            self._send_frame(OP_TEXT, wire)
        else:
            self._send_frames(self.proto.emit(event, args, namespace))
        return t

    def call(
        self,
        event: str,
        *args: Any,
        namespace: str = "/",
        timeout: float = 30.0,
        errors: dict[str, Callable[[list], bool] | None] | Iterable[str] = (),
    ) -> Answer:
        """Emit with an ack id and wait for the server's ack (``Answer.event == "ack"``).

        ``errors`` as in ``request()``: a matching failure event arriving first raises ``ErrorAnswer``.
        """
        return self._exchange_ack(event, args, errors, namespace, timeout).result()

    def request(
        self,
        event: str,
        *args: Any,
        answer: str,
        match: Callable[[list], bool] | None = None,
        errors: dict[str, Callable[[list], bool] | None] | Iterable[str] = (),
        namespace: str = "/",
        timeout: float = 30.0,
        ack: bool = False,
    ) -> Answer:
        """Emit ``event`` and wait for the first ``answer`` event whose args satisfy ``match``.

        ``errors`` names failure events (optionally with a predicate saying whether that event
        belongs to this request); the first matching one raises ``ErrorAnswer``. The waiter is
        registered before the send, so an answer can never be missed. With ``ack=True`` and no
        answer event (``answer=""``) this is ``call()``.
        """
        return self.exchange(event, *args, answer=answer, match=match, errors=errors, namespace=namespace,
                             timeout=timeout, ack=ack).result()

    def exchange(
        self,
        event: str,
        *args: Any,
        answer: str,
        match: Callable[[list], bool] | None = None,
        errors: dict[str, Callable[[list], bool] | None] | Iterable[str] = (),
        namespace: str = "/",
        timeout: float = 30.0,
        ack: bool = False,
    ) -> Outcome:
        """``request()`` (or, with ``ack=True`` and ``answer=""``, ``call()``) that returns the
        request's outcome instead of raising: ``value`` or ``error`` (``AnswerTimeout``,
        ``Disconnect``, ``ErrorAnswer``, ``BadAnswer``), with ``t_sent``, ``t_recv`` and
        ``nbytes`` either way. What a measuring caller uses: a failure is timed like an answer."""
        if ack and not answer:
            return self._exchange_ack(event, args, errors, namespace, timeout)
        return self._exchange(event, args, answer, match, errors, namespace, timeout)

    def _not_connected(self, w: _Waiter) -> _Waiter:
        w.t_sent = now = perf_counter()
        w.fail(Disconnect("not connected"), now)
        return w

    def _exchange_ack(self, event: str, args: tuple, errors: Any, namespace: str, timeout: float) -> _Waiter:
        if not isinstance(errors, dict):
            errors = {e: None for e in errors}
        w = _Waiter(None, None, errors, namespace or "/")
        if not self.connected:
            return self._not_connected(w)
        ack_id = self.proto.next_ack_id()
        frames = self.proto.emit(event, args, namespace, ack_id=ack_id)
        self._requests.add(w, ack_id)
        w.t_sent = perf_counter()
        try:
            self._send_frames(frames)
            self._wait_reading(w, timeout)
        except Disconnect as exc:  # the send failed (``send_error``)
            self._forget(w)
            w.fail(exc, perf_counter())
        finally:
            self._requests.acks.pop(ack_id, None)
            if not w.done and errors:
                self._forget(w)
        return self._finish(w, f"no ack for {event!r} within {timeout:g}s")

    def _exchange(self, event: str, args: tuple, answer: str, match: Callable[[list], bool] | None,
                  errors: Any, namespace: str, timeout: float) -> _Waiter:
        """``exchange()`` with positional arguments (the hot path of the Locust user)."""
        if type(errors) is not dict:
            errors = {e: None for e in errors}
        w = _Waiter(answer, match, errors, namespace or "/")
        if not self.connected:
            return self._not_connected(w)
        wire = self.proto.emit_utf8(event, args, namespace)
        frames = self.proto.emit(event, args, namespace) if wire is None else ()
        self._requests.add(w)
        w.t_sent = perf_counter()
        try:
            if wire is not None:
                self._send_frame(OP_TEXT, wire)
            for f in frames:
                self._send_raw(f)
            self._wait_reading(w, timeout)
        except Disconnect as exc:  # the send failed (``send_error``)
            self._forget(w)
            w.fail(exc, perf_counter())
        finally:
            if not w.done:  # (GreenletExit while waiting)
                self._forget(w)
        if w.error is None:
            return w
        return self._finish(w, f"no {answer!r} for {event!r} within {timeout:g}s")

    def _finish(self, w: _Waiter, timeout_text: str) -> _Waiter:
        """A failed request's outcome: an expiry becomes ``AnswerTimeout``, and a failure nothing
        on the wire decided is stamped with the time its waiter saw it."""
        if type(w.error) is _Expired:  # resolved by the deadline wheel, so still in the pending list
            self._forget(w)
            w.error = AnswerTimeout(timeout_text)
        if w.t_recv is None:
            w.t_recv = perf_counter()
        return w
