"""gevent WebSocket client for the chldo ``sendmsg`` stream, on the shared transport.

:class:`~loadkit.clients.transport.WsTransport` does the opening handshake, the masked sending and
the reading. Unlike the Socket.IO client, nothing here takes the reader role: the stream is read in
the io watcher's callback itself (:meth:`ChldoClient._on_readable`), because processing a frame never
waits; a token frame then costs no greenlet switch at all (the greenlet in :meth:`sendmsg` is woken
once, at the end of its turn), which is what lets one core absorb a fast stream of single-frame reads.
Each read's bytes go through :class:`FrameDecoder` and :class:`ChldoSession` (both sans-I/O), so a
recv that carries forty token frames costs one syscall and forty JSON parses. Timestamps
(``time.perf_counter()``) are taken once per recv, right after the bytes arrive.

Needs a gevent-patched process (Locust patches on import; scripts call ``gevent.monkey.patch_all()``
first): the socket calls must yield to the hub.
"""

from __future__ import annotations

import json
from time import perf_counter
from typing import Any, Callable

import gevent

from loadkit.clients.schedulers import _Expired, _Result
from loadkit.clients.transport import _MAX_READS, _WOULD_BLOCK, UpgradeFailed, WsTransport
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
    OP_PONG,
    OP_TEXT,
    WireError,
    parse_close,
)

RECV_BYTES = 65536
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class ChldoClient(WsTransport):
    """One WebSocket connection to a chldo endpoint, carrying one sendmsg turn at a time."""

    recv_size = RECV_BYTES  # a fast stream packs dozens of token frames into one read
    eof_reason = "connection closed by the server without a close frame"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 10.0,
        keep_text: bool = False,
        max_message: int = 16 * 1024 * 1024,
        on_stray: Callable[[ChldoProtocolError], None] | None = None,
    ) -> None:
        self._init_transport()
        self.url = url
        self.connect_timeout = connect_timeout
        self.max_message = max_message
        self.on_stray = on_stray
        self.session = ChldoSession(keep_text=keep_text)
        self._turn: _Result | None = None  # what the sendmsg greenlet waits for: the turn's end
        self._ended = False  # the socket was shut after a loss (self.ws is kept: close() still runs)
        self.lost_reason: str | None = None
        self._pong: bytes | None = None  # payload of the latest ping not answered yet

    @property
    def connected(self) -> bool:
        return self.ws is not None and self.lost_reason is None

    # ---- connection ------------------------------------------------------------------------------
    def connect(self) -> float:
        """Open the WebSocket; returns the handshake time in ms, raises ChldoConnectError."""
        self.close()
        self.session = ChldoSession(keep_text=self.session.keep_text)
        self.lost_reason = None
        self._closing = False
        self._pong = None
        t0 = perf_counter()
        try:
            ws = self._upgrade(self.url, self.connect_timeout)
        except UpgradeFailed as exc:
            if exc.timed_out:
                raise ChldoConnectError(
                    f"connect {self.url}: handshake not complete within {self.connect_timeout:g}s") from None
            raise ChldoConnectError(f"connect {self.url}: {exc}") from None
        elapsed = (perf_counter() - t0) * 1000.0
        self._start_reading(ws)
        return elapsed

    # ---- reading (the hot path) -------------------------------------------------------------------
    def _on_readable(self) -> None:
        """The io watcher's callback, run by the hub: read what arrived and process it here.

        This is ``WsTransport._read_in_hub`` + ``_read_some`` + ``_process`` in one function for a
        plain socket (TLS goes through the transport's generic loop): nothing in it waits (pongs
        and close replies go out without blocking or from a spawned greenlet; on_stray runs in a
        spawned greenlet), so a token frame costs no greenlet switch, and a read that is one whole
        text frame (a token stream spread in time: every read) goes straight from the socket to
        the pure core: ``FrameDecoder.whole_text`` then ``ChldoSession.on_text``, no list or tuple
        per frame. Measured with ``bench_chldo_frames.py --micro 2000 --trees <before>,.`` (the
        per-frame path without the event loop): 344 -> 296 bytecodes per frame, 7.7 -> 7.3 µs
        CPU per frame including both ends' syscalls (medians of 5 interleaved runs); the
        decisions stay in the cores.
        """
        io = self._io
        recv = self._recv_nb
        if io is None or recv is None:
            return
        if self._tls_pending is not None:  # decrypted bytes may wait in the SSL buffer
            self._read_in_hub()
            return
        size = self.recv_size
        reads = _MAX_READS
        try:
            while True:
                try:
                    data = recv(size)
                except _WOULD_BLOCK:
                    return
                if not data:
                    self._lost(io, self.eof_reason)
                    return
                now = perf_counter()
                payload = self._decoder.whole_text(data)
                if payload is None:
                    reason = self._process(data)
                    if reason is not None:
                        self._lost(io, reason)
                        return
                else:
                    session = self.session
                    if session.on_text(payload, now) is not None:
                        self._end_turn()
                    if session.stray and self.on_stray is not None:
                        gevent.spawn(self._report_stray)
                if len(data) < size or io is not self._io:
                    return
                reads -= 1
                if not reads:  # fair to the other connections, as in WsTransport._read_some
                    return
        except Exception as exc:  # noqa: BLE001 - mapped to a reason, or raised again
            self._lost(io, self._read_failure(exc))

    def close(self) -> None:
        """Stop reading and close the socket (a close frame, no waiting for its echo)."""
        if self.ws is None:
            return
        self._closing = True
        if self.lost_reason is None:
            try:
                self._send_control(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
            except Exception:  # noqa: BLE001 - the peer may be long gone; closing must never raise
                pass
        self._shutdown()

    # ---- one turn -----------------------------------------------------------------------------------
    def sendmsg(self, request: dict[str, Any], timeout: float) -> Turn:
        """Send one sendmsg request and block (gevent-wise) until END, a validation error, loss or timeout.

        Always returns the :class:`Turn`; ``turn.error`` says what went wrong.
        """
        if self.ws is None:
            raise RuntimeError("sendmsg on a client that is not connected")
        data = _dumps(request).encode("utf-8")
        res = self._turn = _Result()
        turn = self.session.begin(perf_counter())
        if self.lost_reason is not None:
            self.session.connection_lost(self.lost_reason, perf_counter())
            return turn
        turn.t_send = perf_counter()
        try:
            self._send_frame(OP_TEXT, data)
        except ConnectionError as exc:
            self._lost(self._io, str(exc))
            return turn
        try:
            self._wait(res, timeout)
        except _Expired:
            if self.session.timed_out(timeout, perf_counter()) is not None:
                self.close()  # the rest of that stream would land in the next turn
        finally:
            self._turn = None
        return turn

    def drain_stray(self) -> list[ChldoProtocolError]:
        """Protocol violations seen outside any turn since the last call."""
        stray = self.session.stray
        if not stray:
            return []
        self.session.stray = []
        return stray

    # ---- reading (called in the hub, by the io watcher's callback: nothing below may wait) -------
    def _end_turn(self) -> None:
        res = self._turn
        if res is not None:
            res.set(True)

    def _lost(self, io: Any, reason: str) -> bool:
        if self._closing:
            return False
        if self.lost_reason is None:
            self.lost_reason = reason
        if self.session.connection_lost(reason, perf_counter()) is not None:
            self._end_turn()
        self._stop_reading()
        return False

    def _process(self, data: bytes) -> str | None:
        now = perf_counter()
        session = self.session
        try:
            messages = self._decoder.feed(data)
        except WireError as exc:
            session._violation(f"bad WebSocket framing: {exc}", now)
            return f"bad WebSocket framing: {exc}"
        on_text = session.on_text
        for op, payload in messages:
            if op == OP_TEXT:
                if on_text(payload, now) is not None:
                    self._end_turn()
            elif op == OP_PING:
                # one pong greenlet at a time, answering the latest ping (RFC 6455 5.5.3): a ping
                # flood must not pile up a greenlet per ping behind a full send buffer
                pending, self._pong = self._pong, payload
                if pending is None:
                    gevent.spawn(self._send_pongs)
            elif op == OP_CLOSE:
                code, reason = parse_close(payload)
                gevent.spawn(self._send_control, OP_CLOSE, (1000 if code is None else code).to_bytes(2, "big"))
                return f"server closed the connection: code {code} {reason}".rstrip()
            elif op == OP_BINARY:
                session.on_binary(payload, now)
            # PONG: nothing to do
        if session.stray and self.on_stray is not None:
            gevent.spawn(self._report_stray)
        return None

    def _send_pongs(self) -> None:
        while (payload := self._pong) is not None:
            self._send_control(OP_PONG, payload)
            if self._pong is payload:  # no newer ping meanwhile
                self._pong = None

    def _report_stray(self) -> None:
        if self.on_stray is not None:
            for violation in self.drain_stray():
                self.on_stray(violation)
