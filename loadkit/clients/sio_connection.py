"""The Socket.IO connection under :class:`~loadkit.clients.socketio.SocketIOClient`: the handshake,
what one read's frames do (dispatch to the pure cores in ``loadkit.protocols``), a lost connection,
reconnect. The public API (connect, request, call, emit, on, close) is the facade's; the I/O
(reading, the reader role, sending, the schedulers) is the transport's (``transport.py``).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import gevent
from gevent import getcurrent
from gevent.hub import get_hub

from loadkit.clients.schedulers import _HEARTBEATS, _Expired, _Result, _wake
from loadkit.clients.transport import UpgradeFailed, WsTransport
from loadkit.protocols.correlation import (
    AnswerTimeout,
    Backoff,
    ConnectionFailed,
    Disconnect,
    Handshake,
    Pending,
    PendingRequests,
    SocketIOError,
)
from loadkit.protocols.socketio import (
    Ack,
    Disconnected,
    EioClosed,
    EioPing,
    Event,
    ProtocolError,
    SocketIOProtocol,
)
from loadkit.protocols.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WireError

log = logging.getLogger("loadkit.clients.socketio")

perf_counter = time.perf_counter


class _Waiter(Pending):
    """One pending request (the pure core's record) that is also its own waitable result (one
    object per request instead of two)."""

    __slots__ = ("_waiter", "deadline", "__weakref__")

    def __init__(self, answer, match, errors, namespace):  # Pending.__init__, inlined (hot path)
        self.done = False
        self.deadline = self.t_sent = 0.0
        self.value = self.error = self._waiter = self.t_recv = None
        self.nbytes = 0
        self.answer = answer
        self.match = match
        self.errors = errors  # dict event -> predicate | None
        self.namespace = namespace

    set_exception = _Result.set_exception


class SocketIOConnection(WsTransport):
    """Socket.IO over the shared transport; the facade (``SocketIOClient``) sets the attributes
    its ``__init__`` documents and adds the public API."""

    send_error = Disconnect  # a failed send fails the request that sent it

    def _init_connection(self) -> None:
        self._reconnector: gevent.Greenlet | None = None  # the one reconnect loop, while it runs
        self.proto = SocketIOProtocol()
        self.connected = False
        self.sid: str | None = None
        self._handlers: dict[tuple[str, str], list[Callable]] = {}
        self._unclaimed_handlers: dict[tuple[str, str], list[Callable]] = {}  # on(..., claimed=False)
        self._requests = PendingRequests()  # the pure core: which event or ack answers which request
        # while connecting: the handshake core, the result the opener waits for, the CONNECT payload
        self._handshake: Handshake | None = None
        self._hs_result: _Result | None = None
        self._hs_auth: Any = None

    def _stop_reconnector(self) -> None:
        r, self._reconnector = self._reconnector, None
        if r is not None and not r.dead and r is not getcurrent():
            r.kill(block=False)

    def _open(self) -> None:
        """Upgrade to a websocket, then run the Socket.IO handshake through the same reading and
        dispatch path as every later frame (``_process``), bounded by one ``connect_timeout``."""
        self.proto = SocketIOProtocol(max_binary_bytes=self.max_message)
        self._send_nb = None  # until _start_reading: sends go through gevent's socket
        # the Engine.IO/Socket.IO part shares the upgrade's deadline
        deadline = time.monotonic() + self.connect_timeout
        try:
            ws = self._upgrade(self.url, self.connect_timeout, self.headers, self.sslopt)
        except UpgradeFailed as exc:
            if exc.timed_out:
                raise AnswerTimeout(f"websocket {self.url}: {exc}") from None
            raise ConnectionFailed(f"websocket {self.url}: {exc}") from None
        result = _Result()
        try:
            self._hs_auth = self.auth() if callable(self.auth) else self.auth
            self._handshake, self._hs_result = Handshake(self.namespaces), result
            self._start_reading(ws)
            self._await(result, max(0.001, deadline - time.monotonic()))
        except _Expired:
            self._abort()
            raise AnswerTimeout(f"no CONNECT ack from {self.url} within {self.connect_timeout:g}s") from None
        except BaseException:
            self._abort()
            raise
        finally:
            self._handshake = self._hs_result = self._hs_auth = None
        if self.ws is not ws:  # (cannot happen: a loss resolves the result with an exception)
            raise ConnectionFailed(f"{self.url} closed during handshake")
        self.connected = True
        if self.heartbeat_check:
            # socket.io clients give up after interval + timeout; engine.io servers extend their own
            # pong deadline once under load, and a busy generator reads late: twice the timeout
            self._start_heartbeat(self.proto.ping_interval + 2 * self.proto.ping_timeout)

    def _on_handshake(self, ev: Any) -> str | None:
        """A handshake event (OPEN, CONNECT ack, CONNECT_ERROR) while connecting; a reason string
        if the connect failed (the connection is then lost, the opener told why)."""
        hs = self._handshake
        if hs is None:  # connected already: a late or repeated handshake packet changes nothing
            return None
        try:
            for ns in hs.on_event(ev):
                self._send_frames(self.proto.connect(ns, self._hs_auth))
        except SocketIOError as exc:  # CONNECT_ERROR
            self._hs_result.set_exception(exc)  # type: ignore[union-attr]
            return str(exc)
        if hs.done:
            self.sid = hs.sid
            self._handshake = None
            self._hs_result.set(True)  # type: ignore[union-attr]
        return None

    def _abort(self) -> None:
        res = self._hs_result
        if res is not None:  # closed while connecting: the opener fails (not at its deadline)
            res.set_exception(ConnectionFailed(f"{self.url} closed during handshake"))
        self.connected = False
        self._shutdown()

    def _read_failure(self, exc: Exception) -> str:
        if isinstance(exc, ProtocolError):
            reason = f"protocol error: {exc}"
            if not self._closing and self._handshake is None:
                log.warning("%s: %s", self.url, reason)
            return reason
        if isinstance(exc, WireError) and self._handshake is not None:
            return f"bad websocket framing: {exc}"  # (no warning: the opener raises it)
        return super()._read_failure(exc)

    def _heartbeat_lost(self, silent_s: float) -> None:
        """Called by the heartbeat watch: the server has not pinged within its own limits."""
        if self._io is None:  # closed, or in the middle of (re)connecting: nothing to declare lost
            return
        self._lost(self._io, f"ping timeout: no ping from the server for {silent_s:.1f} s "
                             f"(pingInterval + 2 x pingTimeout = {self._heartbeat_limit - _HEARTBEATS.grace:g} s)")

    def _process(self, data: bytes) -> str | None:
        """Decode and dispatch one read's worth of frames; a reason string if the peer closed."""
        now = perf_counter()
        proto = self.proto
        receive = proto.receive
        receive_text = proto.receive_text
        for op, payload in self._decoder.feed(data):
            if op == OP_TEXT:
                evs = receive_text(payload)
            elif op == OP_BINARY:
                evs = receive(payload)
            elif op == OP_PING:
                self._send_control(OP_PONG, payload)
                continue
            elif op == OP_CLOSE:
                return "server closed the websocket"
            else:
                continue
            for ev in evs:
                t = type(ev)
                if t is Event:
                    self._dispatch(ev, now)
                elif t is Ack:
                    self._on_ack(ev, now)
                elif t is EioPing:
                    self._last_ping = time.monotonic()
                elif t is EioClosed:
                    return "server sent CLOSE"
                elif t is Disconnected:
                    if ev.namespace == "/":
                        return "server disconnected namespace /"
                    self._fail_all(Disconnect(f"server disconnected namespace {ev.namespace}"), ev.namespace)
                else:  # Engine.IO OPEN, CONNECT ack, CONNECT_ERROR: the handshake's
                    reason = self._on_handshake(ev)
                    if reason is not None:
                        return reason
            if proto._out:
                for out in proto.data_to_send():
                    self._send_raw(out)
        return None

    def _lost(self, io: Any, reason: str) -> bool:
        """The connection ended under the reader: fail what is pending, tell, maybe reconnect."""
        if self._closing or io is not self._io:
            return False
        res = self._hs_result
        if res is not None:  # still connecting: the opener raises, no disconnect or reconnect
            res.set_exception(ConnectionFailed(f"{self.url}: {reason} during handshake"))
            self._abort()
            return False
        self._abort()
        self._fail_all(Disconnect(reason))
        if self.on_disconnect is not None:
            try:
                self.on_disconnect(reason)
            except Exception:  # noqa: BLE001 - a handler bug must not kill the reader silently
                log.exception("on_disconnect handler failed")
        if self.reconnect and not self._closing:
            if self._reconnector is None or self._reconnector.dead:
                self._reconnector = gevent.spawn(self._reconnect_loop)
        return False

    def _reconnect_loop(self) -> None:
        backoff = Backoff(self.reconnect_delay, self.reconnect_delay_max, self.reconnect_jitter,
                          self.reconnect_attempts)
        while not self._closing:
            delay = backoff.next_delay(random.random())
            if delay is None:
                return
            gevent.sleep(delay)
            attempt = backoff.attempt
            if self._closing or self.ws is not None:  # closed, or connected by someone else meanwhile
                return
            try:
                self._open()
            except SocketIOError as exc:
                log.info("reconnect %d to %s failed: %s", attempt, self.url, exc)
                continue
            if self._closing:  # close() was called while the connection was being opened
                self._abort()
                return
            if self.on_reconnect is not None:
                try:
                    self.on_reconnect()
                except Exception:  # noqa: BLE001 - a callback bug is logged, never fatal
                    log.exception("on_reconnect callback failed")
            return

    def _dispatch(self, ev: Event, now: float) -> None:
        """One event: to the request it answers or fails (the pure core decides), then to the
        handlers; counted as unhandled if neither took it."""
        w = self._requests.event(ev, now)
        if w is not None:
            waiter = w._waiter  # (_wake, inlined: the hot path)
            if waiter is not None:
                get_hub().loop.run_callback(waiter.switch, None)
        name = ev.name
        ns = ev.namespace
        args = ev.args
        taken = w is not None
        key = (ns, name)
        handlers = self._handlers.get(key)
        if handlers:
            self._call_handlers(handlers, name, args)
        if not taken:
            unclaimed = self._unclaimed_handlers.get(key)
            if unclaimed:
                self._call_handlers(unclaimed, name, args)
            elif not handlers:
                self.unhandled_events += 1
                if self.on_unhandled is not None:
                    try:
                        self.on_unhandled(ev)
                    except Exception:  # noqa: BLE001 - a callback bug is logged, never fatal
                        log.exception("on_unhandled callback failed")

    @staticmethod
    def _call_handlers(handlers: list, name: str, args: list) -> None:
        for h in handlers:
            try:
                h(*args)
            except Exception:  # noqa: BLE001 - user handler bugs are logged, never fatal
                log.exception("handler for %r failed", name)

    def _forget(self, w: _Waiter) -> None:
        self._requests.forget(w)

    def _on_ack(self, ev: Ack, now: float) -> None:
        w = self._requests.ack(ev, now)
        if w is not None:
            _wake(w)

    def _fail_all(self, exc: SocketIOError, namespace: str | None = None) -> None:
        """Fail every pending request, or only those on ``namespace`` (the server disconnected that
        one namespace; the connection and the others live on), detected now."""
        for w in self._requests.fail_all(exc, namespace, perf_counter()):
            _wake(w)

    # ------------------------------------------------------------------------------ sending
    def _send_raw(self, frame: str | bytes) -> None:
        """Send one Engine.IO packet: ``str`` as a text frame, bytes as a binary frame."""
        if type(frame) is str:
            self._send_frame(OP_TEXT, frame.encode("utf-8"))
        else:
            self._send_frame(OP_BINARY, bytes(frame))

    def _send_frames(self, frames: list) -> None:
        for f in frames:
            self._send_raw(f)
