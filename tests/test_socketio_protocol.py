"""Sans-I/O Engine.IO 4 / Socket.IO 5 state: literal frames in, events and frames out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadkit.protocols.socketio import (
    Ack,
    ConnectError,
    Connected,
    Disconnected,
    EioClosed,
    EioOpen,
    EioPing,
    Event,
    ProtocolError,
    SocketIOProtocol,
    websocket_url,
)

OPEN = '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":60000}'


def test_importing_the_core_imports_no_io_stack():
    """A sans-I/O core: importing it loads no gevent, no python-socketio client/server stack, no
    requests, no websocket-client (python -X importtime lists every module imported)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import loadkit.protocols.socketio"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "loadkit.protocols.socketio" in modules
    heavy = {m for m in modules if m.split(".")[0] in ("gevent", "requests", "websocket", "socketio", "engineio")}
    assert not heavy, sorted(heavy)


def test_wire_constants_are_the_libraries_own_encodings():
    from engineio import packet as eio
    from socketio import packet as sio

    from loadkit.protocols import socketio as core

    assert core.EIO_PONG == eio.Packet(eio.PONG).encode()
    assert core.EIO_CLOSE == eio.Packet(eio.CLOSE).encode()
    assert core._EIO_SIO_EVENT == str(eio.MESSAGE) + str(sio.EVENT)


def test_websocket_url_variants():
    assert websocket_url("http://127.0.0.1:5002") == "ws://127.0.0.1:5002/socket.io/?EIO=4&transport=websocket"
    assert websocket_url("https://h:443/").startswith("wss://h:443/socket.io/?")
    assert websocket_url("ws://h:1", "/chat/io").startswith("ws://h:1/chat/io/?EIO=4")
    with pytest.raises(ValueError):
        websocket_url("ftp://h")
    with pytest.raises(ValueError):
        websocket_url("127.0.0.1:5002")


def test_open_ping_pong_and_close():
    p = SocketIOProtocol()
    [ev] = p.receive(OPEN)
    assert isinstance(ev, EioOpen) and ev.sid == "abc" and ev.ping_interval == 25.0 and ev.ping_timeout == 60.0
    assert p.opened and p.data_to_send() == []
    assert isinstance(p.receive("2")[0], EioPing)
    assert p.data_to_send() == ["3"]
    assert p.data_to_send() == []
    assert p.receive("6") == []
    assert isinstance(p.receive("1")[0], EioClosed)
    assert p.close() == ["1"]


def test_connect_with_auth_and_ack():
    p = SocketIOProtocol()
    p.receive(OPEN)
    [frame] = p.connect("/", {"token": "t", "sessionId": "s"})
    assert frame[:2] == "40" and json.loads(frame[2:]) == {"token": "t", "sessionId": "s"}
    assert p.connect("/admin", None) == ["40/admin,"]
    [ev] = p.receive('40{"sid":"xyz"}')
    assert ev == Connected("/", "xyz")
    [ev] = p.receive('40/admin,{"sid":"q"}')
    assert ev == Connected("/admin", "q")
    assert p.namespaces == {"/": "connected", "/admin": "connected"}


@pytest.mark.parametrize(
    "frame,data,message",
    [
        ('44"Authentication error"', "Authentication error", "Authentication error"),
        ('44{"message":"Invalid session"}', {"message": "Invalid session"}, "Invalid session"),
    ],
)
def test_connect_error_string_and_object(frame, data, message):
    p = SocketIOProtocol()
    p.connect("/", {})
    [ev] = p.receive(frame)
    assert isinstance(ev, ConnectError) and ev.data == data and ev.message == message
    assert "/" not in p.namespaces


def test_event_decoding_with_namespace_and_ack_id():
    p = SocketIOProtocol()
    [ev] = p.receive('42["message",{"content":"hi ☃"}]', 40)
    assert ev == Event("/", "message", [{"content": "hi ☃"}], None, 40)
    [ev] = p.receive('42/admin,7["whoami"]')
    assert ev.namespace == "/admin" and ev.name == "whoami" and ev.args == [] and ev.ack_id == 7
    [ev] = p.receive("433[]")  # ACK id 3, no args
    assert ev == Ack("/", 3, [], 5)
    [ev] = p.receive("41")
    assert ev == Disconnected("/")


def test_emit_encoding_uses_socketio_packets():
    p = SocketIOProtocol()
    assert p.emit("joinRoom", ["r1"]) == ['42["joinRoom","r1"]']
    ack = p.next_ack_id()
    assert p.emit("leaveRoom", ["r1"], ack_id=ack) == ['420["leaveRoom","r1"]']
    assert p.next_ack_id() == 1
    assert p.emit("x", [], "/admin") == ['42/admin,["x"]']
    assert p.ack(5, ["ok"]) == ['435["ok"]']


def test_binary_attachments_round_trip():
    sender = SocketIOProtocol()
    frames = sender.emit("upload", [{"blob": b"\x00\x01\x02", "n": 3}, b"zz"])
    assert frames[0].startswith("452-") and frames[1:] == [b"\x00\x01\x02", b"zz"]
    # the same frames, as a server would send them back, decode into the original arguments
    recv = SocketIOProtocol()
    assert recv.receive(frames[0]) == []
    assert recv.receive(frames[1]) == []
    [ev] = recv.receive(frames[2])
    assert ev.name == "upload" and ev.args == [{"blob": b"\x00\x01\x02", "n": 3}, b"zz"]
    assert ev.nbytes == len(frames[0]) + 5


@pytest.mark.parametrize(
    "frame",
    ["", "9", "0notjson", '42{"not":"a list"}', "42[1,2]", '42["x"', "x"],
)
def test_bad_frames_raise_protocol_error(frame):
    p = SocketIOProtocol()
    with pytest.raises(ProtocolError):
        p.receive(frame)


def test_binary_without_pending_packet_is_an_error():
    with pytest.raises(ProtocolError):
        SocketIOProtocol().receive(b"\x00")


def test_binary_attachments_are_bounded_in_count_and_bytes():
    """A server announcing endless attachments (or huge ones) must not grow the client's memory:
    a ProtocolError (the connection is lost, the pending requests fail with Disconnect)."""
    with pytest.raises(ProtocolError, match="1000000 binary attachments announced"):
        SocketIOProtocol().receive('451000000-["m",{"_placeholder":true,"num":0}]')
    p = SocketIOProtocol(max_binary_bytes=100)
    assert p.receive('453-["m",{"_placeholder":true,"num":0}]') == [] and p.receive(b"x" * 50) == []
    with pytest.raises(ProtocolError, match="exceed 100 bytes"):
        p.receive(b"x" * 60)


PAYLOADS = [
    [],
    ["r1"],
    [{"room": "abc", "type": "text", "content": "안녕 ☃ \"quoted\" \\ /slash"}],
    [1, 2.5, None, True, {"nested": [1, {"a": []}]}],
]


@pytest.mark.parametrize("args", PAYLOADS)
def test_fast_codec_is_byte_identical_to_packet_classes(args):
    from engineio import packet as ep
    from socketio import packet as sp

    p = SocketIOProtocol()
    [fast] = p.emit("chatMessage", args)
    ref = ep.Packet(ep.MESSAGE, data=sp.Packet(sp.EVENT, data=["chatMessage", *args]).encode()).encode()
    assert fast == ref
    [ev] = p.receive(fast)
    ref_pkt = sp.Packet(encoded_packet=fast[1:])
    assert [ev.name, *ev.args] == ref_pkt.data and ev.namespace == "/" and ev.ack_id is None


@pytest.mark.parametrize("args", PAYLOADS)
def test_utf8_codec_carries_the_same_values_as_packet_classes(args):
    """The client's bytes-level hot path (orjson): same JSON values, decoded by python-socketio's
    own Packet class; non-ASCII travels as UTF-8 rather than \\u escapes."""
    from socketio import packet as sp

    p = SocketIOProtocol()
    wire = p.emit_utf8("chatMessage", args)
    assert wire[:2] == b"42"
    assert sp.Packet(encoded_packet=wire[1:].decode("utf-8")).data == ["chatMessage", *args]
    [ref] = p.emit("chatMessage", args)
    assert json.loads(wire[2:]) == json.loads(ref[2:])
    assert b"\\u" not in wire  # no escapes: the frame is shorter for Korean text
    [ev] = p.receive_text(wire)
    assert [ev.name, *ev.args] == ["chatMessage", *args] and ev.nbytes == len(wire) and ev.namespace == "/"


def test_utf8_encoder_steps_aside_where_it_does_not_apply():
    p = SocketIOProtocol()
    assert p.emit_utf8("x", ("/admin",), namespace="/admin") is None  # another namespace
    assert p.emit_utf8("upload", (b"\x00",)) is None  # bytes: attachments (emit's BINARY_EVENT)
    assert p.emit_utf8("x", ({1: "int key"},)) is None  # orjson refuses, json would write "1"
    assert p.emit_utf8("x", (2**70,)) is None


@pytest.mark.parametrize("frame", [
    b"2", b"3", OPEN.encode(), b'40{"sid":"s1"}', b'431[1]', b'42["x",NaN]', b'42/admin,["whoami"]',
    b'42["bad utf8 \xff"]', b'451-["upload",{"_placeholder":true,"num":0}]',
])
def test_receive_text_agrees_with_receive(frame):
    fast, ref = SocketIOProtocol(), SocketIOProtocol()
    assert fast.receive_text(frame) == ref.receive(frame.decode("utf-8", "replace"), len(frame))


@pytest.mark.parametrize("frame", [b"", b"9", b'42{"not":"a list"}', b"42[1,2]", b'42["x"', b'42[]', b"x"])
def test_receive_text_bad_frames_raise_protocol_error(frame):
    with pytest.raises(ProtocolError):
        SocketIOProtocol().receive_text(frame)
