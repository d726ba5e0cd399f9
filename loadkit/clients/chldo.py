"""gevent WebSocket client for the chldo ``sendmsg`` stream: one receive greenlet per connection.

websocket-client does the opening handshake and the (masked) sending; the receive direction is one
greenlet that reads up to 64 KiB at a time and feeds the bytes through :class:`FrameDecoder` and
:class:`ChldoSession` (both sans-I/O), so a recv that carries forty token frames costs one syscall and
forty ``json.loads``. Timestamps (``time.perf_counter()``) are taken once per recv, right after the
bytes arrive.

Needs a gevent-patched process (Locust patches on import; scripts call ``gevent.monkey.patch_all()``
first): the socket calls must yield to the hub, or the receive greenlet would block the thread.
"""

from __future__ import annotations

import json
import socket
from time import perf_counter
from typing import Any, Callable

import gevent
from gevent.event import Event
import websocket

from loadkit.protocols.chldo_turn import (
    ChldoConnectError,
    ChldoProtocolError,
    ChldoSession,
    Turn,
)
from loadkit.protocols.wsframe import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameDecoder,
    WireError,
    parse_close,
)

RECV_BYTES = 65536
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class ChldoClient:
    """One WebSocket connection to a chldo endpoint, carrying one sendmsg turn at a time."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        keep_text: bool = False,
        max_message: int = 16 * 1024 * 1024,
        on_stray: Callable[[ChldoProtocolError], None] | None = None,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.max_message = max_message
        self.on_stray = on_stray
        self.session = ChldoSession(keep_text=keep_text)
        self._ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._done = Event()
        self._closing = False
        self.lost_reason: str | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None and self.lost_reason is None

    # ---- connection ------------------------------------------------------------------------------
    def connect(self) -> float:
        """Open the WebSocket; returns the handshake time in ms, raises ChldoConnectError."""
        self.close()
        self.session = ChldoSession(keep_text=self.session.keep_text)
        self.lost_reason = None
        self._closing = False
        t0 = perf_counter()
        # the whole handshake is bounded, not only each read: a server that drip-feeds its answer
        # one byte a second would otherwise hold the user for ever
        deadline = gevent.Timeout(self.connect_timeout)
        deadline.start()
        try:
            ws = websocket.create_connection(
                self.url,
                timeout=self.connect_timeout,
                enable_multithread=True,
                skip_utf8_validation=True,
                sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            )
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            raise ChldoConnectError(f"connect {self.url}: {type(exc).__name__}: {exc}") from None
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise
            raise ChldoConnectError(
                f"connect {self.url}: handshake not complete within {self.connect_timeout:g}s") from None
        finally:
            deadline.close()
        elapsed = (perf_counter() - t0) * 1000.0
        ws.sock.settimeout(None)
        self._ws = ws
        self._reader = gevent.spawn(self._receive_loop, ws)
        return elapsed

    def close(self) -> None:
        """Stop the receive loop and close the socket (a close frame, no waiting for its echo)."""
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if ws is None:
            return
        self._closing = True
        if reader is not None and not reader.dead:
            reader.kill(block=True, timeout=2)
        try:
            if self.lost_reason is None:
                ws.send_close(1000, b"bye")  # no waiting for the echo: the receive loop is gone
        except Exception:  # the peer may be long gone; closing must never raise
            pass
        try:
            ws.shutdown()
        except Exception:
            pass

    # ---- one turn -----------------------------------------------------------------------------------
    def sendmsg(self, request: dict[str, Any], timeout: float) -> Turn:
        """Send one sendmsg request and block (gevent-wise) until END, a validation error, loss or timeout.

        Always returns the :class:`Turn`; ``turn.error`` says what went wrong.
        """
        ws = self._ws
        if ws is None:
            raise RuntimeError("sendmsg on a client that is not connected")
        data = _dumps(request)
        done = self._done = Event()
        turn = self.session.begin(perf_counter())
        if self.lost_reason is not None:
            self.session.connection_lost(self.lost_reason, perf_counter())
            return turn
        turn.t_send = perf_counter()
        try:
            ws.send(data)
        except (websocket.WebSocketException, OSError) as exc:
            self._lost(f"send failed: {type(exc).__name__}: {exc}")
            return turn
        if not done.wait(timeout):
            if self.session.timed_out(timeout, perf_counter()) is not None:
                self.close()  # the rest of that stream would land in the next turn
        return turn

    def drain_stray(self) -> list[ChldoProtocolError]:
        """Protocol violations seen outside any turn since the last call."""
        stray = self.session.stray
        if not stray:
            return []
        self.session.stray = []
        return stray

    # ---- receive loop ----------------------------------------------------------------------------------
    def _lost(self, reason: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = reason
        if self.session.connection_lost(reason, perf_counter()) is not None:
            self._done.set()

    def _receive_loop(self, ws: websocket.WebSocket) -> None:
        sock = ws.sock
        recv = sock.recv
        feed = FrameDecoder(self.max_message).feed
        session = self.session
        on_text = session.on_text
        clock = perf_counter
        while True:
            try:
                data = recv(RECV_BYTES)
            except (OSError, ValueError) as exc:
                if not self._closing:
                    self._lost(f"connection lost: {type(exc).__name__}: {exc}")
                return
            now = clock()
            if not data:
                if not self._closing:
                    self._lost("connection closed by the server without a close frame")
                return
            try:
                messages = feed(data)
            except WireError as exc:
                session._violation(f"bad WebSocket framing: {exc}", now)
                self._lost(f"bad WebSocket framing: {exc}")
                return
            for op, payload in messages:
                if op == OP_TEXT:
                    if on_text(payload, now) is not None:
                        self._done.set()
                elif op == OP_PING:
                    try:
                        ws.pong(payload)
                    except (websocket.WebSocketException, OSError):
                        pass
                elif op == OP_CLOSE:
                    code, reason = parse_close(payload)
                    try:
                        ws.send_close(1000 if code is None else code)
                    except (websocket.WebSocketException, OSError):
                        pass
                    self._lost(f"server closed the connection: code {code} {reason}".rstrip())
                    return
                elif op == OP_BINARY:
                    session.on_binary(payload, now)
                # PONG: nothing to do
            if session.stray and self.on_stray is not None:
                for violation in self.drain_stray():
                    self.on_stray(violation)
