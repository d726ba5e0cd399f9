"""A hostile chldo server for the hostile-server suite (issue #15 item 3): one process, the
behaviour chosen per connection by the URL path.

    python tests/hostile_chldo.py PORT        # prints "ready"; then ws://127.0.0.1:PORT/<behaviour>

Why one process for every behaviour: the suite runs each behaviour against loadkit's client, all
at once, and starting a server per behaviour would cost more than the behaviours themselves.

:data:`BEHAVIOURS` maps each name to what the server does (its handler) and what loadkit must
report (:class:`Expect`); ``tests/test_hostile_chldo.py`` runs them all and docs/chldo.md lists
them. Upgrade behaviours act before the WebSocket is open; the others answer every ``sendmsg`` the
same way. Each connection is served by its own thread; every loop is bounded (``LIMIT_S`` seconds,
or until the client goes away), so a forgotten server never spins.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from hostile_wire import accept_key, frame, read_frame

LIMIT_S = 30.0  # no behaviour streams longer than this
HUGE = 15_000_000  # bytes of token text in the huge-but-legal frame (under the 16 MiB default limit)
OVER = 17 * 1024 * 1024  # over the 16 MiB default limit


# ------------------------------------------------------------------------------------ wire helpers
def text(obj: object) -> bytes:
    return frame(0x1, obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode())


def info(status: str, suid: str, **kw: object) -> dict:
    return {"status": status, "connection_id": "C", "stream_uid": suid, "room_uid": "r", "msg": "",
            "msgtype": "info", **kw}


def token(suid: str, content: object = "tok", **kw: object) -> dict:
    return {"status": "stream", "connection_id": "C", "stream_uid": suid, "sent_uid": "A", "msgtype": "stream",
            "event": "on_chat_model_stream", "data": {"chunk": {"content": content}}, "msg": content, **kw}


def close(code: int | None, reason: bytes = b"") -> bytes:
    return frame(0x8, (b"" if code is None else struct.pack("!H", code)) + reason)


class Peer:
    """One accepted connection: the upgrade, the client's frames, and sends that stop the thread
    quietly when the client has gone (``Gone``)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.n = 0  # sendmsg requests answered so far
        self.buf = b""

    def send(self, data: bytes) -> None:
        try:
            self.conn.sendall(data)
        except OSError:
            raise Gone() from None

    def read_request_head(self) -> tuple[str, bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.conn.recv(4096)
            if not chunk or len(self.buf) > 65536:
                raise Gone()
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        path = head.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        return path, head

    def accept(self, head: bytes) -> None:
        key = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        self.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            try:
                chunk = self.conn.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                raise Gone()
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self) -> tuple[int, bytes]:
        return read_frame(self._exactly)

    def next_request(self) -> str:
        """Wait for the client's next sendmsg; returns the stream_uid to answer it with."""
        while True:
            op, _ = self.read_frame()
            if op == 0x8:
                raise Gone()
            if op == 0x1:
                self.n += 1
                return f"S{self.n}"


class Gone(Exception):
    """The client went away (or the behaviour is over): end this connection's thread."""


# ------------------------------------------------------------------------------------ behaviours
@dataclass(frozen=True)
class Expect:
    """What loadkit must report for a behaviour.

    ``where``: ``"connect"`` (the handshake fails, every connect event), ``"turn"`` (every sendmsg
    fails), ``"ok"`` (the server misbehaved in a way the protocol allows or that spoils no request;
    the turns succeed), ``"stray"`` (the turns succeed, the violation is counted as
    ``protocol_violation:ChldoProtocolError``). ``error``: the failure class; ``text``: a regular
    expression its text must match (``re.search``). ``closes``: the client must drop the connection.
    """

    where: str
    error: str = ""
    text: str = ""
    closes: bool = False


@dataclass(frozen=True)
class Behaviour:
    name: str
    what: str
    expect: Expect
    upgrade: Callable[[Peer, bytes], None] | None = None  # replaces the 101 answer
    answer: Callable[[Peer, str], None] | None = None  # answers one sendmsg


BEHAVIOURS: dict[str, Behaviour] = {}


def behaviour(name: str, what: str, expect: Expect, *, upgrade: bool = False) -> Callable:
    def register(fn: Callable) -> Callable:
        BEHAVIOURS[name] = Behaviour(name, what, expect, **({"upgrade": fn} if upgrade else {"answer": fn}))
        return fn
    return register


CONNECT_FAILS = "ChldoConnectError"
PROTO = "ChldoProtocolError"
LOST = "ChldoConnectionLost"
TIMEOUT = "ChldoTimeout"
FRAMING = r"^bad WebSocket framing: "


def ok_turn(p: Peer, suid: str, middle: Sequence[bytes] = (), tail: Sequence[bytes] = ()) -> None:
    """A well-formed turn with ``middle`` frames inserted after the first token."""
    p.send(text(info("START", suid)) + text(token(suid, "안녕")) + b"".join(middle) + text(token(suid, " 하세요"))
           + text(info("END", suid)) + b"".join(tail))


def forever(p: Peer, chunk: Callable[[], bytes], pause: float) -> None:
    end = time.monotonic() + LIMIT_S
    while time.monotonic() < end:
        p.send(chunk())
        if pause:
            time.sleep(pause)
    raise Gone()


@behaviour("ok", "a well-formed turn (the control: nothing hostile)", Expect("ok"))
def _ok(p: Peer, suid: str) -> None:
    ok_turn(p, suid)


# -- the upgrade -------------------------------------------------------------------------------------
@behaviour("silent-after-accept", "accepts the TCP connection, never answers the upgrade",
           Expect("connect", CONNECT_FAILS, r"handshake not complete within"), upgrade=True)
def _silent(p: Peer, head: bytes) -> None:
    time.sleep(LIMIT_S)
    raise Gone()


@behaviour("upgrade-http-500", "answers the upgrade with HTTP 500 and an HTML page",
           Expect("connect", CONNECT_FAILS, r"500"), upgrade=True)
def _http_500(p: Peer, head: bytes) -> None:
    body = b"<html><body>Internal Server Error</body></html>"
    p.send(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    raise Gone()


@behaviour("upgrade-http-200", "answers the upgrade with a plain HTTP 200 page",
           Expect("connect", CONNECT_FAILS, r"200"), upgrade=True)
def _http_200(p: Peer, head: bytes) -> None:
    p.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    raise Gone()


@behaviour("upgrade-garbage", "answers the upgrade with binary garbage",
           Expect("connect", CONNECT_FAILS, r"connect ws://"), upgrade=True)
def _garbage(p: Peer, head: bytes) -> None:
    p.send(bytes(range(256)) * 4 + b"\r\n\r\n")
    raise Gone()


@behaviour("upgrade-bad-accept", "answers 101 with a wrong Sec-WebSocket-Accept",
           Expect("connect", CONNECT_FAILS, r"(?i)invalid|header"), upgrade=True)
def _bad_accept(p: Peer, head: bytes) -> None:
    p.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
    time.sleep(1)
    raise Gone()


@behaviour("upgrade-closed", "closes the connection instead of answering the upgrade",
           Expect("connect", CONNECT_FAILS, r"connect ws://"), upgrade=True)
def _closed(p: Peer, head: bytes) -> None:
    raise Gone()


# -- the stream --------------------------------------------------------------------------------------
@behaviour("never-answers", "reads sendmsg and never answers", Expect("turn", TIMEOUT, r"no START", closes=True))
def _never(p: Peer, suid: str) -> None:
    pass


@behaviour("start-without-end", "sends START, then nothing", Expect("turn", TIMEOUT, r"0 chunks, no END", closes=True))
def _start_only(p: Peer, suid: str) -> None:
    p.send(text(info("START", suid)))


@behaviour("endless-tokens", "sends START, then a token every 2 ms for ever",
           Expect("turn", TIMEOUT, r"[1-9]\d* chunks, no END", closes=True))
def _endless(p: Peer, suid: str) -> None:
    p.send(text(info("START", suid)))
    data = text(token(suid))
    forever(p, lambda: data, 0.002)


@behaviour("error-without-end", "sends START, an in-stream error frame, then nothing",
           Expect("turn", "ChldoStreamError", r"^LLM exploded$", closes=True))
def _error_no_end(p: Peer, suid: str) -> None:
    p.send(text(info("START", suid)) + text({"status": "connected", "connection_id": "C", "stream_uid": suid,
                                              "msgtype": "error", "msg": "LLM exploded"}))


@behaviour("non-json", "a frame of HTML inside the stream", Expect("turn", PROTO, r"^non-JSON frame: <html>"))
def _non_json(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [text(b"<html>502 Bad Gateway</html>")])


@behaviour("not-an-object", "a JSON array inside the stream", Expect("turn", PROTO, r"not a JSON object: \[1, 2\]"))
def _not_object(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [text(b"[1,2]")])


@behaviour("invalid-utf8", "a text frame that is not UTF-8", Expect("turn", PROTO, r"^non-JSON frame"))
def _bad_utf8(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [text(b'{"status":"\xff\xfe"}')])


@behaviour("deep-json", "a JSON object nested 100 000 deep",
           Expect("turn", PROTO, r"^(non-JSON frame|unclassifiable frame: {.a.: \[\[\[\[...\]\]\]\]})"))
def _deep(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [text(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}")])


@behaviour("foreign-stream-uid", "a token of another stream_uid", Expect("turn", PROTO, r"unknown stream_uid OTHER"))
def _foreign(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [text(token("OTHER"))])


@behaviour("end-without-start", "answers with END alone", Expect("turn", PROTO, r"^END without START$"))
def _end_only(p: Peer, suid: str) -> None:
    p.send(text(info("END", suid)))


@behaviour("second-start", "a second START inside the stream", Expect("turn", PROTO, r"second START"))
def _second_start(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [text(info("START", suid))])


@behaviour("frames-after-end", "three tokens of the stream after its END",
           Expect("stray", PROTO, r"frame after END"))
def _after_end(p: Peer, suid: str) -> None:
    ok_turn(p, suid, tail=[text(token(suid))] * 3)


@behaviour("binary-frame", "a binary frame inside the stream", Expect("turn", PROTO, r"^binary frame of 4 bytes$"))
def _binary(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [frame(0x2, b"\x00\x01\x02\x03")])


# -- framing (each one closes the connection: the byte stream can no longer be trusted) -------------
def _framing(name: str, what: str, wire: bytes, text_re: str) -> None:
    def answer(p: Peer, suid: str) -> None:
        p.send(text(info("START", suid)) + wire)
        time.sleep(LIMIT_S)  # keep the connection: the client must drop it itself
        raise Gone()
    BEHAVIOURS[name] = Behaviour(name, what, Expect("turn", PROTO, FRAMING + text_re, closes=True), answer=answer)


_framing("masked-frame", "a masked text frame (servers must not mask)",
         frame(0x1, b'{"status":"think"}', mask=b"abcd"), "masked frame")
_framing("reserved-bits", "a text frame with RSV1 set (no extension negotiated)",
         frame(0x1, b"{}", rsv=4), "reserved bits")
_framing("unknown-data-opcode", "a data frame of opcode 0x3", frame(0x3, b"{}"), "unknown data opcode 0x3")
_framing("unknown-control-opcode", "a control frame of opcode 0xB", frame(0xB, b""), "unknown control opcode 0xb")
_framing("fragmented-ping", "a ping without FIN", frame(0x9, b"p", fin=False), "fragmented or oversized control")
_framing("oversized-ping", "a ping of 200 bytes (control frames are at most 125)", frame(0x9, b"p" * 200),
         "fragmented or oversized control")
_framing("orphan-continuation", "a continuation frame with no message to continue", frame(0x0, b"{}"),
         "continuation frame without")
_framing("interleaved-data", "a new text frame inside a fragmented message",
         frame(0x1, b"{", fin=False) + frame(0x1, b"{}"), "new data frame inside")
_framing("oversized-frame", "a frame header announcing 64 MiB (over the 16 MiB limit), then 1 MiB of it",
         frame(0x1, b"x" * (1 << 20), length=64 << 20), r"frame of 67108864 bytes exceeds the 16777216-byte limit")
_framing("absurd-length", "a frame header announcing 2**63-1 bytes", frame(0x1, b"", length=(1 << 63) - 1),
         r"frame of 9223372036854775807 bytes exceeds")
_framing("oversized-message", "17 continuation frames of 1 MiB: a message over the 16 MiB limit",
         frame(0x1, b"x" * (1 << 20), fin=False) + frame(0x0, b"x" * (1 << 20), fin=False) * 16,
         r"message exceeds the 16777216-byte limit")


# -- the connection ends -----------------------------------------------------------------------------
@behaviour("close-mid-frame", "a frame header announcing 1000 bytes, 10 of them, then the TCP close",
           Expect("turn", LOST, r"without a close frame", closes=True))
def _close_mid(p: Peer, suid: str) -> None:
    p.send(text(info("START", suid)) + frame(0x1, b"x" * 10, length=1000))
    raise Gone()


@behaviour("reset-mid-stream", "START, a token, then a TCP reset", Expect("turn", LOST, r"connection", closes=True))
def _reset(p: Peer, suid: str) -> None:
    p.send(text(info("START", suid)) + text(token(suid)))
    time.sleep(0.05)
    p.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raise Gone()


def _closing(name: str, what: str, wire: bytes, text_re: str) -> None:
    def answer(p: Peer, suid: str) -> None:
        p.send(text(info("START", suid)) + wire)
        time.sleep(1)
        raise Gone()
    BEHAVIOURS[name] = Behaviour(name, what, Expect("turn", LOST, text_re, closes=True), answer=answer)


_closing("close-1011", "a close frame 1011 with a reason, mid-stream", close(1011, b"overloaded"),
         r"server closed the connection: code 1011 overloaded")
_closing("close-odd-code", "a close frame with the invalid code 999", close(999, b"odd"), r"code 999 odd")
_closing("close-reserved-code", "a close frame with 1005 (never sent on the wire)", close(1005), r"code 1005")
_closing("close-private-code", "a close frame with the private code 4999", close(4999, b"bye"), r"code 4999 bye")
_closing("close-one-byte", "a close frame whose payload is one byte", frame(0x8, b"\x03"), r"code None")
_closing("close-bad-utf8-reason", "a close frame whose reason is not UTF-8", close(1000, b"\xff\xfe"), r"code 1000")


# -- legal but rude ----------------------------------------------------------------------------------
@behaviour("ping-flood", "pings (125-byte payloads) as fast as it can, never answers",
           Expect("turn", TIMEOUT, r"no START", closes=True))
def _ping_flood(p: Peer, suid: str) -> None:
    burst = frame(0x9, b"p" * 125) * 256
    forever(p, lambda: burst, 0.0)


@behaviour("ping-burst", "20 000 pings, then a normal answer", Expect("ok"))
def _ping_burst(p: Peer, suid: str) -> None:
    p.send(frame(0x9, b"p" * 125) * 20_000)
    ok_turn(p, suid)


@behaviour("unsolicited-pongs", "pongs nobody asked for, then a normal answer", Expect("ok"))
def _pongs(p: Peer, suid: str) -> None:
    ok_turn(p, suid, [frame(0xA, b"x")] * 50)


@behaviour("tiny-fragments", "every token fragmented into 1-byte continuation frames", Expect("ok"))
def _fragments(p: Peer, suid: str) -> None:
    data = json.dumps(token(suid)).encode()
    parts = [frame(0x1 if i == 0 else 0x0, data[i:i + 1], fin=i == len(data) - 1) for i in range(len(data))]
    ok_turn(p, suid, [b"".join(parts) + frame(0x9, b"in-between")])


@behaviour("huge-frame", f"a legal token frame of {HUGE:,} characters (under the 16 MiB limit)", Expect("ok"))
def _huge(p: Peer, suid: str) -> None:
    head, tail = (json.dumps({**token(suid, "@"), "msg": ""}).encode().split(b'"@"'))
    ok_turn(p, suid, [frame(0x1, head + _HUGE_TEXT + tail)])


_HUGE_TEXT = b'"' + b"x" * HUGE + b'"'  # made once: json.dumps of 15 MB per turn would hold the GIL


# -- wrong-typed JSON in every field the client reads ----------------------------------------------
WRONG = {"number": 5, "string": "5", "null": None, "list": [1]}


def _wrong(field: str, kind: str, make: Callable[[str, object], dict], expect: Expect) -> None:
    value = WRONG[kind]

    def answer(p: Peer, suid: str) -> None:
        ok_turn(p, suid, [text(make(suid, value))])
    name = f"wrong-{field}-{kind}"
    label = {"content": "data.chunk.content", "error-msg": "msg of an error frame",
             "event": "event of a frame without status"}.get(field, field)
    BEHAVIOURS[name] = Behaviour(name, f"`{label}` as {json.dumps(value)} in one frame of the stream", expect,
                                 answer=answer)


def _error_frame(suid: str, v: object) -> dict:
    return {"status": "connected", "connection_id": "C", "stream_uid": suid, "msgtype": "error", "msg": v}


# null is read as an absent field (stream_uid, msgtype, data, voice_length: the turn goes on), except
# where the client needs the value (status, event, content); error texts of any type are kept
for _kind in ("number", "null", "list"):
    _null = _kind == "null"
    _wrong("status", _kind, lambda s, v: {**info("think", s), "status": v},
           Expect("turn", PROTO, r"unclassifiable frame" if _null else r"^status is not a string: "))
    _wrong("msgtype", _kind, lambda s, v: {**info("think", s), "msgtype": v},
           Expect("ok") if _null else Expect("turn", PROTO, r"^msgtype is not a string: "))
    _wrong("stream_uid", _kind, lambda s, v: {**token(s), "stream_uid": v},
           Expect("ok") if _null else Expect("turn", PROTO, r"unknown stream_uid"))
    _wrong("event", _kind, lambda s, v: {"event": v, "stream_uid": s, "data": {}},
           Expect("turn", PROTO, r"unclassifiable frame"))
    _wrong("data", _kind, lambda s, v: {**token(s), "data": v},
           Expect("ok") if _null else Expect("turn", PROTO, r"^data\.chunk is not an object: "))
    _wrong("content", _kind, lambda s, v: token(s, v), Expect("turn", PROTO, r"stream frame without text content"))
    _wrong("error-msg", _kind, _error_frame,
           Expect("turn", "ChldoStreamError", {"number": r"^5$", "null": r"^None$", "list": r"^\[1\]$"}[_kind]))
    _voice = "string" if _kind == "number" else _kind  # a number is what voice_length should be
    _wrong("voice_length", _voice, lambda s, v: info("voice_ready", s, voice_length=v, sent_uid="A"),
           Expect("ok") if _null else Expect("turn", PROTO, r"^voice_length is not a number"))


@behaviour("wrong-stream_uid-everywhere", "a whole turn whose stream_uid is a number",
           Expect("turn", PROTO, r"^stream_uid is not a string: \d+$"))
def _int_uid(p: Peer, suid: str) -> None:
    p.send(text({**info("START", suid), "stream_uid": p.n}) + text({**token(suid), "stream_uid": p.n})
           + text({**info("END", suid), "stream_uid": p.n}))


# ------------------------------------------------------------------------------------ serving
def serve(conn: socket.socket) -> None:
    conn.settimeout(LIMIT_S + 5)
    p = Peer(conn)
    try:
        path, head = p.read_request_head()
        b = BEHAVIOURS.get(path.strip("/").split("?")[0])
        if b is None:
            p.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        if b.upgrade is not None:
            b.upgrade(p, head)
            return
        p.accept(head)
        assert b.answer is not None
        while True:
            suid = p.next_request()
            b.answer(p, suid)
    except (Gone, OSError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def main() -> None:
    port = int(sys.argv[1])
    srv = socket.create_server(("127.0.0.1", port), backlog=512)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--list":
        for b in BEHAVIOURS.values():
            print(f"{b.name}\t{b.what}")
        sys.exit(0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
