"""A fast gevent Socket.IO 5 client on websocket-client (no asyncio, no threads).

Why not python-socketio's own client: its threaded design (a reader thread, a writer queue and a
ping thread per connection) costs several times more CPU per message than this shell, which has:

- one Engine.IO websocket opened directly (``/socket.io/?EIO=4&transport=websocket``, no polling),
- no receive greenlet of its own: a greenlet waiting for an answer reads the socket itself (the
  "reader role", see ``_start_reading`` below); data arriving while nobody waits is read by a
  process-wide pool of drain greenlets (``_DrainPool``), which also answer pings; never more than
  one greenlet reads a connection,
- request/answer correlation: ``request(event, ..., answer="joinRoomSuccess", match=...)`` waits for
  an answer *event* chosen by name and an optional predicate, with failure events and a timeout,
- ``call()`` for Socket.IO acks, ``emit()`` for fire-and-forget, ``on()`` for handlers,
- pending answers that never leak: timeouts, ``close()`` and disconnects resolve them as failures,
- optional reconnect with exponential backoff and jitter.

The receive time of an answer is taken with ``time.perf_counter()`` as soon as the frame is read
(by whichever greenlet holds the reader role), so a waiting greenlet that is scheduled late does not
inflate it.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections import deque
from typing import Any, Callable, Iterable

import gevent
import gevent.lock
from gevent import getcurrent
from gevent.hub import Waiter, get_hub
import websocket

from loadkit.protocols.correlation import (  # the errors and results are re-exported from here
    Answer,
    AnswerTimeout,
    Backoff,
    BadAnswer,
    ConnectionFailed,
    ConnectRefused,
    Disconnect,
    ErrorAnswer,
    Handshake,
    Pending,
    PendingRequests,
    SocketIOError,
    reconnect_delay,
)
from loadkit.protocols.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, FrameDecoder, WireError, client_frame
from loadkit.protocols.socketio import (
    Ack,
    Disconnected,
    EioClosed,
    EioPing,
    Event,
    ProtocolError,
    SocketIOProtocol,
    websocket_url,
)

__all__ = ["Answer", "AnswerTimeout", "BadAnswer", "ConnectionFailed", "ConnectRefused", "Disconnect", "ErrorAnswer",
           "SocketIOClient", "SocketIOError", "reconnect_delay"]

log = logging.getLogger(__name__)

perf_counter = time.perf_counter
_getrandbits = random.getrandbits
_OP_TEXT = websocket.ABNF.OPCODE_TEXT
_OP_BINARY = websocket.ABNF.OPCODE_BINARY
_RECV_SIZE = 16384  # holds any one answer of the KTB protocol; larger messages take several reads
#: what a non-blocking read raises when nothing is there yet (plain, TLS)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Expired(Exception):
    """Internal: the deadline wheel expired a pending result."""


class _Sweeper:
    """A set of members and one greenlet for the whole process that wakes every ``tick`` seconds
    while the set is not empty and calls ``sweep(now)``; it is spawned again by the next ``add``."""

    tick = 1.0

    def __init__(self) -> None:
        self.members: set = set()
        self.greenlet: gevent.Greenlet | None = None

    def _watch(self, member: Any) -> None:
        self.members.add(member)
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            while self.members:
                gevent.sleep(self.tick)
                self.sweep(time.monotonic())
        finally:
            self.greenlet = None

    def sweep(self, now: float) -> None:
        raise NotImplementedError


class _DeadlineWheel(_Sweeper):
    """Process-wide coarse timeouts for pending answers (resolution ``tick`` seconds).

    Why not ``gevent.Timeout`` per request: starting and stopping a libev timer for every round
    trip measurably costs (~4-5 us of a ~50 us budget on the dev VM). Here a pending result joins a
    set and leaves it when resolved (nothing resolved is retained, so nothing ages into the
    garbage collector's old generation); one sweeper greenlet for the whole process (not per
    connection), alive only while something is pending, expires what is overdue.
    """

    tick = 0.05

    def add(self, res: "_Result", timeout: float) -> None:
        res.deadline = time.monotonic() + timeout
        self._watch(res)

    def sweep(self, now: float) -> None:
        for res in [r for r in self.members if r.deadline <= now]:
            self.members.discard(res)
            res.set_exception(_Expired())


_WHEEL = _DeadlineWheel()


class _HeartbeatWatch(_Sweeper):
    """Process-wide detection of connections whose server went silent (no Engine.IO ping for
    ``pingInterval + 2 x pingTimeout``, from the limits the server announced in OPEN).

    Why: a half-open TCP connection (peer host gone, a NAT or load balancer dropping the flow)
    never reads as closed; every request on it would just time out, forever. Engine.IO clients
    treat a missing ping as a disconnect; so does this one, which is what makes a Locust user
    log in and connect again. One sweep a second for the whole process; a connection costs no
    timer of its own.
    """

    tick = 1.0
    grace = 1.0  # seconds on top of the server's limits (pings travel, the sweep is coarse)

    def add(self, client: "SocketIOClient") -> None:
        self._watch(client)

    def sweep(self, now: float) -> None:
        for c in [c for c in self.members if now - c._last_ping > c._heartbeat_limit]:
            # re-checked: an earlier client's on_disconnect may have yielded, and this one
            # reconnected (or closed) meanwhile
            if c in self.members and time.monotonic() - c._last_ping > c._heartbeat_limit:
                self.members.discard(c)
                try:
                    c._heartbeat_lost(time.monotonic() - c._last_ping)
                except Exception:  # noqa: BLE001 - one client's failure must not stop the watch
                    log.exception("heartbeat handling of %s failed", getattr(c, "url", c))


_HEARTBEATS = _HeartbeatWatch()


class _Result:
    """A one-shot result a greenlet waits for (``SocketIOClient._await``); set by whichever
    greenlet reads the socket (a lighter ``AsyncResult``: at most one hub callback to wake the
    waiter, none when the waiter resolves its own result, no links, no per-wait timer)."""

    __slots__ = ("done", "value", "error", "_waiter", "deadline", "__weakref__")

    def __init__(self) -> None:
        self.done = False
        self.deadline = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self._waiter: Waiter | None = None

    def set(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self.value = value
            if self._waiter is not None:
                get_hub().loop.run_callback(self._waiter.switch, None)

    def set_exception(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self.error = exc
            if self._waiter is not None:
                get_hub().loop.run_callback(self._waiter.switch, None)


def _wake(res: Any) -> None:
    """Wake the greenlet waiting for ``res`` (resolved by the pure core), if it is parked."""
    w = res._waiter
    if w is not None:
        get_hub().loop.run_callback(w.switch, None)


class _Waiter(Pending):
    """One pending request (the pure core's record) that is also its own waitable result (one
    object per request instead of two)."""

    __slots__ = ("_waiter", "deadline", "__weakref__")

    def __init__(self, answer, match, errors, namespace):  # Pending.__init__, inlined (hot path)
        self.done = False
        self.deadline = self.t_sent = 0.0
        self.value = self.error = self._waiter = None
        self.answer = answer
        self.match = match
        self.errors = errors  # dict event -> predicate | None
        self.namespace = namespace

    set_exception = _Result.set_exception


_DRAIN_QUEUED = object()  # reader-role marker: a drain of this connection is queued


class _DrainPool:
    """Process-wide drain greenlets: they read connections that became readable while nobody
    waited on them (unsolicited events, pings, a close).

    Why a pool and not a greenlet per drain (or per connection): in rooms of 10 most ``message``
    deliveries arrive while their user is between tasks; spawning a greenlet per drain costs a
    few us each, a greenlet per connection costs memory on every idle connection. One worker
    drains every connection that became readable in the same event-loop iteration. A worker
    blocked in a handler is never waited for: the next readable connection wakes another worker
    (the hub only runs while every worker is parked or blocked).
    """

    max_idle = 8

    def __init__(self) -> None:
        self.ready: deque = deque()
        self.idle: list[Waiter] = []
        self.pending = False  # a worker was woken or spawned and has not started yet

    def submit(self, client: "SocketIOClient", io: Any) -> None:
        self.ready.append((client, io))
        if not self.pending:
            self.pending = True
            if self.idle:
                get_hub().loop.run_callback(self.idle.pop().switch, None)
            else:
                gevent.spawn(self._work)

    def _work(self) -> None:
        waiter = Waiter()
        ready = self.ready
        while True:
            self.pending = False
            while ready:
                client, io = ready.popleft()
                try:
                    client._drain(io)
                except Exception:  # noqa: BLE001 - a bug here must not stop other connections' drains
                    log.exception("drain of %s failed", getattr(client, "url", client))
            if len(self.idle) >= self.max_idle:
                return
            self.idle.append(waiter)
            waiter.get()


_DRAINS = _DrainPool()


def _sslopt(verify_tls: bool, ca_certs: str | None) -> dict:
    if not verify_tls:
        return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    opt: dict = {"cert_reqs": ssl.CERT_REQUIRED, "check_hostname": True}
    if ca_certs:
        opt["ca_certs"] = ca_certs
    return opt


class SocketIOClient:
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
        self.url = websocket_url(url, path)
        self.auth = auth
        self.namespaces = list(namespaces) or ["/"]
        self.headers = dict(headers or {})
        self.headers.setdefault("User-Agent", "loadkit-socketio")  # the KTB server needs one (facts §4.4)
        self.sslopt = _sslopt(verify_tls, ca_certs)
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.reconnect_delay_max = reconnect_delay_max
        self.reconnect_jitter = reconnect_jitter
        self.heartbeat_check = heartbeat_check
        self._reconnector: gevent.Greenlet | None = None  # the one reconnect loop, while it runs
        self._last_ping = 0.0  # time.monotonic() of the last server ping (or of the connect)
        self._heartbeat_limit = 0.0
        self.proto = SocketIOProtocol()
        self.ws: websocket.WebSocket | None = None
        self.connected = False
        self.sid: str | None = None
        self._closing = False
        self._io: Any = None  # libev io watcher of the socket while connected
        self._io_on = False
        self._holder: Any = None  # greenlet holding the reader role (None: nobody)
        self._parked: Waiter | None = None  # the holder's waiter while it waits for readability
        self._role_queue: deque = deque()  # results of greenlets waiting for the role
        self._recv_nb: Callable[[int], bytes] | None = None
        self._send_nb: Callable[[bytes], int] | None = None
        self._tls_pending: Callable[[], int] | None = None
        self._send_lock = gevent.lock.Semaphore()
        self._decoder = FrameDecoder()
        self._handlers: dict[tuple[str, str], list[Callable]] = {}
        self._unclaimed_handlers: dict[tuple[str, str], list[Callable]] = {}  # on(..., claimed=False)
        self._requests = PendingRequests()  # the pure core: which event or ack answers which request
        # while connecting: the handshake core, the result the opener waits for, the CONNECT payload
        self._handshake: Handshake | None = None
        self._hs_result: _Result | None = None
        self._hs_auth: Any = None
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

    def _stop_reconnector(self) -> None:
        r, self._reconnector = self._reconnector, None
        if r is not None and not r.dead and r is not getcurrent():
            r.kill(block=False)

    def _open(self) -> None:
        """Upgrade to a websocket, then run the Socket.IO handshake through the same reading and
        dispatch path as every later frame (``_process``), bounded by one ``connect_timeout``."""
        self.proto = SocketIOProtocol()
        self._send_nb = None  # until _start_reading: sends go through gevent's socket
        ws = websocket.WebSocket(
            enable_multithread=False,
            skip_utf8_validation=True,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            sslopt=self.sslopt,
        )
        deadline = time.monotonic() + self.connect_timeout
        # the whole upgrade is bounded, not only each read: a server that drip-feeds its answer one
        # byte a second would otherwise hold the user for ever (the Engine.IO/Socket.IO part below
        # shares the same deadline)
        upgrade = gevent.Timeout(self.connect_timeout)
        upgrade.start()
        try:
            ws.connect(self.url, header=self.headers, timeout=self.connect_timeout, suppress_origin=True)
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            raise ConnectionFailed(f"websocket {self.url}: {type(exc).__name__}: {exc}") from None
        except gevent.Timeout as exc:
            if exc is not upgrade:
                raise
            raise AnswerTimeout(f"websocket {self.url}: upgrade not complete within {self.connect_timeout:g}s") from None
        finally:
            upgrade.close()
        self.ws = ws
        self._decoder = FrameDecoder()
        result = _Result()
        try:
            self._hs_auth = self.auth() if callable(self.auth) else self.auth
            self._handshake, self._hs_result = Handshake(self.namespaces), result
            ws.sock.settimeout(None)
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
        self._start_heartbeat()

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
        ws, self.ws = self.ws, None
        self.connected = False
        self._stop_reading()
        if ws is not None:
            try:
                ws.sock.shutdown(socket.SHUT_RDWR)
            except Exception:  # noqa: BLE001 - best effort on a broken socket
                pass
            try:
                ws.shutdown()
            except Exception:  # noqa: BLE001
                pass

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
                self._send_control(websocket.ABNF.OPCODE_CLOSE, (1000).to_bytes(2, "big"))
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass
        self._abort()
        self._fail_all(Disconnect("client closed"))

    # ------------------------------------------------------------------------------ reading
    # Who reads the socket (the "reader role", held by at most one greenlet at a time):
    # - a greenlet waiting for an answer takes the role if it is free, parks on the socket's
    #   readability (one libev io watcher per connection) and reads and dispatches everything that
    #   arrives -- its own answer, answers for other waiting greenlets, handler events, pings --
    #   until its own answer is in, then hands the role to the next waiting greenlet (if any);
    # - other waiting greenlets wait on their own result (woken by set() or by the hand-over);
    # - when nobody holds the role, the io watcher's callback (run by the hub) queues the
    #   connection for the process-wide drain pool, whose worker reads what is there and
    #   dispatches it.
    # Why: with a receive greenlet per connection every answer costs a switch hub -> reader, a
    # hub callback and a switch hub -> requester; with the requester reading itself it is one
    # switch hub -> requester, like a hand-written blocking loop (~20 us less per round trip at
    # 500 users on the dev VM), and an idle connection holds no greenlet at all.
    def _start_reading(self, ws: websocket.WebSocket) -> None:
        sock = ws.sock
        raw = getattr(sock, "_sock", None)
        if not hasattr(sock, "pending") and hasattr(sock, "_read_event") and raw is not None:
            # a plain gevent socket: its ``_sock`` is the real, non-blocking OS socket, read and
            # written directly (gevent's wrappers add a Python frame, and sendall a syscall)
            self._recv_nb = raw.recv
            self._send_nb = raw.send
            self._tls_pending = None
        else:  # TLS (decrypted bytes may wait in the SSL buffer) or an unpatched socket
            self._recv_nb = self._recv_generic
            self._send_nb = None
            self._tls_pending = getattr(sock, "pending", None)
        self._holder = None
        self._parked = None
        self._role_queue = deque()
        io = get_hub().loop.io(sock.fileno(), 1)
        self._io = io
        io.start(self._on_readable)
        self._io_on = True

    def _start_heartbeat(self) -> None:
        """Watch the server's pings, with the limits it announced in OPEN."""
        if self.heartbeat_check:
            self._last_ping = time.monotonic()
            # socket.io clients give up after interval + timeout; engine.io servers extend their own
            # pong deadline once under load, and a busy generator reads late: twice the timeout
            self._heartbeat_limit = self.proto.ping_interval + 2 * self.proto.ping_timeout + _HEARTBEATS.grace
            _HEARTBEATS.add(self)

    def _recv_generic(self, n: int) -> bytes:
        """Non-blocking read on a TLS or non-gevent socket (raises one of ``_WOULD_BLOCK``)."""
        sock = self.ws.sock  # type: ignore[union-attr]
        sock.settimeout(0.0)  # gevent: raise instead of waiting; nothing can switch in between
        try:
            return sock.recv(n)
        finally:
            sock.settimeout(None)

    def _stop_reading(self) -> None:
        io, self._io = self._io, None
        self._io_on = False
        self._send_nb = None
        _HEARTBEATS.members.discard(self)
        if io is not None:
            io.stop()
            io.close()
        parked, self._parked = self._parked, None
        if parked is not None:
            get_hub().loop.run_callback(parked.switch, None)

    def _heartbeat_lost(self, silent_s: float) -> None:
        """Called by the heartbeat watch: the server has not pinged within its own limits."""
        if self._io is None:  # closed, or in the middle of (re)connecting: nothing to declare lost
            return
        self._lost(self._io, f"ping timeout: no ping from the server for {silent_s:.1f} s "
                             f"(pingInterval + 2 x pingTimeout = {self._heartbeat_limit - _HEARTBEATS.grace:g} s)")

    def _on_readable(self) -> None:
        """The io watcher's callback, run by the hub: wake the parked reader, or queue a drain."""
        parked = self._parked
        if parked is not None:
            self._parked = None
            parked.switch(None)  # from the hub: switches straight into the reading greenlet
        elif self._holder is None:
            self._holder = _DRAIN_QUEUED
            _DRAINS.submit(self, self._io)
        else:
            # the role holder is busy elsewhere (e.g. in a handler that blocks): stop watching
            # until it parks again, or a level-triggered watcher would spin the hub
            self._io.stop()
            self._io_on = False

    def _drain(self, io: Any) -> None:
        """Read what arrived while nobody was waiting (events for handlers, pings, a close);
        run by a drain worker greenlet (``_DrainPool``)."""
        if io is not self._io:
            return  # closed or reconnected since: the new connection has its own state
        me = getcurrent()
        self._holder = me
        try:
            self._read_some(io)
        finally:
            if self._holder is me:
                self._holder = None
            self._pass_role(io)

    def _pass_role(self, io: Any) -> None:
        """The role is free: hand it to the next waiting greenlet, or go back to watching."""
        if io is not self._io:
            return
        if self._role_queue:
            res = self._role_queue.popleft()
            w = res._waiter
            if w is not None:
                get_hub().loop.run_callback(w.switch, None)
        if not self._io_on:
            io.start(self._on_readable)
            self._io_on = True

    def _await(self, res: _Result, timeout: float) -> Any:
        """Wait (at most ``timeout`` s, ± the wheel's tick) for ``res``, reading the socket while
        this greenlet holds the reader role. Raises ``_Expired`` on timeout."""
        if not res.done:
            waiter = Waiter()
            _WHEEL.add(res, timeout)
            try:
                while not res.done:
                    io = self._io
                    if self._holder is None and io is not None:
                        self._read_until(res, waiter, io)
                    else:
                        queue = self._role_queue
                        queue.append(res)
                        res._waiter = waiter
                        try:
                            waiter.get()
                        finally:
                            res._waiter = None
                            try:
                                queue.remove(res)
                            except ValueError:
                                pass
            finally:
                _WHEEL.members.discard(res)
                if self._holder is None and self._role_queue:
                    self._pass_role(self._io)
        value, exc = res.value, res.error
        res.value = res.error = None
        if exc is not None:
            raise exc
        return value

    def _read_until(self, res: _Result, waiter: Waiter, io: Any) -> None:
        """Hold the reader role until ``res`` is resolved (or the connection is gone)."""
        me = getcurrent()
        self._holder = me
        pending = self._tls_pending
        try:
            while not res.done and io is self._io:
                if pending is None or not pending():
                    self._parked = res._waiter = waiter
                    if not self._io_on:
                        io.start(self._on_readable)
                        self._io_on = True
                    try:
                        waiter.get()
                    finally:
                        self._parked = res._waiter = None
                    if res.done or io is not self._io:
                        break
                if not self._read_some(io):
                    break
        finally:
            if self._holder is me:
                self._holder = None
            self._pass_role(io)

    def _read_some(self, io: Any) -> bool:
        """Read what the socket has (without waiting) and dispatch it. False: connection gone."""
        recv = self._recv_nb
        try:
            while True:
                try:
                    data = recv(_RECV_SIZE)
                except _WOULD_BLOCK:
                    return True
                if not data:
                    return self._lost(io, "server closed the connection")
                reason = self._process(data)
                if reason is not None:
                    return self._lost(io, reason)
                if len(data) < _RECV_SIZE or io is not self._io:
                    return True
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            if not self._closing and self._handshake is None:
                log.warning("%s: %s", self.url, reason)
        except WireError as exc:
            reason = f"bad websocket framing: {exc}"
            if not self._closing and self._handshake is None:
                log.warning("%s: %s", self.url, reason)
        except Disconnect as exc:  # a pong (or other protocol reply) could not be sent
            reason = str(exc)
        except (OSError, websocket.WebSocketException, AttributeError) as exc:
            reason = f"connection lost: {type(exc).__name__}: {exc}"
        return self._lost(io, reason)

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
                self._send_control(websocket.ABNF.OPCODE_PONG, payload)
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
        one namespace; the connection and the others live on)."""
        for w in self._requests.fail_all(exc, namespace):
            _wake(w)

    # ------------------------------------------------------------------------------ sending
    def _send_raw(self, frame: str | bytes) -> None:
        """Send one Engine.IO packet: ``str`` as a text frame, bytes as a binary frame."""
        if type(frame) is str:
            self._send_frame(_OP_TEXT, frame.encode("utf-8"))
        else:
            self._send_frame(_OP_BINARY, bytes(frame))

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        ws = self.ws
        if ws is None:
            raise Disconnect("not connected")
        data = client_frame(opcode, payload, _getrandbits(32).to_bytes(4, "little"))
        lock = self._send_lock
        send_nb = self._send_nb
        try:
            if send_nb is not None and not lock.locked():
                # one non-blocking send() on the OS socket almost always takes the whole frame
                # (gevent's sendall() would add a getsockopt() syscall and two Python frames);
                # nothing can switch between it and taking the (free) lock for the rest
                try:
                    n = send_nb(data)
                except _WOULD_BLOCK:
                    n = 0
                if n == len(data):
                    return
                data = data[n:]
            with lock:
                ws.sock.sendall(data)
        except (OSError, AttributeError) as exc:
            raise Disconnect(f"send failed: {type(exc).__name__}: {exc}") from None

    def _send_control(self, opcode: int, payload: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        with self._send_lock:
            try:
                ws.sock.sendall(client_frame(opcode, payload, _getrandbits(32).to_bytes(4, "little")))
            except (OSError, AttributeError):
                pass

    def _send_frames(self, frames: list) -> None:
        for f in frames:
            self._send_raw(f)

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
            self._send_frame(_OP_TEXT, wire)
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
        if not self.connected:
            raise Disconnect("not connected")
        if not isinstance(errors, dict):
            errors = {e: None for e in errors}
        ack_id = self.proto.next_ack_id()
        frames = self.proto.emit(event, args, namespace, ack_id=ack_id)
        w = _Waiter(None, None, errors, namespace or "/")
        self._requests.add(w, ack_id)
        w.t_sent = perf_counter()
        try:
            self._send_frames(frames)
            return self._await(w, timeout)
        except _Expired:
            self._forget(w)
            raise AnswerTimeout(f"no ack for {event!r} within {timeout:g}s") from None
        finally:
            self._requests.acks.pop(ack_id, None)
            if not w.done and errors:
                self._forget(w)

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
        if ack and not answer:
            return self.call(event, *args, namespace=namespace, timeout=timeout, errors=errors)
        return self._request(event, args, answer, match, errors, namespace, timeout)

    def _request(self, event: str, args: tuple, answer: str, match: Callable[[list], bool] | None,
                 errors: Any, namespace: str, timeout: float) -> Answer:
        """``request()`` with positional arguments (the hot path of the Locust user)."""
        if not self.connected:
            raise Disconnect("not connected")
        if type(errors) is not dict:
            errors = {e: None for e in errors}
        wire = self.proto.emit_utf8(event, args, namespace)
        frames = self.proto.emit(event, args, namespace) if wire is None else ()
        w = _Waiter(answer, match, errors, namespace or "/")
        self._requests.add(w)
        w.t_sent = perf_counter()
        try:
            if wire is not None:
                self._send_frame(_OP_TEXT, wire)
            for f in frames:
                self._send_raw(f)
            return self._await(w, timeout)
        except _Expired:  # resolved by the deadline wheel, so still in the pending list
            self._forget(w)
            raise AnswerTimeout(f"no {answer!r} for {event!r} within {timeout:g}s") from None
        finally:
            if not w.done:
                self._forget(w)
