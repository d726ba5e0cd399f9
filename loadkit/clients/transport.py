"""One gevent WebSocket transport, shared by the Socket.IO and chldo clients.

What it does: the websocket upgrade (websocket-client, bounded as a whole by one deadline), TLS
options, non-blocking reads and writes straight on the OS socket, the *reader role* (who reads a
connection when), the process-wide schedulers (deadline wheel, heartbeat watch, drain pool), and
masked sends. What it does not do: any protocol. A subclass implements ``_process(data)`` (decode
one read's worth of bytes and act on it, with the sans-I/O cores of ``loadkit.protocols``) and
``_lost(io, reason)`` (what a lost connection means for its pending work).

Invariants (the concurrency model; docs/ARCHITECTURE.md says the same):

1. At most one greenlet reads a connection at any time: the holder of the reader role
   (``_holder``). A greenlet that waits for a result (``_await``) takes the role if it is free,
   parks on the socket's readability (one libev io watcher per connection, ``_io``) and reads and
   processes *everything* that arrives -- its own answer, other greenlets' answers, events, pings
   -- until its own result is resolved; then it hands the role to the next waiting greenlet
   (``_role_queue``). Other waiters sleep on their own result.
2. When nobody holds the role and data arrives, the io watcher's callback (run by the hub) queues
   the connection for the process-wide drain pool (``_DRAINS``), whose worker reads and
   processes it. While a holder is busy elsewhere (a handler that blocks), the watcher is stopped
   so that a level-triggered watcher does not spin the hub.
3. Every time is taken right after the read, by whoever reads (``perf_counter()`` once per
   read): a waiter scheduled late does not inflate its own latency.
4. Timeouts: a waiting result joins the deadline wheel (``_WHEEL``, one greenlet for the whole
   process, alive only while something is pending, 50 ms resolution) instead of arming a
   ``gevent.Timeout`` per request; expired results raise ``_Expired`` in their waiter.
5. A connection whose server announced a heartbeat joins the heartbeat watch (``_HEARTBEATS``,
   one sweep a second for the whole process): a server silent past its own limits is a lost
   connection (``_heartbeat_lost``), which is what detects half-open TCP connections.
6. Sends are one non-blocking ``send()`` on the OS socket when no other greenlet is sending (the
   whole frame almost always fits); the rest, and control frames, go through ``_send_lock``.

Why a reader role instead of a receive greenlet per connection: every answer would cost a switch
hub -> reader, a hub callback and a switch hub -> requester; with the requester reading itself it
is one switch hub -> requester, like a hand-written blocking loop (~20 us less per Socket.IO round
trip at 500 users on the dev VM), and an idle connection holds no greenlet at all.
"""

from __future__ import annotations

import ctypes
import logging
import random
import socket
import ssl
import time
from collections import deque
from typing import Any, Callable

import gevent
import gevent.lock
from gevent import getcurrent
from gevent.hub import Waiter, get_hub
import websocket

from loadkit.clients.schedulers import _DRAINS, _HEARTBEATS, _WHEEL, _Result
from loadkit.protocols.errors import ConnectFailed, ConnectionLost
from loadkit.protocols.wsframe import FrameDecoder, WireError, client_frame

log = logging.getLogger(__name__)

perf_counter = time.perf_counter
_getrandbits = random.getrandbits
#: what a non-blocking read raises when nothing is there yet (plain, TLS)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
#: full reads in a row from one connection before the others get their turn
_MAX_READS = 16


class SendFailed(ConnectionLost, ConnectionError):
    """A send on the transport failed (a subclass names its protocol's own error instead)."""


class UpgradeFailed(ConnectFailed):
    """The websocket upgrade failed; ``timed_out`` when its deadline passed. The message is the
    detail only: each client words it in its own error."""

    def __init__(self, detail: str, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


_DRAIN_QUEUED = object()  # reader-role marker: a drain of this connection is queued


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc: nothing to call
        return None


_MALLOC_TRIM = _find_malloc_trim()
_trim_state = {"pending": False}


def release_memory_soon(size: int) -> None:
    """After a large message (``FrameDecoder``'s ``on_large``): once it has been processed and
    freed, give the freed heap pages back to the OS (glibc ``malloc_trim``).

    Why: glibc keeps the pages of freed blocks, and after one large block it serves blocks of up
    to that size from the heap instead of fresh mappings; measured, the RSS of a client that had
    received 15 MB frames stayed ~15 MB (in Locust 65 -> 200 MB) above its baseline for the rest
    of the run. One trim per large message (rare by nature, >= 1 MiB) costs about what giving the
    pages back costs: measured 1-5 ms after a 15 MB frame, against ~450 ms to receive and parse it.
    Runs as a hub callback, i.e. after the read that completed the message."""
    if _MALLOC_TRIM is None or _trim_state["pending"]:
        return
    _trim_state["pending"] = True
    get_hub().loop.run_callback(_trim_now)


def _trim_now() -> None:
    _trim_state["pending"] = False
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def sslopt(verify_tls: bool, ca_certs: str | None) -> dict:
    if not verify_tls:
        return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    opt: dict = {"cert_reqs": ssl.CERT_REQUIRED, "check_hostname": True}
    if ca_certs:
        opt["ca_certs"] = ca_certs
    return opt




class WsTransport:
    """The I/O half of a websocket client (see the module docstring for its invariants).

    Subclasses set ``url`` and implement ``_process(data) -> reason | None`` and
    ``_lost(io, reason) -> False``; they call ``_init_transport()`` in ``__init__``.
    """

    #: bytes asked of one recv(); a read that fills it is followed by another at once
    recv_size = 16384
    #: the reason given when the server closes the TCP connection
    eof_reason = "server closed the connection"
    #: the exception a failed send raises (a ``SendFailed``-compatible class of the protocol)
    send_error: type[Exception] = SendFailed
    #: the largest message the decoder accepts (a WireError past it)
    max_message = 16 * 1024 * 1024

    url: str

    def _init_transport(self) -> None:
        self.ws: websocket.WebSocket | None = None
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
        self._last_ping = 0.0  # time.monotonic() of the last sign of life (or of the connect)
        self._heartbeat_limit = 0.0

    # ------------------------------------------------------------------------------ to override
    def _process(self, data: bytes) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _lost(self, io: Any, reason: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _heartbeat_lost(self, silent_s: float) -> None:
        """Called by the heartbeat watch: the server has been silent past its limits."""
        if self._io is None:  # closed, or in the middle of (re)connecting: nothing to declare lost
            return
        self._lost(self._io, f"ping timeout: no ping from the server for {silent_s:.1f} s")

    # ------------------------------------------------------------------------------ connection
    def _upgrade(self, url: str, timeout: float, headers: dict[str, str] | None = None,
                 sslopt: dict | None = None) -> websocket.WebSocket:
        """Open the TCP (TLS) connection and complete the websocket upgrade within ``timeout``
        seconds in all (not only per read: a server that drip-feeds its answer one byte a second
        would otherwise hold the caller for ever). Raises ``UpgradeFailed``."""
        ws = websocket.WebSocket(
            enable_multithread=False,
            skip_utf8_validation=True,
            sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            sslopt=sslopt,
        )
        deadline = gevent.Timeout(timeout)
        deadline.start()
        try:
            ws.connect(url, header=headers, timeout=timeout, suppress_origin=True)
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            raise UpgradeFailed(f"{type(exc).__name__}: {exc}") from None
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            raise UpgradeFailed(f"upgrade not complete within {timeout:g}s", timed_out=True) from None
        finally:
            deadline.close()
        ws.sock.settimeout(None)
        self.ws = ws
        self._decoder = FrameDecoder(self.max_message, release_memory_soon)
        return ws

    def _shutdown(self) -> None:
        """Stop reading and close the socket at once (no close handshake); idempotent."""
        ws, self.ws = self.ws, None
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

    # ------------------------------------------------------------------------------ reading
    # (who reads when: the module docstring, invariants 1-3)
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

    def _start_heartbeat(self, limit: float) -> None:
        """Declare the connection lost (``_heartbeat_lost``) once the server has been silent for
        ``limit`` seconds (plus the watch's grace); ``_last_ping`` is refreshed by the subclass."""
        self._last_ping = time.monotonic()
        self._heartbeat_limit = limit + _HEARTBEATS.grace
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
        self._wait_reading(res, timeout)
        value, exc = res.value, res.error
        res.value = res.error = None
        if exc is not None:
            raise exc
        return value

    def _wait_reading(self, res: Any, timeout: float) -> None:
        """``_await`` without taking the outcome out of ``res`` (a request's result object keeps
        its value or error; an expiry is ``res.error``, an ``_Expired``)."""
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

    def _wait(self, res: _Result, timeout: float) -> Any:
        """Wait (at most ``timeout`` s, ± the wheel's tick) for ``res`` without reading: for a
        subclass that reads in the hub (``_read_in_hub``). Raises ``_Expired`` on timeout."""
        if not res.done:
            waiter = Waiter()
            _WHEEL.add(res, timeout)
            res._waiter = waiter
            try:
                while not res.done:
                    waiter.get()
            finally:
                res._waiter = None
                _WHEEL.members.discard(res)
        value, exc = res.value, res.error
        res.value = res.error = None
        if exc is not None:
            raise exc
        return value

    def _read_in_hub(self) -> None:
        """An io watcher callback that reads and processes in the hub itself, for a subclass whose
        ``_process`` never blocks (it must not wait for anything: a reply it cannot send at once
        goes through a spawned greenlet, user callbacks too). No greenlet switch per read at all:
        the waiter is woken once, when its result is resolved. Replaces the reader role for that
        subclass (nobody else reads: its waiters use ``_wait``)."""
        io = self._io
        if io is None:
            return
        pending = self._tls_pending
        if self._read_some(io) and pending is not None:
            while io is self._io and pending() and self._read_some(io):
                pass

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
        """Read what the socket has (without waiting) and hand it to ``_process``. False: the
        connection is gone (``_lost`` was called)."""
        recv = self._recv_nb
        size = self.recv_size
        reads = _MAX_READS
        try:
            while True:
                try:
                    data = recv(size)
                except _WOULD_BLOCK:
                    return True
                if not data:
                    return self._lost(io, self.eof_reason)
                reason = self._process(data)
                if reason is not None:
                    return self._lost(io, reason)
                if len(data) < size or io is not self._io:
                    return True
                reads -= 1
                if not reads:
                    # the rest waits for the next loop iteration (the watcher is level-triggered):
                    # a server sending without pause must not keep every other connection waiting
                    return True
        except Exception as exc:  # noqa: BLE001 - mapped to a reason, or raised again
            reason = self._read_failure(exc)
        return self._lost(io, reason)

    def _read_failure(self, exc: Exception) -> str:
        """The reason a read (or what ``_process`` did with it) ended the connection; subclasses
        add their protocol's errors and call this for the rest. Unknown exceptions propagate."""
        if isinstance(exc, WireError):
            reason = f"bad websocket framing: {exc}"
            if not self._closing:
                log.warning("%s: %s", self.url, reason)
            return reason
        if isinstance(exc, (SendFailed, self.send_error)):  # a pong (or other protocol reply) could not be sent
            return str(exc)
        if isinstance(exc, (OSError, websocket.WebSocketException, AttributeError)):
            return f"connection lost: {type(exc).__name__}: {exc}"
        raise exc

    # ------------------------------------------------------------------------------ sending
    def _send_frame(self, opcode: int, payload: bytes) -> None:
        ws = self.ws
        if ws is None:
            raise self.send_error("not connected")
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
            raise self.send_error(f"send failed: {type(exc).__name__}: {exc}") from None

    def _send_control(self, opcode: int, payload: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        with self._send_lock:
            try:
                ws.sock.sendall(client_frame(opcode, payload, _getrandbits(32).to_bytes(4, "little")))
            except (OSError, AttributeError):
                pass

