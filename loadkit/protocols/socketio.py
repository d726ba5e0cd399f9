"""Sans-I/O Engine.IO 4 / Socket.IO 5 client connection state (websocket transport only).

Why sans-I/O: the same state machine is driven by the gevent client, by unit tests that feed it
literal frames, and could be driven by any other I/O shell. It never touches a socket.

The wire codec is python-engineio's ``engineio.packet.Packet`` and python-socketio's
``socketio.packet.Packet`` (binary attachments included), not hand-written ``42[...]`` strings.
On the websocket transport every websocket message is exactly one Engine.IO packet: text frames
carry ``<type><data>``, binary frames carry a raw binary MESSAGE (Engine.IO 4: no ``b`` prefix).

Usage::

    proto = SocketIOProtocol()
    for frame in incoming_frames:
        for ev in proto.receive(frame):
            ...                      # EioOpen, Connected, ConnectError, Event, Ack, Disconnected, EioClosed
        for out in proto.data_to_send():
            send(out)                # pongs queued by the protocol itself
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlencode, urlsplit, urlunsplit

import importlib

import orjson

from loadkit.protocols.errors import RemoteProtocolError
from loadkit.protocols.wsframe import client_frame  # noqa: F401 - re-exported (it lived here)


class _LazyModule:
    """A module imported on first attribute use, then read like the module itself.

    Why: ``from socketio import packet`` runs python-socketio's package ``__init__``, which imports
    its whole client and server stack (threading, requests, websocket-client) — import-time work
    a sans-I/O core must not do (it made "pure" tests monkey-patch gevent first). The packet
    classes serve only the generic, rarer paths (handshake, binary, acks); the hot path below uses
    the literal constants, so this import happens at a process's first connection, once.
    """

    def __init__(self, name: str) -> None:
        self.__dict__["_name"] = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__dict__["_name"])
        self.__dict__.update(vars(module))  # later lookups are plain attribute reads
        return getattr(module, attr)


eio_packet: Any = _LazyModule("engineio.packet")
sio_packet: Any = _LazyModule("socketio.packet")

__all__ = [
    "ProtocolError",
    "EioOpen",
    "EioClosed",
    "EioPing",
    "Connected",
    "ConnectError",
    "Event",
    "Ack",
    "Disconnected",
    "SocketIOProtocol",
    "websocket_url",
]

# Engine.IO 4 packet types on the wire (tests/test_socketio_protocol.py checks them against
# python-engineio's and python-socketio's own encodings)
EIO_PONG = "3"
# Hot-path codec. Measured on the 2-core dev VM (noisy, shared), one KTB chat message each way:
#   socketio.packet.Packet decode ~10-29 us vs json.loads ~3-5 us;
#   Packet encode (with its recursive bytes scan) ~7.5-14 us vs JSONEncoder.encode ~2.5-3.6 us.
# At ~20k round trips/s/core (50 us each) that is a third of the budget, so the one shape a load
# test sends and receives all the time -- a plain EVENT on "/" with no ack id and no binary --
# is encoded/decoded directly; the output is byte-identical to the Packet classes (see
# tests/test_socketio_protocol.py). Everything else goes through the Packet classes.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
# json.JSONEncoder.encode builds a new C encoder on every call; this one is built once (no
# circular-reference markers: load-test payloads are trees). Same output, ~1.1 vs ~2.5 us.
_C_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
) if getattr(json.encoder, "c_make_encoder", None) else None
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads minus its wrappers (~1.0 vs ~2.2 us)


def _encode_json(obj: Any) -> str:
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(obj, 0))
    return _ENCODER.encode(obj)


def _decode_json(text: str) -> Any:
    try:
        obj, end = _SCAN(text, 0)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at {exc.value}") from None
    if end != len(text):
        raise ValueError(f"extra data at {end}")
    return obj


_EIO_SIO_EVENT = "42"  # Engine.IO MESSAGE (4) carrying a Socket.IO EVENT (2)
EIO_CLOSE = "1"


class ProtocolError(RemoteProtocolError):
    """The peer sent something that is not valid Engine.IO 4 / Socket.IO 5."""


@dataclass(slots=True)
class EioOpen:
    sid: str
    ping_interval: float  # seconds
    ping_timeout: float  # seconds
    max_payload: int | None
    upgrades: list[Any]


@dataclass(slots=True)
class EioClosed:
    """The server sent an Engine.IO CLOSE packet."""


@dataclass(slots=True)
class EioPing:
    """The server pinged; a pong was queued in ``data_to_send()``."""


@dataclass(slots=True)
class Connected:
    namespace: str
    sid: str | None


@dataclass(slots=True)
class ConnectError:
    namespace: str
    data: Any  # "Authentication error" or {"message": ...} or anything the server put there

    @property
    def message(self) -> str:
        if isinstance(self.data, dict):
            return str(self.data.get("message", self.data))
        return "" if self.data is None else str(self.data)


@dataclass(slots=True)
class Event:
    namespace: str
    name: str
    args: list[Any]
    ack_id: int | None
    nbytes: int  # bytes on the wire (text frame + attachments)


@dataclass(slots=True)
class Ack:
    namespace: str
    ack_id: int
    args: list[Any]
    nbytes: int


@dataclass(slots=True)
class Disconnected:
    """The server disconnected a namespace (Socket.IO DISCONNECT)."""

    namespace: str


def websocket_url(base_url: str, path: str = "/socket.io", query: dict[str, str] | None = None) -> str:
    """Turn ``http(s)://host:port`` (or ``ws(s)://``) into the direct Engine.IO websocket URL.

    >>> websocket_url("http://127.0.0.1:5002")
    'ws://127.0.0.1:5002/socket.io/?EIO=4&transport=websocket'
    """
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {base_url!r}")
    p = "/" + path.strip("/") + "/"
    q = {"EIO": "4", "transport": "websocket"}
    if query:
        q.update(query)
    return urlunsplit((scheme, parts.netloc, p, urlencode(q), ""))


def _nsp(ns: str | None) -> str:
    return ns or "/"


#: what a server may announce for pingInterval/pingTimeout, in ms: a value outside is clamped into
#: it (a ping every 0.1 ms or once a week would make the heartbeat check meaningless)
ANNOUNCED_MS_RANGE = (100.0, 3_600_000.0)


def announced_seconds(data: dict[str, Any], key: str, default_ms: float) -> float:
    """A server-announced duration of the Engine.IO OPEN, in seconds: a number of milliseconds,
    clamped into :data:`ANNOUNCED_MS_RANGE`; anything else (a string, NaN, zero, negative) is the
    server breaking the protocol."""
    value = data.get(key, default_ms)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ProtocolError(f"Engine.IO OPEN announced {key} {value!r}: not a positive number of ms")
    lo, hi = ANNOUNCED_MS_RANGE
    return min(max(float(value), lo), hi) / 1000.0


#: binary attachments one event may announce (each is a websocket message the client must keep)
MAX_ATTACHMENTS = 1024


@dataclass
class SocketIOProtocol:
    """State of one Engine.IO/Socket.IO client connection.

    ``receive(frame)`` takes one websocket message (``str`` for text, ``bytes`` for binary) and
    returns the high-level events it completes. Encoders return the websocket messages to send
    (a list: one text frame, then one binary frame per attachment).
    """

    eio_sid: str | None = None
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int | None = None
    opened: bool = False
    closed: bool = False
    namespaces: dict[str, str] = field(default_factory=dict)  # ns -> "connecting" | "connected"
    _next_ack: int = 0
    _partial: Any = None  # socketio Packet waiting for binary attachments
    _partial_bytes: int = 0
    #: the most bytes one event with binary attachments may take (the I/O shell sets its receive
    #: limit here): a server announcing endless attachments must not grow the client's memory
    max_binary_bytes: int = 16 * 1024 * 1024
    _out: list[str | bytes] = field(default_factory=list)

    # ---------------------------------------------------------------- encoding (client -> server)
    def connect(self, namespace: str = "/", auth: Any = None) -> list[Any]:
        """Socket.IO CONNECT for ``namespace`` with an optional ``auth`` payload."""
        self.namespaces[_nsp(namespace)] = "connecting"
        pkt = sio_packet.Packet(sio_packet.CONNECT, data=auth, namespace=namespace, binary=False)
        return self._wrap(pkt.encode())

    def disconnect(self, namespace: str = "/") -> list[Any]:
        self.namespaces.pop(_nsp(namespace), None)
        pkt = sio_packet.Packet(sio_packet.DISCONNECT, namespace=namespace, binary=False)
        return self._wrap(pkt.encode())

    def close(self) -> list[Any]:
        """Engine.IO CLOSE (the polite goodbye before closing the websocket)."""
        self.closed = True
        return [EIO_CLOSE]

    def next_ack_id(self) -> int:
        ack_id = self._next_ack
        self._next_ack += 1
        return ack_id

    def emit(self, event: str, args: Iterable[Any] = (), namespace: str = "/", ack_id: int | None = None) -> list[Any]:
        """EVENT (or BINARY_EVENT when an argument holds bytes) packet(s) for ``event(*args)``.

        Fast path: encode as a plain EVENT (``binary=False`` skips python-socketio's recursive
        bytes scan); ``json.dumps`` refuses bytes with TypeError, and only then is the packet
        rebuilt with the scan so attachments are split off.
        """
        data = [event, *args]
        if ack_id is None and (namespace == "/" or not namespace):
            try:
                return [_EIO_SIO_EVENT + _encode_json(data)]
            except TypeError:  # bytes inside: needs attachments
                pass
        try:
            encoded = sio_packet.Packet(sio_packet.EVENT, data=data, namespace=namespace, id=ack_id, binary=False).encode()
        except TypeError:
            encoded = sio_packet.Packet(sio_packet.EVENT, data=data, namespace=namespace, id=ack_id).encode()
        return self._wrap(encoded)

    def emit_utf8(self, event: str, args: Iterable[Any] = (), namespace: str = "/") -> bytes | None:
        """A plain EVENT on "/" as the UTF-8 bytes of one text frame, or None when the fast
        encoding does not apply (another namespace, bytes inside, or values orjson refuses: then use
        ``emit``).

        Why: orjson encodes a chat message ~4x faster than the stdlib, and to bytes, so the client
        skips the str round trip. The JSON values are the same as ``emit``'s; the bytes differ only
        in that non-ASCII text is sent as UTF-8 instead of ``\\u`` escapes (both are valid JSON with
        the same value; the frame gets shorter).
        """
        if namespace != "/" and namespace:
            return None
        try:
            return b"42" + orjson.dumps([event, *args])
        except TypeError:  # orjson.JSONEncodeError: bytes (attachments), int keys, huge ints, ...
            return None

    def receive_text(self, payload: bytes) -> list[Any]:
        """``receive`` for a text message given as the UTF-8 bytes read off the wire.

        The hot shape (a plain EVENT on "/") is parsed by orjson straight from the bytes, with no
        ``str`` made first (~2x faster); anything else, or anything orjson refuses (bad UTF-8,
        NaN, invalid JSON), takes the ``receive`` path, which also words the errors. Numbers beyond
        64-bit integers come back as floats, as JavaScript servers send them.
        """
        if payload[:3] == b"42[" and self._partial is None:
            try:
                obj = orjson.loads(memoryview(payload)[2:])
            except orjson.JSONDecodeError:
                obj = None
            if obj and type(obj[0]) is str:
                return [Event("/", obj[0], obj[1:], None, len(payload))]
        return self.receive(payload.decode("utf-8", "replace"), len(payload))

    def ack(self, ack_id: int, args: Iterable[Any] = (), namespace: str = "/") -> list[Any]:
        pkt = sio_packet.Packet(sio_packet.ACK, data=list(args), namespace=namespace, id=ack_id)
        return self._wrap(pkt.encode())

    @staticmethod
    def _wrap(encoded: str | list[Any]) -> list[Any]:
        if isinstance(encoded, list):  # [text, attachment, ...]
            first = eio_packet.Packet(eio_packet.MESSAGE, data=encoded[0]).encode()
            return [first, *(eio_packet.Packet(eio_packet.MESSAGE, data=bytes(b)).encode() for b in encoded[1:])]
        return [eio_packet.Packet(eio_packet.MESSAGE, data=encoded).encode()]

    def data_to_send(self) -> list[Any]:
        """Frames the protocol itself wants sent (pongs). Drains the queue."""
        out, self._out = self._out, []
        return out

    # ---------------------------------------------------------------- decoding (server -> client)
    def receive(self, frame: str | bytes, nbytes: int | None = None) -> list[Any]:
        """Feed one websocket message; return the events it completes.

        ``nbytes`` is the message's size on the wire (defaults to ``len(frame)``, which for text
        counts characters, not UTF-8 bytes).
        """
        if type(frame) is str:
            if frame.startswith("42[") and self._partial is None:
                # the hot path: EVENT on "/", no ack id, no attachments; JSON scanned in place
                try:
                    obj, end = _SCAN(frame, 2)
                except StopIteration as exc:
                    raise ProtocolError(f"bad Socket.IO packet {frame[1:81]!r}: invalid JSON at {exc.value}") from None
                except ValueError as exc:
                    raise ProtocolError(f"bad Socket.IO packet {frame[1:81]!r}: {exc}") from None
                if end != len(frame):
                    raise ProtocolError(f"bad Socket.IO packet {frame[1:81]!r}: extra data at {end - 1}")
                if not obj or type(obj[0]) is not str:
                    raise ProtocolError(f"EVENT without an event name: {obj!r:.200}")
                return [Event("/", obj[0], obj[1:], None, len(frame) if nbytes is None else nbytes)]
        elif isinstance(frame, (bytes, bytearray, memoryview)):
            return self._receive_binary(bytes(frame))
        if not frame:
            raise ProtocolError("empty Engine.IO packet")
        kind = frame[0]
        if kind == "4":  # MESSAGE
            return self._receive_sio(frame[1:], len(frame) if nbytes is None else nbytes)
        try:
            pkt = eio_packet.Packet(encoded_packet=frame)
        except (ValueError, IndexError) as exc:
            raise ProtocolError(f"bad Engine.IO packet {frame[:80]!r}: {exc}") from None
        t = pkt.packet_type
        if t == eio_packet.PING:
            self._out.append(EIO_PONG)
            return [EioPing()]
        if t == eio_packet.OPEN:
            data = pkt.data
            if not isinstance(data, dict) or "sid" not in data:
                raise ProtocolError(f"bad Engine.IO OPEN payload {frame[:200]!r}")
            self.eio_sid = data["sid"]
            self.ping_interval = announced_seconds(data, "pingInterval", 25000)
            self.ping_timeout = announced_seconds(data, "pingTimeout", 20000)
            self.max_payload = data.get("maxPayload")
            self.opened = True
            return [EioOpen(self.eio_sid, self.ping_interval, self.ping_timeout, self.max_payload, data.get("upgrades", []))]
        if t == eio_packet.CLOSE:
            self.closed = True
            return [EioClosed()]
        if t in (eio_packet.PONG, eio_packet.NOOP, eio_packet.UPGRADE):
            return []
        raise ProtocolError(f"unexpected Engine.IO packet type {t} in {frame[:80]!r}")

    def _receive_binary(self, data: bytes) -> list[Any]:
        pkt = self._partial
        if pkt is None:
            raise ProtocolError(f"binary frame of {len(data)} bytes without a pending BINARY_EVENT/ACK")
        self._partial_bytes += len(data)
        if self._partial_bytes > self.max_binary_bytes:
            raise ProtocolError(f"binary attachments of one event exceed {self.max_binary_bytes} bytes")
        try:
            done = pkt.add_attachment(data)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        if not done:
            return []
        self._partial = None
        return self._sio_event(pkt, self._partial_bytes)

    def _receive_sio(self, text: str, nbytes: int) -> list[Any]:
        if self._partial is not None:
            raise ProtocolError("text packet while binary attachments are still expected")
        if text[:2] == "2[":  # hot path: EVENT on "/", no ack id, no attachments
            try:
                data = _decode_json(text[1:])
            except ValueError as exc:
                raise ProtocolError(f"bad Socket.IO packet {text[:80]!r}: {exc}") from None
            if not data or not isinstance(data[0], str):
                raise ProtocolError(f"EVENT without an event name: {data!r:.200}")
            return [Event("/", data[0], data[1:], None, nbytes)]
        try:
            pkt = sio_packet.Packet(encoded_packet=text)
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"bad Socket.IO packet {text[:80]!r}: {exc}") from None
        if pkt.attachment_count:
            if pkt.attachment_count > MAX_ATTACHMENTS:
                raise ProtocolError(f"{pkt.attachment_count} binary attachments announced (at most {MAX_ATTACHMENTS})")
            self._partial = pkt
            self._partial_bytes = nbytes
            return []
        return self._sio_event(pkt, nbytes)

    def _sio_event(self, pkt: Any, nbytes: int) -> list[Any]:
        t = pkt.packet_type
        ns = _nsp(pkt.namespace)
        if t == sio_packet.EVENT or t == sio_packet.BINARY_EVENT:
            data = pkt.data
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                raise ProtocolError(f"EVENT without an event name: {data!r:.200}")
            return [Event(ns, data[0], data[1:], pkt.id, nbytes)]
        if t == sio_packet.ACK or t == sio_packet.BINARY_ACK:
            if pkt.id is None:
                raise ProtocolError("ACK without an id")
            data = pkt.data if isinstance(pkt.data, list) else ([] if pkt.data is None else [pkt.data])
            return [Ack(ns, pkt.id, data, nbytes)]
        if t == sio_packet.CONNECT:
            self.namespaces[ns] = "connected"
            sid = pkt.data.get("sid") if isinstance(pkt.data, dict) else None
            return [Connected(ns, sid)]
        if t == sio_packet.CONNECT_ERROR:
            self.namespaces.pop(ns, None)
            return [ConnectError(ns, pkt.data)]
        if t == sio_packet.DISCONNECT:
            self.namespaces.pop(ns, None)
            return [Disconnected(ns)]
        raise ProtocolError(f"unknown Socket.IO packet type {t}")
