"""python-socketio's server made to behave like the KTB servers' Socket.IO layer (both variants).

Built on python-socketio's ``socketio.Server`` (Engine.IO 4 / Socket.IO 5, websocket and polling).
``KtbSocketServer`` adds what netty-socketio does differently from python-socketio:

* undecodable Engine.IO / Socket.IO packets and handler errors are logged and dropped, the
  connection stays usable (netty-socketio's ``exceptionCaught`` path) — no traceback spam, no ack;
* ``40`` (no auth) and ``40{}`` (empty auth) are told apart, as the Java auth listener does;
* CONNECT_ERROR data is sent verbatim (a bare string or ``{"message": ...}``);
* events a handler emits while the connection is being accepted are delivered right after the
  CONNECT ack (socket.io-client buffers them that way against Java).

Kept apart from the event handlers (``sockets.py`` for Java, ``node/sockets.py`` for Node) because
both variants build on it: the handlers decide what a chat event means, this module how packets travel.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import engineio
import gevent
import socketio
from socketio import packet as sio_packet

from . import jsonfast

log = logging.getLogger("loadkit.ktb.socket")

DROP = object()  # handler result: the payload did not deserialise → no answer, no ack (Java drops it)


class RefuseConnection(socketio.exceptions.ConnectionRefusedError):
    """CONNECT_ERROR whose data is sent as given (python-socketio would wrap a string in a dict)."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.error_args = data


class _OneLineErrors(logging.Filter):
    """Turn engineio's logged tracebacks (bad polling bodies etc.) into one-line warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class TolerantEngineIOServer(engineio.Server):
    """engineio server whose server-side disconnect never blocks.

    ``engineio.Server.disconnect`` waits until the session's send queue is drained; for a polling
    client that sent an unknown packet type and is not polling any more that wait never ends, and
    the POST that triggered it hangs for ever.
    """

    def disconnect(self, sid: str | None = None) -> None:
        targets = [sid] if sid is not None else list(self.sockets)
        for s in targets:
            sock = self.sockets.get(s)
            if sock is not None:
                sock.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(s, None)


class KtbPacket(sio_packet.Packet):
    """Socket.IO packet that skips the recursive "contains bytes?" scan of every outgoing payload.

    This server never emits binary data, and the stock scan (``functools.reduce`` over every
    nested value) was one of the largest costs of a chat broadcast.
    """

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return isinstance(data, (bytes, bytearray))


class KtbSocketServer(socketio.Server):
    """``socketio.Server`` with netty-socketio's tolerance of bad packets (see module doc)."""

    def _engineio_server_class(self) -> type:
        return TolerantEngineIOServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_auth: Any = None
        self._after_connect: list[tuple[str, Any, str]] | None = None

    def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            self._binary_packet.pop(eio_sid, None)
            log.debug("dropped undecodable or failing packet from %s: %r (%s)", eio_sid, str(data)[:80], exc)

    def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        if namespace not in (None, "", "/"):
            self._send_packet(eio_sid, self.packet_class(sio_packet.CONNECT_ERROR, data="Invalid namespace",
                                                         namespace=namespace))
            return
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            return  # a second CONNECT on a connected namespace: ignore
        self.raw_auth = data
        self._after_connect = []
        try:
            super()._handle_connect(eio_sid, namespace, data)
        finally:
            pending, self._after_connect = self._after_connect, None
        for event, payload, to in pending:
            self.emit(event, payload, to=to)

    def emit_soon(self, event: str, data: Any, to: str) -> None:
        """Emit now, or right after the CONNECT ack when called while accepting a connection."""
        if self._after_connect is not None:
            self._after_connect.append((event, data, to))
        else:
            self.emit(event, data, to=to)

    def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):  # noqa: D401
        r = server._trigger_event(data[0], namespace, sid, *data[1:])
        if r is DROP:
            return
        if r is not self.not_handled and id is not None:
            server._send_packet(eio_sid, self.packet_class(sio_packet.ACK, namespace=namespace, id=id, data=[]))


def precise_sleep(seconds: float) -> None:
    """Cooperative sleep accurate to well under a millisecond.

    ``gevent.sleep`` alone overshoots by up to ~1 ms (epoll's millisecond timeout granularity); as
    ``--delay-ms`` is a ground truth for latency measurement, the last 2 ms are spent yielding
    (``sleep(0)`` lets every other greenlet run) until the deadline.
    """
    deadline = time.perf_counter() + seconds
    if seconds > 0.003:
        gevent.sleep(seconds - 0.002)
    while time.perf_counter() < deadline:
        gevent.sleep(0)


class AppliedDelay:
    """``--delay-ms`` as the server really applied it, for the ground-truth tests and the user.

    A delay is exact only to the scheduler: on a loaded machine the handler wakes late (the median
    overshoot was 0.75 ms with the test suite running beside it). Each applied delay is counted in
    10 µs buckets (a bounded table, not a list: a server may run for hours), and the server's stop
    line gives their median, so a test compares the client's figure with what the server did.
    """

    __slots__ = ("seconds", "buckets")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.buckets: dict[int, int] = {}

    def __call__(self) -> None:
        t0 = time.perf_counter()
        precise_sleep(self.seconds)
        key = round((time.perf_counter() - t0) * 100_000)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def summary(self) -> str:
        """``delay-ms 50 applied 312 times: median 50.71 ms, max 53.20 ms`` (or ``... applied 0 times``)."""
        n = sum(self.buckets.values())
        head = f"delay-ms {self.seconds * 1000:g} applied {n} times"
        if not n:
            return head
        seen, median = 0, 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen * 2 >= n:
                median = key
                break
        return f"{head}: median {median / 100:.2f} ms, max {max(self.buckets) / 100:.2f} ms"


def _tolerant_websocket_class() -> type:
    """engineio's gevent websocket wrapper, minus the crash on undecodable Engine.IO packets.

    engineio decodes each websocket message outside any ``try``: an empty text frame, a frame that
    does not start with a packet-type digit, or bad base64 after ``b`` would kill the reader and
    leave the session half-dead until the ping timeout. Such frames are dropped here instead, the
    way netty-socketio logs and drops a packet it cannot decode.
    """
    import base64
    import binascii

    from engineio.async_drivers.gevent import WebSocketWSGI

    class TolerantWebSocketWSGI(WebSocketWSGI):
        def wait(self) -> Any:
            while True:
                msg = self._sock.receive()
                if msg is None or not isinstance(msg, str):
                    return msg
                if msg and msg[0] in "0123456":
                    return msg
                if msg[:1] == "b":
                    try:
                        base64.b64decode(msg[1:])
                        return msg
                    except (binascii.Error, ValueError):
                        pass
                log.debug("dropped undecodable Engine.IO packet %r", msg[:80])

    return TolerantWebSocketWSGI


def make_socket_server(*, max_payload: int = 65536) -> KtbSocketServer:
    """A gevent ``KtbSocketServer`` configured like the Java netty-socketio server."""
    sio = KtbSocketServer(
        async_mode="gevent",
        serializer=KtbPacket,
        json=jsonfast,
        async_handlers=False,
        cors_allowed_origins="*",
        ping_interval=25,
        ping_timeout=60,
        max_http_buffer_size=max_payload,
        logger=False,
        engineio_logger=False,
        transports=["polling", "websocket"],
    )
    sio.eio._async = dict(sio.eio._async, websocket=_tolerant_websocket_class())
    sio.eio.logger.addFilter(_OneLineErrors())
    return sio