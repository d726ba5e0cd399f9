"""WebSocket framing (RFC 6455 section 5), sans-I/O: the decoder for server-to-client frames and
the encoder of masked client-to-server frames.

Shared by the chldo and Socket.IO clients.

Why not websocket-client's own reader: it issues two or three ``recv`` calls per frame and builds an
ABNF object each time, which caps a load generator far below the frame rates an LLM token stream
produces. This decoder takes whatever one ``recv`` returned (often dozens of frames), and returns the
complete messages in it, allocating nothing per frame but the payload slice and one small tuple.
websocket-client still does the opening handshake; :func:`client_frame` masks what the clients send
(the mask key is the caller's: this module draws no random numbers).
"""

from __future__ import annotations

import struct
from typing import Callable

from loadkit.protocols.errors import LocalProtocolError, RemoteProtocolError

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
#: a frame longer than this that arrives over several reads is collected as a list of reads
_LARGE = 1 << 16
#: a frame at least this long is reported to ``on_large``
_HUGE = 1 << 20


class WireError(RemoteProtocolError):
    """The byte stream is not valid server-to-client WebSocket framing."""


class FrameDecoder:
    """Feed it bytes, get back ``[(opcode, payload), ...]`` for every complete message.

    Data messages come back reassembled (opcode TEXT/BINARY, never CONT); control frames
    (CLOSE/PING/PONG) come back as they arrive, even in the middle of a fragmented message.
    """

    __slots__ = ("_buf", "_max", "_frag_op", "_frag_parts", "_frag_len", "_parts", "_have", "_need", "_on_large")

    def __init__(self, max_message: int = 16 * 1024 * 1024,
                 on_large: Callable[[int], None] | None = None) -> None:
        """``on_large(size)`` is called when a frame, or a fragmented message, of at least 1 MiB is
        complete: the I/O shell may then give the memory it took back to the OS once the message
        has been processed."""
        self._buf = b""
        self._max = max_message
        self._on_large = on_large
        self._frag_op = 0
        self._frag_parts: list[bytes] = []
        self._frag_len = 0
        # a large frame still arriving: its reads so far, their bytes, and the bytes it needs
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes held back because they are the start of a frame not yet complete."""
        return self._have if self._need else len(self._buf)

    def whole_text(self, data: bytes) -> bytes | None:
        """The payload when ``data`` is exactly one whole text frame (FIN, no RSV bits, unmasked,
        under 64 KiB and within the limit) and nothing is buffered (no partial frame, no large
        frame being collected, no fragmented message); None otherwise: then pass the
        same bytes to :meth:`feed`, which decides everything else.

        Why beside ``feed``'s own one-frame fast path: a token stream spread in time arrives one
        frame per read, and this returns the payload alone: no list, no tuple, no loop over
        messages in the caller (64 bytecodes here against 75 in ``feed`` plus ~25 in the
        caller's loop, bench_chldo_frames.py --micro --opcodes).
        """
        n = len(data)
        if n < 2 or data[0] != 0x81 or self._buf or self._frag_op or self._need:
            return None
        b1 = data[1]
        if b1 < 126:
            return data[2:] if n == b1 + 2 and b1 <= self._max else None
        if b1 == 126 and n >= 4 and n == ((data[2] << 8) | data[3]) + 4 and n - 4 <= self._max:
            return data[4:]
        return None

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if not self._buf and not self._frag_op and len(data) >= 2:
            # the hot case of a request/answer client: one read holds exactly one whole text or
            # binary frame (FIN set, no RSV bits, unmasked, length < 64 KiB)
            b0 = data[0]
            if b0 == 0x81 or b0 == 0x82:
                b1 = data[1]
                if b1 < 126:
                    if len(data) == b1 + 2 and b1 <= self._max:
                        return [(b0 & 0x0F, data[2:])]
                elif b1 == 126 and len(data) >= 4:
                    length = (data[2] << 8) | data[3]
                    if len(data) == length + 4 and length <= self._max:
                        return [(b0 & 0x0F, data[4:])]
        if self._need:
            # the rest of a large frame: keep the reads and join them once, when the frame is
            # complete (appending each read to one growing bytes would copy it again every read:
            # quadratic in the frame's size, and a trail of ever larger freed blocks)
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._parts)
            if self._need >= _HUGE and self._on_large is not None:
                self._on_large(self._need)
            self._parts, self._have, self._need = [], 0, 0
        else:
            buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        want = 0
        out: list[tuple[int, bytes]] = []
        append = out.append
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b1 & 0x80:
                raise WireError("masked frame from server")
            if b0 & 0x70:
                raise WireError("reserved bits set (no extension was negotiated)")
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = _U16.unpack_from(buf, head)[0]
                head += 2
            elif length == 127:
                if n - pos < 10:
                    break
                length = _U64.unpack_from(buf, head)[0]
                head += 8
            if length > self._max:
                raise WireError(f"frame of {length} bytes exceeds the {self._max}-byte limit")
            end = head + length
            if end > n:
                want = end - pos
                break
            payload = buf[head:end]
            pos = end
            op = b0 & 0x0F
            if b0 & 0x80 and (op == OP_TEXT or op == OP_BINARY) and not self._frag_op:
                append((op, payload))  # the hot path: one whole data frame
            elif op >= 0x8:
                if not b0 & 0x80 or length > 125:
                    raise WireError("fragmented or oversized control frame")
                if op not in (OP_CLOSE, OP_PING, OP_PONG):
                    raise WireError(f"unknown control opcode {op:#x}")
                append((op, payload))
            else:
                self._fragment(op, bool(b0 & 0x80), payload, append)
        if pos < n:
            self._buf = buf[pos:]
            if want > _LARGE:
                self._parts, self._have, self._need = [self._buf], n - pos, want
        else:
            self._buf = b""
        return out

    def _fragment(self, op: int, fin: bool, payload: bytes, append: Callable[[tuple[int, bytes]], None]) -> None:
        if op in (OP_TEXT, OP_BINARY):
            if self._frag_op:
                raise WireError("new data frame inside a fragmented message")
            self._frag_op, self._frag_parts, self._frag_len = op, [payload], len(payload)
        elif op == OP_CONT:
            if not self._frag_op:
                raise WireError("continuation frame without a message to continue")
            self._frag_parts.append(payload)
            self._frag_len += len(payload)
            if self._frag_len > self._max:
                raise WireError(f"message exceeds the {self._max}-byte limit")
        else:
            raise WireError(f"unknown data opcode {op:#x}")
        if fin:
            append((self._frag_op, b"".join(self._frag_parts)))
            if self._frag_len >= _HUGE and self._on_large is not None:
                self._on_large(self._frag_len)
            self._frag_op, self._frag_parts, self._frag_len = 0, [], 0


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a CLOSE frame's payload; code None when the peer sent none."""
    if len(payload) < 2:
        return None, ""
    return _U16.unpack_from(payload)[0], payload[2:].decode("utf-8", "replace")


def encode_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked frame as a server would send it (tests and fakes use this)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = bytes((b0, 126)) + _U16.pack(n)
    else:
        head = bytes((b0, 127)) + _U64.pack(n)
    return head + payload


def client_frame(opcode: int, payload: bytes, mask_key: bytes) -> bytes:
    """One final, masked client-to-server websocket frame (RFC 6455 §5.2).

    Why here and not websocket-client's ``ABNF``: building an ABNF object per message costs several
    times more than these few integer operations, and a load generator sends one per round trip.
    A control frame (CLOSE, PING, PONG) over 125 bytes is a :class:`LocalProtocolError`: nothing
    is sent.
    """
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif opcode & 0x8:
        raise LocalProtocolError(f"control frame {opcode:#x} of {n} bytes (at most 125 allowed)")
    elif n < 65536:
        head = bytes((b0, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0xFF)) + n.to_bytes(8, "big")
    if not n:
        return head + mask_key
    key = int.from_bytes((mask_key * ((n + 3) >> 2))[:n], "big")
    return head + mask_key + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
