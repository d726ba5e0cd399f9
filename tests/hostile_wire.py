"""The WebSocket wire of the two hostile servers (``hostile_ktb.py``, ``hostile_chldo.py``): test code
that must be able to say what a correct server never says, so it does not use a WebSocket library.

One server frame builder with every field under the caller's control (also the illegal values: a
mask from the server, RSV bits, a length that lies), the upgrade's ``Sec-WebSocket-Accept``, and one
client-frame reader over any "give me exactly n bytes" function.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ZERO_KEY = b"\0\0\0\0"  # a mask that changes nothing: the mask bit alone is the fault


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


def frame(op: int, payload: bytes | str = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = None,
          length: int | None = None) -> bytes:
    """One server frame: opcode ``op``, ``rsv`` the three RSV bits as 0..7, ``mask`` a 4-byte key
    (servers must not mask), ``length`` the length to announce (default: the true one)."""
    data = payload.encode() if isinstance(payload, str) else payload
    n = len(data) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes((b0, m | n))
    elif n < 65536:
        head = bytes((b0, m | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, m | 127)) + struct.pack("!Q", n)
    if mask:
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        head += mask
    return head + data


def read_frame(exactly: Callable[[int], bytes]) -> tuple[int, bytes]:
    """One client frame as (opcode, unmasked payload); ``exactly(n)`` returns n bytes or raises
    when the peer is gone (the caller's exception passes through)."""
    b0, b1 = exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exactly(8))[0]
    key = exactly(4) if b1 & 0x80 else ZERO_KEY
    data = exactly(n)
    return b0 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))
