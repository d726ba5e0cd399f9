"""A hostile KTB server for the hostile-server suite (issue #15 item 3): ONE process, one listening
port per behaviour, so a test reaches every behaviour at once and a Locust run needs only
``--host http://127.0.0.1:<port of the behaviour>``.

    python tests/hostile_ktb.py MAP_FILE [BEHAVIOUR ...]

Binds 127.0.0.1:0 for each behaviour (all of :data:`BEHAVIOURS` when none is named), then writes
``{"behaviour": port, ...}`` as JSON to MAP_FILE (atomically) and serves until killed.

Each port is a whole single-URL KTB server (REST and Socket.IO on one port, the Java shapes:
register 201 then login, acks on ``leaveRoom``) that answers correctly by default; a behaviour
overrides one step: the HTTP upgrade, the first frames, the Engine.IO OPEN, the Socket.IO CONNECT,
the answer to one emit, or one REST answer. The list of behaviours, with what each spoils, is
:data:`BEHAVIOURS` (the test file holds the expected failure classes).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from typing import Any, Callable  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402
from hostile_wire import ZERO_KEY, accept_key, frame, read_frame  # noqa: E402

_ids = itertools.count(1)


# ------------------------------------------------------------------------------------ framing
def sio(event: str, *args: Any) -> bytes:
    """A Socket.IO EVENT on "/" as one text frame."""
    return frame(0x1, "42" + json.dumps([event, *args], ensure_ascii=False))


def _read_frame(conn: socket.socket, buf: bytearray) -> tuple[int, bytes] | None:
    """One client frame (opcode, unmasked payload), or None when the peer is gone."""
    def exactly(n: int) -> bytes:
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                raise EOFError
            buf.extend(chunk)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    try:
        return read_frame(exactly)
    except EOFError:
        return None


# ---------------------------------------------------------------------------------- a session
class Session:
    """One websocket connection's state: who it is (from the CONNECT auth token) and its room."""

    def __init__(self) -> None:
        self.user_id = "u-unknown"
        self.acked: list[int] = []


def _uid(email: Any) -> str:
    return "u-" + hashlib.sha1(str(email).encode()).hexdigest()[:12]


def default_answer(event: str, args: list, s: Session, ack_id: int | None) -> list[bytes]:
    """What a well-behaved (Java-shaped) KTB server answers to each emit."""
    p = args[0] if args else None
    if event == "joinRoom":
        return [sio("joinRoomSuccess", {"roomId": p, "participants": [{"_id": s.user_id, "name": "lk"}],
                                        "messages": [], "hasMore": False, "activeStreams": []})]
    if event == "chatMessage":
        return [sio("message", {"_id": f"m{next(_ids)}", "room": p.get("room"), "content": p.get("content"),
                                "type": "text", "sender": {"_id": s.user_id}, "reactions": {}})]
    if event == "fetchPreviousMessages":
        return [sio("messageLoadStart"), sio("previousMessagesLoaded", {"messages": [], "hasMore": False})]
    if event == "markMessagesAsRead":
        return [sio("messagesRead", {"userId": s.user_id, "messageIds": p.get("messageIds")})]
    if event == "messageReaction":
        users = [s.user_id] if p.get("type") == "add" else []
        return [sio("messageReactionUpdate", {"messageId": p.get("messageId"), "reactions": {p.get("reaction"): users}})]
    if event == "leaveRoom" and ack_id is not None:
        return [frame(0x1, f"43{ack_id}[]")]
    return []


# --------------------------------------------------------------------------------- behaviours
Answer = Callable[[str, list, Session, "int | None"], "list[bytes] | None"]


class Behaviour:
    """What one port does differently from a correct server (every field optional).

    upgrade: raw bytes answering the HTTP upgrade instead of the 101 ("" = say nothing, keep the
    connection open; None = the correct 101); after_upgrade: bytes sent right after the 101 instead
    of the Engine.IO OPEN, then the connection is left open (close=True: closed); open: the Engine.IO
    OPEN packet text; connect: the answer to Socket.IO CONNECT; answer: called per emit, returns the
    frames to send (None: the correct answer; []: nothing); rest: path -> raw HTTP answer ("" =
    never answer)."""

    def __init__(self, *, upgrade: bytes | None = None, after_upgrade: bytes | None = None, close: bool = False,
                 open: str | None = None, connect: str | None = None, answer: Answer | None = None,
                 rest: dict[str, bytes] | None = None) -> None:
        self.upgrade = upgrade
        self.after_upgrade = after_upgrade
        self.close = close
        self.open = open
        self.connect = connect
        self.answer = answer
        self.rest = rest or {}


#: what a careless server echoes back (the secrets test runs with ``--ktb-password ECHOED_PASSWORD``)
ECHOED_PASSWORD = "Hunter2-Secret-Pw"
ECHOED_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoibGsifQ.c2lnbmF0dXJlLXNlY3JldA"


def http(status: str, body: bytes | str, ctype: str = "application/json") -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode() + data


def on(event: str, make: Callable[[list, Session, "int | None"], list[bytes]]) -> Answer:
    """An ``answer`` that spoils only ``event`` (everything else answered correctly)."""
    def answer(ev: str, args: list, s: Session, ack_id: int | None) -> list[bytes] | None:
        return make(args, s, ack_id) if ev == event else None
    return answer


def _room(args: list) -> Any:
    return args[0] if args else None


def _content(args: list) -> Any:
    return args[0].get("content") if args and isinstance(args[0], dict) else None


def _join_with(**fields: Any) -> Answer:
    return on("joinRoom", lambda a, s, _: [sio("joinRoomSuccess", {"roomId": _room(a), **fields})])


def _echo_with(**fields: Any) -> Answer:
    return on("chatMessage", lambda a, s, _: [sio("message", {"content": _content(a), "room": "r", **fields})])


CLOSE = b"<close>"  # a REST answer that is no answer: the connection is closed
HTML = http("200 OK", "<html><body>It works!</body></html>", "text/html")
LOGIN = "/api/auth/login"

BEHAVIOURS: dict[str, Behaviour] = {
    "correct": Behaviour(),  # the control: nothing spoiled (checks the suite's own server)
    # --- the HTTP upgrade
    "ws-silent-after-accept": Behaviour(upgrade=b""),
    "ws-http-500": Behaviour(upgrade=http("500 Internal Server Error", "oops", "text/plain")),
    "ws-http-garbage": Behaviour(upgrade=b"HELLO \x00\xff garbage\r\n\r\n"),
    "ws-wrong-accept": Behaviour(upgrade=b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n"),
    "ws-closed-at-upgrade": Behaviour(upgrade=b"HTTP/1.1 101 Switch", close=True),
    # --- websocket framing, in place of the Engine.IO OPEN
    "frame-masked": Behaviour(after_upgrade=frame(0x1, '0{"sid":"x"}', mask=ZERO_KEY)),
    "frame-reserved-bits": Behaviour(after_upgrade=frame(0x1, '0{"sid":"x"}', rsv=4)),
    "frame-unknown-opcode": Behaviour(after_upgrade=frame(0x3, b"x")),
    "frame-unknown-control": Behaviour(after_upgrade=frame(0xB, b"x")),
    "frame-fragmented-control": Behaviour(after_upgrade=frame(0x9, b"x", fin=False)),
    "frame-continuation-first": Behaviour(after_upgrade=frame(0x0, b"x")),
    "frame-oversized": Behaviour(after_upgrade=frame(0x1, b"", length=64 * 1024 * 1024)),  # over the 16 MiB limit
    "frame-close-mid-frame": Behaviour(after_upgrade=frame(0x1, b"x" * 100)[:40], close=True),
    "frame-invalid-utf8": Behaviour(after_upgrade=frame(0x1, b"0\xff\xfe{}")),
    # --- Engine.IO / Socket.IO handshake
    "eio-garbage": Behaviour(open="zzz not engine.io"),
    "eio-open-without-sid": Behaviour(open='0{"pingInterval":25000,"pingTimeout":20000}'),
    "eio-open-not-json": Behaviour(open="0{not json"),
    "sio-connect-refused": Behaviour(connect='44{"message":"Invalid token"}'),
    "sio-connect-error-odd-payload": Behaviour(connect="44[1,2,3]"),
    "sio-connect-garbage": Behaviour(connect="4Z"),
    "sio-no-connect-ack": Behaviour(connect=""),
    # --- answers to emits: wrong-typed JSON in every field a KTB user reads
    "join-messages-5": Behaviour(answer=_join_with(participants=[], messages=5)),
    "join-participants-x": Behaviour(answer=_join_with(participants="x", messages=[])),
    "join-message-objects-wrong": Behaviour(answer=_join_with(participants=[], messages=[5, {"_id": 7}])),
    "join-not-an-object": Behaviour(answer=on("joinRoom", lambda a, s, _: [sio("joinRoomSuccess", "ok")])),
    "join-error-not-an-object": Behaviour(answer=on("joinRoom", lambda a, s, _: [sio("joinRoomError", 5)])),
    "chat-echo-id-wrong-type": Behaviour(answer=_echo_with(_id={"$oid": 1})),
    "chat-echo-not-an-object": Behaviour(answer=on("chatMessage", lambda a, s, _: [sio("message", 5)])),
    "chat-error-not-an-object": Behaviour(answer=on("chatMessage", lambda a, s, _: [sio("error", ["boom", 1])])),
    "chat-error-string": Behaviour(answer=on("chatMessage", lambda a, s, _: [sio("error", "boom")])),
    "previous-messages-null": Behaviour(answer=on("fetchPreviousMessages", lambda a, s, _: [
        sio("previousMessagesLoaded", {"messages": None, "hasMore": "yes"})])),
    "previous-not-an-object": Behaviour(answer=on("fetchPreviousMessages", lambda a, s, _: [
        sio("previousMessagesLoaded", [1, 2])])),
    "read-ids-not-a-list": Behaviour(answer=on("markMessagesAsRead", lambda a, s, _: [
        sio("messagesRead", {"userId": s.user_id, "messageIds": "all"})])),
    "read-not-an-object": Behaviour(answer=on("markMessagesAsRead", lambda a, s, _: [sio("messagesRead", 5)])),
    "reaction-reactions-a-list": Behaviour(answer=on("messageReaction", lambda a, s, _: [
        sio("messageReactionUpdate", {"messageId": a[0]["messageId"], "reactions": [1]})])),
    "reaction-users-a-number": Behaviour(answer=on("messageReaction", lambda a, s, _: [
        sio("messageReactionUpdate", {"messageId": a[0]["messageId"], "reactions": {a[0]["reaction"]: 5}})])),
    # --- events nobody asked for, every field of the wrong type, right after a correct join: the
    # handlers (other members' messages, read receipts, leave notices, unclaimed errors) must shrug
    "unsolicited-events-of-wrong-types": Behaviour(answer=on("joinRoom", lambda a, s, _: default_answer(
        "joinRoom", a, s, None) + [
        sio("message", 5), sio("message", {"_id": {"x": 1}, "room": ["r"], "content": 7}),
        sio("message", {"_id": "m9", "type": "system", "content": 5}),
        sio("message", {"_id": "m8", "type": "system", "content": "lk user 0 p1님이 퇴장하였습니다.", "room": 3}),
        sio("message", {"_id": ["m7"], "content": "lk 1.2~3~4~5~6", "room": _room(a)}),
        sio("messagesRead", "x"), sio("messagesRead", {"userId": 5, "messageIds": "x"}),
        sio("messagesRead", {"userId": "u-other", "messageIds": [{"a": 1}]}),
        sio("messageReactionUpdate", 7), sio("participantsUpdate", "x"), sio("error", 5),
        sio("joinRoomError", [1]), sio("error", {"code": ["x"], "message": {"m": 1}}), sio("brandNewEvent", {}),
        sio("message"), frame(0x1, "42[\"message\",null,null]")])),
    "ack-unknown-and-duplicate-ids": Behaviour(answer=on("leaveRoom", lambda a, s, ack: [
        frame(0x1, f"43{(ack or 0) + 100}[]"), frame(0x1, "43999[]"), frame(0x1, f"43{(ack or 0) + 100}[]")])),
    "binary-event-answer": Behaviour(answer=on("chatMessage", lambda a, s, _: [
        frame(0x1, '451-["message",{"_placeholder":true,"num":0}]'), frame(0x2, b"\x00\x01binary")])),
    "binary-attachments-too-many": Behaviour(answer=on("chatMessage", lambda a, s, _: [
        frame(0x1, '451000000-["message",{"_placeholder":true,"num":0}]')])),
    "binary-attachments-over-the-limit": Behaviour(answer=on("chatMessage", lambda a, s, _: [
        frame(0x1, '453-["message",{"_placeholder":true,"num":0}]')] + [frame(0x2, b"x" * 600_000)] * 3)),
    "binary-frame-stray": Behaviour(answer=on("chatMessage", lambda a, s, _: [frame(0x2, b"\x00\x01")])),
    "never-answers-any-emit": Behaviour(answer=lambda ev, a, s, ack: []),
    "sio-disconnect-on-emit": Behaviour(answer=on("chatMessage", lambda a, s, _: [frame(0x1, "41")])),
    "frame-masked-mid-session": Behaviour(answer=on("chatMessage", lambda a, s, _: [frame(0x1, "42[]", mask=ZERO_KEY)])),
    "sio-garbage-mid-session": Behaviour(answer=on("chatMessage", lambda a, s, _: [frame(0x1, '42["message",{')])),
    "sio-event-without-name": Behaviour(answer=on("chatMessage", lambda a, s, _: [frame(0x1, "42[5]")])),
    "chat-echo-over-the-limit": Behaviour(answer=on("chatMessage", lambda a, s, _: [frame(0x1, b"", length=20 << 20)])),
    "chat-echo-over-max-message-size": Behaviour(answer=_echo_with(_id="m1", padding="x" * (2 << 20))),
    # --- a large answer under the limit (not spoiled: the memory test, tests/test_hostile_ktb.py)
    "chat-echo-15mb": Behaviour(answer=_echo_with(_id="m1", padding="x" * (15 << 20))),
    # --- the Node variant's own paths (the test runs these users with --ktb-server node)
    "node-register-user-a-string": Behaviour(rest={"/api/auth/register": http(
        "201 Created", '{"success":true,"token":"t1","sessionId":"s1","user":"bob"}')}),
    "node-join-never-lists-the-user": Behaviour(answer=_join_with(participants=[{"_id": "someone-else"}], messages=[])),
    "node-room-check-html": Behaviour(answer=_join_with(participants=[], messages=[]),
                                      rest={"/api/rooms/": HTML}),
    # --- REST
    "rest-register-html": Behaviour(rest={"/api/auth/register": HTML}),
    "rest-register-500": Behaviour(rest={"/api/auth/register": http("500 Internal Server Error",
                                                                    '{"message":"db down"}')}),
    "rest-login-echoes-secrets": Behaviour(rest={LOGIN: http("401 Unauthorized", json.dumps(
        {"message": f"wrong password {ECHOED_PASSWORD} for lk@x.test", "token": ECHOED_TOKEN,
         "request": {"email": "lk@x.test", "password": ECHOED_PASSWORD}}))}),
    "rest-login-html": Behaviour(rest={LOGIN: HTML}),
    "rest-login-500": Behaviour(rest={LOGIN: http("500 Internal Server Error", "<h1>Whitelabel Error Page</h1>",
                                                  "text/html")}),
    "rest-login-truncated-json": Behaviour(rest={LOGIN: http("200 OK", '{"success":true,"token":"abc","sessio')}),
    "rest-login-user-a-string": Behaviour(rest={LOGIN: http("200 OK", '{"token":"t1","sessionId":"s1","user":"bob"}')}),
    "rest-login-token-a-number": Behaviour(rest={LOGIN: http("200 OK", '{"token":12345,"sessionId":"s1",'
                                                                       '"user":{"_id":"u1"}}')}),
    "rest-login-hangs": Behaviour(rest={LOGIN: b""}),
    "rest-login-not-http": Behaviour(rest={LOGIN: b"SSH-2.0-OpenSSH_9.6\r\n\r\n"}),
    "rest-login-closes": Behaviour(rest={LOGIN: CLOSE}),
    "rest-room-id-wrong-type": Behaviour(rest={"/api/rooms": http("201 Created", '{"success":true,"data":{"_id":5}}')}),
}


# ------------------------------------------------------------------------------------ serving
def _read_http(conn: socket.socket, buf: bytearray) -> tuple[str, str, dict[str, str], bytes] | None:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk or len(buf) > 1 << 20:
            return None
        buf.extend(chunk)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path = (lines[0].split(" ") + ["", ""])[:2]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    n = int(headers.get("content-length") or 0)
    while len(rest) < n:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    buf[:] = rest[n:]
    return method, path, headers, rest[:n]


def _rest(path: str, body: bytes) -> bytes:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {}
    uid = _uid(data.get("email") if isinstance(data, dict) else None)
    if path == "/api/auth/register":
        return http("201 Created", json.dumps({"success": True, "user": {"_id": uid, "name": "lk"}}))
    if path == LOGIN:
        return http("200 OK", json.dumps({"success": True, "token": "tok-" + uid, "sessionId": os.urandom(16).hex(),
                                          "user": {"_id": uid, "name": "lk"}}))
    if path == "/api/rooms":
        return http("201 Created", json.dumps({"success": True, "data": {"_id": f"room-{next(_ids)}"}}))
    if path.startswith("/api/rooms/"):
        return http("200 OK", json.dumps({"success": True, "data": {"_id": path[11:], "participants": []}}))
    if path == "/api/health":
        return http("200 OK", '{"status":"ok"}')
    return http("404 Not Found", '{"message":"not found"}')


def _websocket(conn: socket.socket, headers: dict[str, str], b: Behaviour, buf: bytearray) -> None:
    if b.upgrade is not None:
        if b.upgrade:
            conn.sendall(b.upgrade)
        if not b.close:
            gevent.sleep(3600)  # say nothing more, keep the connection open
        return
    accept = accept_key(headers.get("sec-websocket-key", "").encode())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    if b.after_upgrade is not None:
        conn.sendall(b.after_upgrade)
        if not b.close:
            gevent.sleep(3600)
        return
    conn.sendall(frame(0x1, b.open if b.open is not None else
                          '0{"sid":"eio1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'))
    s = Session()
    while (got := _read_frame(conn, buf)) is not None:
        op, payload = got
        if op == 0x8:
            return
        text = payload.decode("utf-8", "replace")
        if text.startswith("40"):  # Socket.IO CONNECT {token, sessionId}
            try:
                token = json.loads(text[2:] or "{}").get("token") or ""
            except (ValueError, AttributeError):
                token = ""
            s.user_id = token[4:] if isinstance(token, str) and token.startswith("tok-") else "u-unknown"
            answer = b.connect if b.connect is not None else '40{"sid":"sio1"}'
            if answer:
                conn.sendall(frame(0x1, answer))
            continue
        if not text.startswith("42"):
            continue  # pongs, Engine.IO CLOSE, Socket.IO DISCONNECT
        digits = "".join(itertools.takewhile(str.isdigit, text[2:]))
        ack_id = int(digits) if digits else None
        try:
            data = json.loads(text[2 + len(digits):])
        except ValueError:
            continue
        event, args = data[0], data[1:]
        frames = b.answer(event, args, s, ack_id) if b.answer is not None else None
        if frames is None:
            frames = default_answer(event, args, s, ack_id)
        if frames:
            conn.sendall(b"".join(frames))  # one write: an answer's frames arrive together


def handle(name: str, conn: socket.socket, _addr: Any) -> None:
    b = BEHAVIOURS[name]
    buf = bytearray()
    try:
        while (req := _read_http(conn, buf)) is not None:
            method, path, headers, body = req
            if path.startswith("/socket.io/"):
                _websocket(conn, headers, b, buf)
                return
            route = path.split("?")[0]
            answer = b.rest.get(route, b.rest.get(route.rsplit("/", 1)[0] + "/") if route.count("/") > 2 else None)
            if answer is None:
                answer = _rest(path, body)
            elif not answer:
                gevent.sleep(3600)  # a REST call that never gets an answer
                return
            elif answer == CLOSE:
                return
            conn.sendall(answer)
    except OSError:
        pass
    finally:
        conn.close()


def main() -> None:
    map_file = sys.argv[1]
    names = sys.argv[2:] or list(BEHAVIOURS)
    ports = {}
    for name in names:
        server = StreamServer(("127.0.0.1", 0), lambda c, a, n=name: handle(n, c, a))
        server.start()
        ports[name] = server.server_port
    tmp = map_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ports, f)
    os.replace(tmp, map_file)
    gevent.wait()


if __name__ == "__main__":
    main()
