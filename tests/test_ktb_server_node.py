"""Conformance of ``loadkit serve ktb --variant node`` with the Node facts sheet
(/work/shared/spec/ktb-node-server-facts.md), driven with ``requests`` and python-socketio's own
client (an independent implementation), so these check the wire, not loadkit's client."""

from __future__ import annotations

import re
import time

import pytest
import requests
import socketio

from ktb_server_helpers import Ktb, start_ktb
from loadkit.protocols import ktb_vocab as V

pytestmark = pytest.mark.timeout(60)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def node(spawn) -> Ktb:
    return start_ktb(spawn, "--variant", "node", "--duplicate-login-delay", "1", single=True)


def _joined(ktb: Ktb, user: dict, room: dict):
    p = ktb.peer(user)
    p.emit("joinRoom", room["_id"])
    full = p.wait1("joinRoomSuccess")
    return p, full


# ---------------------------------------------------------------------------------------------- REST
def test_rest_shapes_health_and_json_401(node: Ktb) -> None:
    R = node.rest
    h = requests.get(f"{R}/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.headers["X-Powered-By"] == "Express"
    r = requests.get(f"{R}/api/health")
    assert r.status_code == 404 and r.json() == {"success": False, "message": V.R_NOT_FOUND, "path": "/api/health"}

    r = requests.post(f"{R}/api/auth/register", json={"name": "Kim", "email": "kim@t.io", "password": "secret1"})
    assert r.status_code == 201
    reg = r.json()
    assert re.match(r"^[0-9a-f]{64}$", reg["sessionId"]) and reg["token"]  # register logs in
    assert set(reg["user"]) == {"_id", "name", "email"}
    assert requests.post(f"{R}/api/auth/register", json={"name": "Kim", "email": "kim@t.io",
                                                         "password": "secret1"}).status_code == 409
    r = requests.post(f"{R}/api/auth/login", json={"email": "kim@t.io", "password": "secret1"})
    j = r.json()
    assert r.status_code == 200 and re.match(r"^[0-9a-f]{64}$", j["sessionId"]) and "message" not in j
    import jwt

    claims = jwt.decode(j["token"], options={"verify_signature": False})
    assert claims["user"]["id"] == j["user"]["_id"] and claims["sessionId"] == j["sessionId"]

    # JSON 401 bodies; Bearer is not read; the register's session died with the login
    assert requests.get(f"{R}/api/rooms").json() == {"success": False, "message": V.R_NO_TOKEN}
    r = requests.get(f"{R}/api/rooms", headers={"Authorization": f"Bearer {j['token']}"})
    assert r.status_code == 401 and r.json()["message"] == V.R_NO_TOKEN
    r = requests.get(f"{R}/api/rooms", headers={"x-auth-token": reg["token"], "x-session-id": reg["sessionId"]})
    assert r.status_code == 401 and r.json()["code"] == "INVALID_SESSION"
    assert r.json()["message"] == V.E_NODE_INVALID_SESSION
    hdr = {"x-auth-token": j["token"], "x-session-id": j["sessionId"]}
    r = requests.post(f"{R}/api/rooms", json={"name": "r1"}, headers=hdr)
    assert r.status_code == 201
    room = r.json()["data"]
    assert room["participants"][0]["_id"] == j["user"]["_id"] and ISO.match(room["createdAt"]) and room["__v"] == 0
    assert requests.post(f"{R}/api/rooms", json={"name": " "}, headers=hdr).json()["message"] == V.R_ROOM_NAME_REQUIRED


# -------------------------------------------------------------------------------------------- sockets
def test_socket_no_acks_iso_times_and_ids(node: Ktb) -> None:
    a = node.new_user("alice")
    room = node.create_room(a)
    r = requests.get(f"{node.rest}/socket.io/", params={"EIO": "4", "transport": "polling"})
    assert '"pingTimeout":20000' in r.text and '"maxPayload":1000000' in r.text
    p, full = _joined(node, a, room)
    try:
        assert full["participants"][0]["_id"] == a["id"] and "oldestTimestamp" in full
        assert full["messages"][-1]["content"] == V.join_text("alice")  # the history includes the join
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "hi"})
        m = p.wait1("message", lambda m: m.get("content") == "hi")
        assert m["sender"]["_id"] == a["id"] and m["id"] == m["_id"]
        assert ISO.match(m["timestamp"]) and ISO.match(m["createdAt"])
        with pytest.raises(socketio.exceptions.TimeoutError):  # no handler ever acks
            p.client.call("leaveRoom", room["_id"], timeout=1.5)
    finally:
        p.close()


def test_read_receipts_go_to_the_others_only(node: Ktb) -> None:
    a, b = node.new_user("alice"), node.new_user("bob")
    room = node.create_room(a)
    pa, _ = _joined(node, a, room)
    pb, _ = _joined(node, b, room)
    try:
        pa.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "x"})
        mid = pa.wait1("message", lambda m: m.get("content") == "x")["_id"]
        pa.emit("markMessagesAsRead", {"roomId": room["_id"], "messageIds": [mid]})
        assert pb.wait1("messagesRead") == {"userId": a["id"], "messageIds": [mid]}
        assert pa.quiet("messagesRead")
        pa.emit("markMessagesAsRead", {"roomId": room["_id"], "messageIds": ["bad"]})
        assert pa.wait1("error") == {"message": V.E_READ}
    finally:
        pa.close()
        pb.close()


def test_leave_is_silent_to_the_leaver_and_a_join_right_after_it_overtakes_it(node: Ktb) -> None:
    a, b = node.new_user("alice"), node.new_user("bob")
    room = node.create_room(a)
    pa, _ = _joined(node, a, room)
    pb, _ = _joined(node, b, room)
    try:
        pb.clear()
        pa.emit("leaveRoom", room["_id"])
        pa.emit("joinRoom", room["_id"])  # sent right after: overtakes the leave (facts §4.2 (a))
        assert pa.wait1("joinRoomSuccess") == {"roomId": room["_id"]}  # the short "already in room" form
        assert pb.wait1("message", lambda m: m.get("content") == V.leave_text("alice"))["type"] == "system"
        assert pb.wait1("participantsUpdate", lambda ps: [u["_id"] for u in ps] == [b["id"]])
        assert "userLeft" not in pb.events()
        pa.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "still here?"})
        assert pa.wait1("error") == {"code": V.MESSAGE_ERROR, "message": V.E_ROOM_ACCESS}
        # after the leave completed, a join is a full one again
        pa.emit("joinRoom", room["_id"])
        assert a["id"] in [u["_id"] for u in pa.wait1("joinRoomSuccess")["participants"]]
    finally:
        pa.close()
        pb.close()


def test_fetch_errors_have_type_limit_is_ignored_and_the_throttle_drops(node: Ktb) -> None:
    a, c = node.new_user("alice"), node.new_user("carol")
    room = node.create_room(a)
    pa, _ = _joined(node, a, room)
    pc = node.peer(c)
    try:
        for i in range(35):
            pa.emit("chatMessage", {"room": room["_id"], "type": "text", "content": f"m{i}"})
        pa.wait1("message", lambda m: m.get("content") == "m34")
        time.sleep(0.35)
        pa.emit("fetchPreviousMessages", {"roomId": room["_id"], "limit": 5})
        page = pa.wait1("previousMessagesLoaded")
        assert len(page["messages"]) == 30 and page["hasMore"] is True and ISO.match(page["oldestTimestamp"])
        pa.emit("fetchPreviousMessages", {"roomId": room["_id"], "before": page["oldestTimestamp"]})
        assert pa.quiet("previousMessagesLoaded", 0.25)  # within 300 ms of the previous reply: dropped
        time.sleep(0.35)
        pa.emit("fetchPreviousMessages", {"roomId": room["_id"], "before": page["oldestTimestamp"]})
        older = pa.wait1("previousMessagesLoaded")
        assert len(older["messages"]) == 6 and older["hasMore"] is False  # 35 chats + the join message - 30
        pc.emit("fetchPreviousMessages", {"roomId": room["_id"]})
        assert pc.wait1("error") == {"type": V.LOAD_ERROR, "message": V.E_ROOM_ACCESS}
    finally:
        pa.close()
        pc.close()


def test_one_room_per_user_and_no_rate_limit_or_banned_words(node: Ktb) -> None:
    a, b = node.new_user("alice"), node.new_user("bob")
    r1, r2 = node.create_room(a, "one"), node.create_room(a, "two")
    pa, _ = _joined(node, a, r1)
    pb, _ = _joined(node, b, r1)
    try:
        for i in range(40):  # far above Java's limits, and a Java banned word
            pb.emit("chatMessage", {"room": r1["_id"], "type": "text", "content": f"b{i} fuck"})
        pb.wait1("message", lambda m: m.get("content") == "b39 fuck")
        assert "error" not in pb.events()
        pa.emit("joinRoom", r2["_id"])  # switching rooms leaves the first one
        pa.wait1("joinRoomSuccess")
        assert pb.wait1("userLeft") == {"userId": a["id"], "name": "alice"}
    finally:
        pa.close()
        pb.close()


def test_duplicate_login_holds_the_new_handshake_and_disconnects_the_old_socket(node: Ktb) -> None:
    a, b = node.new_user("alice"), node.new_user("bob")
    room = node.create_room(a)
    old, _ = _joined(node, a, room)
    pb, _ = _joined(node, b, room)
    try:
        fresh = node.login(a)
        t0 = time.monotonic()
        new = node.peer(fresh)  # held --duplicate-login-delay (1 s here, 10 s by default)
        held = time.monotonic() - t0
        assert held >= 0.9, held
        assert old.wait1("duplicate_login")["type"] == "new_login_attempt"
        assert old.wait1("session_ended") == {"reason": "duplicate_login", "message": V.SESSION_ENDED_DUP}
        assert pb.wait1("message", lambda m: m.get("type") == "system" and "끊어졌" in m["content"])
        deadline = time.monotonic() + 3
        while old.client.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not old.client.connected
        new.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "x"})
        assert new.wait1("error")["message"] == V.E_ROOM_ACCESS  # evicted from the room: join again
        new.close()
        stale = node.peer(a, connect=False)  # the old session id: refused with Node's text
        with pytest.raises(socketio.exceptions.ConnectionError):
            stale.connect()
        assert stale.connect_error == {"message": V.E_NODE_INVALID_SESSION} or \
            stale.connect_error == V.E_NODE_INVALID_SESSION
    finally:
        old.close()
        pb.close()


def test_a_clean_disconnect_leaves_the_user_a_participant(node: Ktb) -> None:
    """A client whose DISCONNECT packet is processed stays a participant and the room hears
    nothing (§6.1). loadkit's own client sends DISCONNECT before closing the websocket;
    python-socketio's client may close first, which the server sees as a transport close."""
    from loadkit.clients.socketio import SocketIOClient

    a, b = node.new_user("alice"), node.new_user("bob")
    room = node.create_room(a)
    pb, _ = _joined(node, b, room)
    ca = SocketIOClient(node.sock, auth={"token": a["token"], "sessionId": a["sessionId"]})
    ca.connect()
    ca.request("joinRoom", room["_id"], answer="joinRoomSuccess", timeout=5)
    pb.wait1("message", lambda m: m.get("content") == V.join_text("alice"))
    pb.clear()
    ca.close()
    try:
        assert pb.quiet("message", 0.5)
        r = requests.get(f"{node.rest}/api/rooms/{room['_id']}", headers=node.headers(b))
        assert a["id"] in [u["_id"] for u in r.json()["data"]["participants"]]
    finally:
        pb.close()
