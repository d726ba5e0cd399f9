"""Benchmark: the Socket.IO wire codec on the hot path, python-socketio's Packet classes vs loadkit's.

    python bench/bench_socketio_codec.py [--number 20000] [--repeat 7]

Why it exists: the issue asks to reuse python-socketio/python-engineio's packet classes unless a
benchmark proves them the bottleneck. loadkit uses them for everything except the one shape a chat
load test sends and receives all the time (a plain EVENT on "/", no ack id, no binary). This prints,
per operation on one KTB chat message (the emit and the ``message`` echo the server broadcasts):

- ``packet``: ``socketio.packet.Packet`` + ``engineio.packet.Packet``, as python-socketio's own
  client does it (encode with its binary scan; decode from the ``str`` of the frame);
- ``stdlib``: loadkit's ``SocketIOProtocol.emit``/``receive`` fast path (one prebuilt C JSON
  encoder / ``scan_once``; byte-identical output to ``packet``);
- ``orjson``: ``emit_utf8``/``receive_text``, which the client uses (bytes straight to and from
  the wire; decoding includes what the other two need first: the UTF-8 decode of the frame).

Best of ``--repeat`` runs, in microseconds per operation, next to the 50 us a round trip may cost
at 20 000 round trips/s on one core. Every variant's result is checked against ``packet``'s first.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engineio import packet as eio_packet  # noqa: E402
from socketio import packet as sio_packet  # noqa: E402

from loadkit.protocols.socketio import SocketIOProtocol  # noqa: E402

CONTENT = "lk 12.345~4.242~7~19~1.763.724.452.123.456"
EMIT_ARGS = ({"room": "6740c0ffee0000000000abcd", "type": "text", "content": CONTENT},)
ECHO = {
    "_id": "6740c0ffee0000000000beef", "room": "6740c0ffee0000000000abcd", "content": CONTENT,
    "type": "text", "timestamp": "2026-11-30T03:14:15.926Z", "readers": [], "reactions": {},
    "sender": {"_id": "6740c0ffee0000000000cafe", "name": "lk user 7", "email": "lk-7@loadkit.test",
               "profileImage": ""},
}


def packet_encode() -> str:
    pkt = sio_packet.Packet(sio_packet.EVENT, data=["chatMessage", *EMIT_ARGS], namespace="/")
    return eio_packet.Packet(eio_packet.MESSAGE, data=pkt.encode()).encode()


def packet_decode(frame: bytes) -> list:
    eio = eio_packet.Packet(encoded_packet=frame.decode("utf-8"))
    pkt = sio_packet.Packet(encoded_packet=eio.data)
    return pkt.data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    proto = SocketIOProtocol()
    frame_str = packet_encode()
    stdlib_str = proto.emit("chatMessage", EMIT_ARGS)[0]
    orjson_bytes = proto.emit_utf8("chatMessage", EMIT_ARGS)
    assert stdlib_str == frame_str, (stdlib_str, frame_str)
    assert packet_decode(orjson_bytes) == ["chatMessage", *EMIT_ARGS]

    echo_frame = SocketIOProtocol().emit("message", (ECHO,))[0].encode("utf-8")  # as the server sends it
    want = ["message", ECHO]
    assert packet_decode(echo_frame) == want
    ev = proto.receive(echo_frame.decode("utf-8"), len(echo_frame))[0]
    assert [ev.name, *ev.args] == want
    ev = proto.receive_text(echo_frame)[0]
    assert [ev.name, *ev.args] == want

    cases = {
        "encode chatMessage": {
            "packet": packet_encode,
            "stdlib": lambda: proto.emit("chatMessage", EMIT_ARGS),
            "orjson": lambda: proto.emit_utf8("chatMessage", EMIT_ARGS),
        },
        "decode message echo": {
            "packet": lambda: packet_decode(echo_frame),
            "stdlib": lambda: proto.receive(echo_frame.decode("utf-8"), len(echo_frame)),
            "orjson": lambda: proto.receive_text(echo_frame),
        },
    }
    print(f"python {sys.version.split()[0]}, best of {args.repeat} x {args.number}, us per operation "
          f"(a round trip at 20 000/s on one core may cost 50 us in all)")
    for case, variants in cases.items():
        best = {name: min(timeit.repeat(fn, number=args.number, repeat=args.repeat)) / args.number * 1e6
                for name, fn in variants.items()}
        base = best["packet"]
        cells = "   ".join(f"{name} {us:6.2f} us ({base / us:4.1f}x)" for name, us in best.items())
        print(f"{case:22s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
