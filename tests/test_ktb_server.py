"""Conformance tests for ``loadkit serve ktb`` against the Java facts sheet (ktb-java-server-facts.md).

The server runs as a real subprocess; it is driven with ``requests`` and python-socketio's own
``socketio.Client`` (an independent Socket.IO implementation), so these tests check the wire
behaviour, not our own client code.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest
import requests
import socketio

from ktb_server_helpers import Ktb, start_ktb
from loadkit.procs import free_port, loadkit_argv

pytestmark = pytest.mark.timeout(60)

HEX24 = re.compile(r"^[0-9a-f]{24}$")


@pytest.fixture
def ktb(spawn) -> Ktb:
    return start_ktb(spawn)


# ---------------------------------------------------------------------------------------------- REST
def test_register_login_validation_and_auth_headers(ktb: Ktb) -> None:
    R = ktb.rest
    r = requests.post(f"{R}/api/auth/register", json={"name": "Kim", "email": "Kim@Test.io", "password": "secret1"})
    assert r.status_code == 201
    body = r.json()
    assert body["success"] is True and body["token"] is None and body["sessionId"] is None
    assert body["message"] == "회원가입이 완료되었습니다."
    assert HEX24.match(body["user"]["_id"]) and body["user"]["email"] == "kim@test.io"
    assert body["user"]["profileImage"] is None

    r = requests.post(f"{R}/api/auth/register", json={"name": "Kim", "email": "kim@test.io", "password": "secret1"})
    assert r.status_code == 409 and r.json() == {"success": False, "message": "이미 등록된 이메일입니다."}

    r = requests.post(f"{R}/api/auth/register", json={"name": "K", "email": "nope", "password": "123"})
    assert r.status_code == 400
    b = r.json()
    assert b["success"] is False and b["code"] == "VALIDATION_ERROR" and b["message"] == "입력값이 올바르지 않습니다."
    assert {e["field"]: e["message"] for e in b["errors"]} == {
        "name": "이름은 2자 이상이어야 합니다.", "email": "올바른 이메일 형식이 아닙니다.",
        "password": "비밀번호는 6자 이상이어야 합니다."}

    r = requests.post(f"{R}/api/auth/login", json={"email": "kim@test.io", "password": "wrong!!"})
    assert r.status_code == 401 and r.json()["message"] == "이메일 또는 비밀번호가 올바르지 않습니다."
    r = requests.post(f"{R}/api/auth/login", json={"email": "", "password": ""})
    assert r.status_code == 400
    assert {e["message"] for e in r.json()["errors"]} == {"이메일을 입력해주세요.", "비밀번호를 입력해주세요."}
    r = requests.post(f"{R}/api/auth/register", data="not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 500 and r.json()["code"] == "INTERNAL_SERVER_ERROR"

    r = requests.post(f"{R}/api/auth/login", json={"email": "KIM@test.io", "password": "secret1"})
    assert r.status_code == 200
    j = r.json()
    assert j["success"] is True and j["message"] is None and re.match(r"^[0-9a-f]{32}$", j["sessionId"])
    assert r.headers["x-session-id"] == j["sessionId"] and r.headers["Authorization"] == f"Bearer {j['token']}"
    import jwt

    claims = jwt.decode(j["token"], options={"verify_signature": False})
    assert jwt.get_unverified_header(j["token"])["alg"] == "HS256"
    assert claims["sub"] == "kim@test.io" and claims["sessionId"] == j["sessionId"]
    assert claims["userId"] == j["user"]["_id"] and claims["exp"] - claims["iat"] == 86400

    # every way of carrying the token works; failures are 401 with an empty body
    for headers in ({"x-auth-token": j["token"], "x-session-id": j["sessionId"]},
                    {"Authorization": f"Bearer {j['token']}"}):
        assert requests.get(f"{R}/api/rooms", headers=headers).status_code == 200
    assert requests.get(f"{R}/api/rooms", params={"token": j["token"]}).status_code == 200
    for headers in ({}, {"x-auth-token": "garbage"}, {"Authorization": "Bearer " + j["token"][:-3] + "abc"}):
        r = requests.get(f"{R}/api/rooms", headers=headers)
        assert r.status_code == 401 and r.content == b"" and r.headers["WWW-Authenticate"].startswith("Bearer")
    # a bad token is refused even on the public /api/auth/** paths
    r = requests.post(f"{R}/api/auth/login", json={"email": "kim@test.io", "password": "secret1"},
                      headers={"x-auth-token": "garbage"})
    assert r.status_code == 401 and r.content == b""

    # one session per user: a second login invalidates the first token
    r2 = requests.post(f"{R}/api/auth/login", json={"email": "kim@test.io", "password": "secret1"}).json()
    assert requests.get(f"{R}/api/rooms", headers={"x-auth-token": j["token"]}).status_code == 401
    assert requests.get(f"{R}/api/rooms", headers={"x-auth-token": r2["token"]}).status_code == 200

    h = requests.get(f"{R}/api/health").json()
    assert h["status"] == "ok" and h["timestamp"].endswith("Z") and "env" in h
    assert requests.get(f"{R}/api/auth").json()["status"] == "active"
    assert requests.get(f"{R}/api/nothing-here", headers={"x-auth-token": r2["token"]}).status_code == 404


def test_verify_refresh_logout(ktb: Ktb) -> None:
    R = ktb.rest
    u = ktb.new_user()
    h = ktb.headers(u)
    r = requests.post(f"{R}/api/auth/verify-token", headers=h)
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["message"] == "토큰이 유효합니다."
    assert r.json()["user"]["_id"] == u["id"]
    r = requests.post(f"{R}/api/auth/verify-token", headers={"x-auth-token": u["token"]})
    assert r.status_code == 400 and r.json() == {"success": False, "message": "토큰 또는 세션 ID가 필요합니다.", "user": None}
    r = requests.post(f"{R}/api/auth/verify-token", headers=dict(h, **{"x-session-id": "0" * 32}))
    assert r.status_code == 401 and r.json()["message"] == "만료된 세션입니다."

    r = requests.post(f"{R}/api/auth/refresh-token", headers=h)
    assert r.status_code == 200
    j = r.json()
    assert j["success"] is True and j["message"] == "토큰이 갱신되었습니다." and j["sessionId"] != u["sessionId"]
    assert requests.get(f"{R}/api/rooms", headers=h).status_code == 401  # old session gone
    u2 = dict(u, token=j["token"], sessionId=j["sessionId"])
    h2 = ktb.headers(u2)
    assert requests.get(f"{R}/api/rooms", headers=h2).status_code == 200

    peer = ktb.peer(u2)
    try:
        r = requests.post(f"{R}/api/auth/logout", headers={"x-auth-token": u2["token"]})
        assert r.status_code == 400 and r.json()["message"] == "x-session-id 헤더가 필요합니다."
        r = requests.post(f"{R}/api/auth/logout", headers=h2)
        assert r.status_code == 200 and r.json() == {"success": True, "message": "로그아웃이 완료되었습니다."}
        assert peer.wait1("session_ended") == {"reason": "logout", "message": "로그아웃되었습니다."}
        assert peer.client.connected  # Java never disconnects the socket
        assert requests.get(f"{R}/api/rooms", headers=h2).status_code == 401
    finally:
        peer.close()


def test_rooms_rest_and_room_events(ktb: Ktb) -> None:
    R = ktb.rest
    owner, other = ktb.new_user("owner"), ktb.new_user("other")
    watcher = ktb.peer(other)
    try:
        r = requests.post(f"{R}/api/rooms", json={"name": "x"}, headers=ktb.headers(owner))
        assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR" and r.json()["errors"][0]["field"] == "name"
        r = requests.post(f"{R}/api/rooms", json={"name": "ok name", "password": "123"}, headers=ktb.headers(owner))
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "password"

        room = ktb.create_room(owner, "  Alpha room  ", description="ignored") if False else ktb.create_room(owner, "  Alpha room  ")
        assert HEX24.match(room["_id"]) and room["name"] == "Alpha room" and room["hasPassword"] is False
        assert room["creator"] == {"id": owner["id"], "name": "owner", "email": owner["email"], "profileImage": ""}
        assert room["participants"] == [room["creator"]] and room["participantsCount"] == 1
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$", room["createdAt"])
        assert "isCreator" not in room
        created = watcher.wait1("roomCreated")
        assert created["_id"] == room["_id"] and "profileImage" not in created["creator"]

        secret = ktb.create_room(owner, "Beta secret", password="pass1234")
        assert secret["hasPassword"] is True
        for i in range(3):
            ktb.create_room(owner, f"gamma {i}")

        r = requests.get(f"{R}/api/rooms", params={"page": 0, "pageSize": 2, "sortField": "name", "sortOrder": "asc"},
                         headers=ktb.headers(other))
        body = r.json()
        assert r.headers["Cache-Control"] == "max-age=10" and "X-RateLimit-Limit" in r.headers
        assert [d["name"] for d in body["data"]] == ["Alpha room", "Beta secret"]
        assert body["metadata"] == {"total": 5, "page": 0, "pageSize": 2, "totalPages": 3, "hasMore": True,
                                    "currentCount": 2, "sort": {"field": "name", "order": "asc"}}
        assert body["data"][0]["creator"]["profileImage"] is None  # RoomService mapper on REST
        r = requests.get(f"{R}/api/rooms", params={"page": 2, "pageSize": 2, "sortField": "bogus", "sortOrder": "x"},
                         headers=ktb.headers(other)).json()
        assert r["metadata"]["currentCount"] == 1 and r["metadata"]["hasMore"] is False
        assert r["metadata"]["sort"] == {"field": "createdAt", "order": "desc"}
        assert r["data"][0]["name"] == "Alpha room"  # oldest last in desc order
        r = requests.get(f"{R}/api/rooms", params={"search": "GAMMA", "pageSize": 100}, headers=ktb.headers(other)).json()
        assert r["metadata"]["total"] == 3 and r["metadata"]["pageSize"] == 50

        r = requests.get(f"{R}/api/rooms/{room['_id']}", headers=ktb.headers(other))
        assert r.status_code == 200 and r.json()["data"]["_id"] == room["_id"]
        r = requests.get(f"{R}/api/rooms/{'0' * 24}", headers=ktb.headers(other))
        assert r.status_code == 404 and r.json() == {"success": False, "message": "채팅방을 찾을 수 없습니다."}

        watcher.client.emit("joinRoom", secret["_id"])  # socket join: no password check (Java)
        watcher.wait1("joinRoomSuccess")
        owner_peer = ktb.peer(owner)
        try:
            owner_peer.emit("joinRoom", secret["_id"])
            owner_peer.wait1("joinRoomSuccess")
            third = ktb.new_user("third")
            url = f"{R}/api/rooms/{secret['_id']}/join"
            r = requests.post(url, json={}, headers=ktb.headers(third))
            assert r.status_code == 401 and r.json()["message"] == "비밀번호가 일치하지 않습니다."
            r = requests.post(url, json={"password": "wrong"}, headers=ktb.headers(third))
            assert r.status_code == 401
            r = requests.post(url, headers=ktb.headers(third))
            assert r.status_code == 500  # @RequestBody is required
            r = requests.post(url, json={"password": "pass1234"}, headers=ktb.headers(third))
            assert r.status_code == 200 and r.json()["data"]["participantsCount"] == 3
            upd = owner_peer.wait1("roomUpdated")
            assert upd["_id"] == secret["_id"] and upd["participantsCount"] == 3
            r = requests.post(f"{R}/api/rooms/{'0' * 24}/join", json={}, headers=ktb.headers(third))
            assert r.status_code == 404
        finally:
            owner_peer.close()
    finally:
        watcher.close()


# ---------------------------------------------------------------------------------------------- socket
def test_handshake_errors_and_anonymous_socket(ktb: Ktb) -> None:
    u = ktb.new_user()
    cases = [
        ({"token": u["token"]}, "Authentication error"),
        ({}, "Authentication error"),
        ({"token": "garbage", "sessionId": u["sessionId"]}, {"message": "Invalid token"}),
        ({"token": u["token"], "sessionId": "f" * 32}, {"message": "Invalid session"}),
    ]
    for auth, expected in cases:
        peer = ktb.peer(None, connect=False)
        peer.auth = auth
        with pytest.raises(socketio.exceptions.ConnectionError):
            peer.connect()
        assert peer.connect_error == expected, auth
        peer.close()

    # no auth payload at all (``40``, what socket.io-client sends without ``auth``): Java accepts the
    # socket but it has no user. python-socketio's client always sends ``{}``, so use a raw websocket.
    import json

    import websocket

    room = ktb.create_room(u)
    ws = websocket.create_connection(ktb.sock.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                                     timeout=5)
    try:
        assert ws.recv().startswith("0{")
        ws.send("40")
        assert ws.recv().startswith('40{"sid":')

        def ask(event: str, payload: object) -> list:
            ws.send("42" + json.dumps([event, payload]))
            return json.loads(ws.recv()[2:])

        assert ask("joinRoom", room["_id"]) == ["joinRoomError", {"message": "Unauthorized"}]
        assert ask("chatMessage", {"room": room["_id"], "type": "text", "content": "hi"}) == [
            "error", {"code": "SESSION_EXPIRED", "message": "세션이 만료되었습니다. 다시 로그인해주세요."}]
        assert ask("leaveRoom", room["_id"]) == ["error", {"message": "Unauthorized"}]
        assert ask("markMessagesAsRead", {"messageIds": ["a" * 24]}) == [
            "error", {"message": "읽음 상태 업데이트 중 오류가 발생했습니다."}]
        assert ask("messageReaction", {"messageId": "a" * 24, "type": "add", "reaction": "x"}) == [
            "error", {"message": "리액션 처리 중 오류가 발생했습니다."}]
        # fetchPreviousMessages: nothing at all, not even the requested ack; the next answer is the ping
        ws.send("421" + json.dumps(["fetchPreviousMessages", {"roomId": room["_id"]}]))
        ws.send("422" + json.dumps(["joinRoom", room["_id"]]))
        assert json.loads(ws.recv()[2:]) == ["joinRoomError", {"message": "Unauthorized"}]
        assert ws.recv() == "432[]"
        # another namespace is refused
        ws.send("40/admin,")
        assert ws.recv() == '44/admin,"Invalid namespace"'
    finally:
        ws.close()


def test_join_chat_and_chat_errors(ktb: Ktb) -> None:
    a, b = ktb.new_user("alice"), ktb.new_user("bob")
    room = ktb.create_room(a, "chat room")
    pa, pb = ktb.peer(a), ktb.peer(b)
    try:
        pa.emit("joinRoom", room["_id"])
        ok = pa.wait1("joinRoomSuccess")
        assert ok["roomId"] == room["_id"] and ok["hasMore"] is False and ok["activeStreams"] == []
        assert ok["participants"] == [{"id": a["id"], "name": "alice", "email": a["email"], "profileImage": ""}]
        assert [m["content"] for m in ok["messages"]] == ["alice님이 입장하였습니다."]
        sysmsg = pa.wait1("message")
        assert set(sysmsg) == {"_id", "room", "content", "type", "timestamp", "reactions", "readers", "metadata"}
        assert sysmsg["type"] == "system" and sysmsg["readers"] == [] and "sender" not in sysmsg
        assert [p["id"] for p in pa.wait1("participantsUpdate")] == [a["id"]]

        pb.emit("joinRoom", room["_id"])
        okb = pb.wait1("joinRoomSuccess")
        assert [m["content"] for m in okb["messages"]] == ["alice님이 입장하였습니다.", "bob님이 입장하였습니다."]
        assert okb["messages"][0]["readers"][0]["userId"] == a["id"]  # the joiner marked history read
        assert isinstance(okb["messages"][0]["readers"][0]["readAt"], list)
        assert pa.wait1("message")["content"] == "bob님이 입장하였습니다."
        assert len(pa.wait1("participantsUpdate")) == 2
        assert len(pb.wait1("participantsUpdate")) == 2

        # already joined: short answer only
        pb.clear()
        pb.emit("joinRoom", room["_id"])
        assert pb.wait1("joinRoomSuccess") == {"roomId": room["_id"]}
        assert pb.quiet("participantsUpdate", 0.3)

        pa.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "  hello bob  "})
        for p in (pa, pb):  # the sender gets its own message too
            m = p.wait1("message", lambda d: d.get("type") == "text")
            assert m["content"] == "hello bob" and HEX24.match(m["_id"]) and m["room"] == room["_id"]
            assert m["sender"] == {"id": a["id"], "name": "alice", "email": a["email"], "profileImage": ""}
            assert m["reactions"] == {} and m["metadata"] == {} and "readers" not in m
            assert isinstance(m["timestamp"], int) and abs(m["timestamp"] - time.time() * 1000) < 60000
        pa.emit("chatMessage", {"room": room["_id"], "content": "", "msg": "via msg"})
        assert pb.wait1("message", lambda d: d.get("type") == "text")["content"] == "via msg"

        # automatic empty ack on a registered event; none on unknown ones
        assert pa.client.call("chatMessage", {"room": room["_id"], "type": "text", "content": "acked"}, timeout=5) is None
        with pytest.raises(socketio.exceptions.TimeoutError):
            pa.client.call("noSuchEvent", {"x": 1}, timeout=0.5)
        with pytest.raises(socketio.exceptions.TimeoutError):  # undeserialisable payload: dropped, no ack
            pa.client.call("joinRoom", {"not": "a string"}, timeout=0.5)

        outsider = ktb.new_user("eve")
        pe = ktb.peer(outsider)
        try:
            cases = [
                (None, "MESSAGE_ERROR", "메시지 데이터가 없습니다."),
                ({"type": "text", "content": "x"}, "MESSAGE_ERROR", "채팅방 정보가 없습니다."),
                ({"room": " ", "content": "x"}, "MESSAGE_ERROR", "채팅방 정보가 없습니다."),
                ({"room": room["_id"], "content": "x"}, "MESSAGE_ERROR", "채팅방 접근 권한이 없습니다."),
                ({"room": "f" * 24, "content": "x"}, "MESSAGE_ERROR", "채팅방 접근 권한이 없습니다."),
            ]
            for payload, code, msg in cases:
                pe.client.emit("chatMessage", payload) if payload is not None else pe.client.emit("chatMessage")
                assert pe.wait1("error") == {"code": code, "message": msg}, payload
        finally:
            pe.close()
        for payload, msg in [
            ({"room": room["_id"], "type": "sticker", "content": "x"}, "Unsupported message type: sticker"),
            ({"room": room["_id"], "type": "file", "content": "x"}, "파일 데이터가 올바르지 않습니다."),
            ({"room": room["_id"], "type": "file", "fileData": {"_id": "a" * 24}}, "파일을 찾을 수 없거나 접근 권한이 없습니다."),
        ]:
            pa.emit("chatMessage", payload)
            assert pa.wait1("error") == {"code": "MESSAGE_ERROR", "message": msg}
        pa.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "   "})  # blank: silently ignored
        assert pa.quiet("error", 0.3)

        pa.emit("joinRoom", "0" * 24)
        assert pa.wait1("joinRoomError") == {"message": "채팅방을 찾을 수 없습니다."}
    finally:
        pa.close()
        pb.close()


def test_file_upload_and_file_message(ktb: Ktb) -> None:
    a, b = ktb.new_user("filer"), ktb.new_user("thief")
    room = ktb.create_room(a)
    r = requests.post(f"{ktb.rest}/api/files/upload", files={"file": ("pic.png", b"\x89PNG" + b"x" * 96, "image/png")},
                      headers=ktb.headers(a))
    assert r.status_code == 200 and r.json()["message"] == "파일 업로드 성공"
    f = r.json()["file"]
    assert HEX24.match(f["_id"]) and f["originalname"] == "pic.png" and f["size"] == 100
    assert re.match(r"^\d+_[0-9a-f]{16}\.png$", f["filename"]) and not f["uploadDate"].endswith("Z")
    r = requests.post(f"{ktb.rest}/api/files/upload", files={"file": ("x.exe", b"MZ", "application/x-msdownload")},
                      headers=ktb.headers(a))
    assert r.status_code == 500 and r.json()["message"] == "파일 업로드 중 오류가 발생했습니다."
    pa, pb = ktb.peer(a), ktb.peer(b)
    try:
        for p in (pa, pb):
            p.emit("joinRoom", room["_id"])
            p.wait1("joinRoomSuccess")
        pa.emit("chatMessage", {"room": room["_id"], "type": "file", "content": "", "fileData": {"_id": f["_id"]}})
        m = pb.wait1("message", lambda d: d.get("type") == "file")
        assert m["content"] == "" and m["file"]["_id"] == f["_id"] and m["file"]["user"] == a["id"]
        assert isinstance(m["file"]["uploadDate"], list)
        assert m["metadata"] == {"fileType": "image/png", "fileSize": 100, "originalName": "pic.png"}
        pb.emit("chatMessage", {"room": room["_id"], "type": "file", "fileData": {"_id": f["_id"]}})
        assert pb.wait1("error") == {"code": "MESSAGE_ERROR", "message": "파일을 찾을 수 없거나 접근 권한이 없습니다."}
        pb.emit("fetchPreviousMessages", {"roomId": room["_id"]})
        hist = pb.wait1("previousMessagesLoaded")
        hf = [x for x in hist["messages"] if x["type"] == "file"][0]
        assert set(hf["file"]) == {"_id", "filename", "originalname", "mimetype", "size"}
    finally:
        pa.close()
        pb.close()


def test_leave_disconnect_reads_and_reactions(ktb: Ktb) -> None:
    a, b, c = ktb.new_user("ann"), ktb.new_user("ben"), ktb.new_user("cat")
    room = ktb.create_room(a)
    pa, pb, pc = ktb.peer(a), ktb.peer(b), ktb.peer(c)
    try:
        for p in (pa, pb):
            p.emit("joinRoom", room["_id"])
            p.wait1("joinRoomSuccess")
        pa.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "read me"})
        msg = pb.wait1("message", lambda d: d.get("content") == "read me")

        pb.emit("markMessagesAsRead", {"roomId": "ignored", "messageIds": [msg["_id"], "b" * 24]})
        for p in (pa, pb):
            assert p.wait1("messagesRead") == {"userId": b["id"], "messageIds": [msg["_id"], "b" * 24]}
        pb.emit("markMessagesAsRead", {"messageIds": ["c" * 24]})
        assert pb.wait1("error") == {"message": "Invalid room"}
        pc.emit("markMessagesAsRead", {"messageIds": [msg["_id"]]})
        assert pc.wait1("error") == {"message": "Room access denied"}
        pb.emit("markMessagesAsRead", {"messageIds": []})
        assert pb.quiet("error", 0.3)

        pc.emit("messageReaction", {"messageId": msg["_id"], "type": "add", "reaction": "👍"})  # no membership check
        for p in (pa, pb):
            assert p.wait1("messageReactionUpdate") == {"messageId": msg["_id"], "reactions": {"👍": [c["id"]]}}
        pb.emit("messageReaction", {"messageId": msg["_id"], "type": "add", "emoji": "👍"})
        assert pa.wait1("messageReactionUpdate")["reactions"] == {"👍": [c["id"], b["id"]]}
        pc.emit("messageReaction", {"messageId": msg["_id"], "type": "remove", "reaction": "👍"})
        assert pa.wait1("messageReactionUpdate")["reactions"] == {"👍": [b["id"]]}
        pb.emit("messageReaction", {"messageId": msg["_id"], "type": "remove", "reaction": "👍"})
        assert pa.wait1("messageReactionUpdate")["reactions"] == {}
        pb.emit("messageReaction", {"messageId": "d" * 24, "type": "add", "reaction": "x"})
        assert pb.wait1("error") == {"message": "메시지를 찾을 수 없습니다."}
        pb.emit("messageReaction", {"messageId": msg["_id"], "type": "toggle", "reaction": "x"})
        assert pb.wait1("error") == {"message": "지원하지 않는 리액션 타입입니다."}

        pb.emit("fetchPreviousMessages", {"roomId": room["_id"]})
        pb.wait("messageLoadStart")
        hist = pb.wait1("previousMessagesLoaded")
        read = [m for m in hist["messages"] if m["_id"] == msg["_id"]][0]
        assert [r["userId"] for r in read["readers"]] == [b["id"]]
        assert "profileImage" not in read["sender"]  # history mapper omits a null profileImage

        pa.clear()
        pb.emit("leaveRoom", room["_id"])
        m = pa.wait1("message", lambda d: d.get("type") == "system")
        assert m["content"] == "ben님이 퇴장하였습니다."
        assert [p["id"] for p in pa.wait1("participantsUpdate")] == [a["id"]]
        assert pa.wait1("userLeft") == {"userId": b["id"], "userName": "ben"}
        assert pb.quiet("userLeft", 0.3)  # the leaver hears nothing
        pb.emit("chatMessage", {"room": room["_id"], "content": "still here?"})
        assert pb.wait1("error")["message"] == "채팅방 접근 권한이 없습니다."

        pb.emit("joinRoom", room["_id"])
        pb.wait1("joinRoomSuccess")
        pa.clear()
        pb.close()  # disconnect = leave of every room
        assert pa.wait1("userLeft") == {"userId": b["id"], "userName": "ben"}
        pc.emit("fetchPreviousMessages", {"roomId": room["_id"]})
        assert pc.wait1("error") == {"code": "LOAD_ERROR", "message": "채팅방 접근 권한이 없습니다."}
    finally:
        for p in (pa, pb, pc):
            p.close()


def test_pagination_100_messages(ktb: Ktb) -> None:
    u = ktb.new_user()
    room = ktb.create_room(u)  # the creator is a participant: no join message, exactly 100 messages
    p = ktb.peer(u)
    try:
        for i in range(100):
            p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": f"m{i:03d}"})
        pages, before = [], None
        for _ in range(4):
            req = {"roomId": room["_id"]} if before is None else {"roomId": room["_id"], "before": before}
            p.emit("fetchPreviousMessages", req)
            assert p.wait("messageLoadStart", timeout=10) == ()
            page = p.wait1("previousMessagesLoaded", timeout=10)
            pages.append(page)
            before = page["messages"][0]["timestamp"]
        assert [len(pg["messages"]) for pg in pages] == [30, 30, 30, 10]
        assert [pg["hasMore"] for pg in pages] == [True, True, True, False]
        contents = [m["content"] for pg in reversed(pages) for m in pg["messages"]]
        assert contents == [f"m{i:03d}" for i in range(100)]
        for pg in pages:
            ts = [m["timestamp"] for m in pg["messages"]]
            assert ts == sorted(ts)
        p.emit("fetchPreviousMessages", {"roomId": room["_id"], "limit": 5, "before": pages[0]["messages"][-1]["timestamp"]})
        p.wait("messageLoadStart")
        last = p.wait1("previousMessagesLoaded")
        assert [m["content"] for m in last["messages"]] == [f"m{i:03d}" for i in range(94, 99)]  # strict before
        assert last["hasMore"] is True
    finally:
        p.close()


# ---------------------------------------------------------------------------------------------- options
def test_duplicate_login_and_session_expiry(spawn) -> None:
    ktb = start_ktb(spawn, "--duplicate-login-delay", "1")
    first = ktb.new_user("dup")
    room = ktb.create_room(first)
    old = ktb.peer(first)
    try:
        old.emit("joinRoom", room["_id"])
        old.wait1("joinRoomSuccess")
        second = ktb.login(first)  # re-login invalidates the first session
        new = ktb.peer(second, user_agent="agent-B")
        try:
            dup = old.wait1("duplicate_login")
            assert dup["type"] == "new_login_attempt" and dup["deviceInfo"] == "agent-B"
            assert re.match(r"^/127\.0\.0\.1:\d+$", dup["ipAddress"]) and isinstance(dup["timestamp"], int)
            t0 = time.monotonic()
            ended = old.wait1("session_ended", timeout=5)
            assert ended == {"reason": "duplicate_login", "message": "다른 기기에서 로그인하여 현재 세션이 종료되었습니다."}
            assert time.monotonic() - t0 > 0.5  # it follows after the configured delay
            assert old.client.connected
            old.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "old"})
            assert old.wait1("error")["code"] == "SESSION_EXPIRED"
            # the new socket inherits the user's rooms (short joinRoomSuccess) and can chat
            assert new.wait1("joinRoomSuccess") == {"roomId": room["_id"]}
            new.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "new"})
            assert new.wait1("message", lambda d: d.get("content") == "new")["sender"]["id"] == first["id"]
            assert "duplicate_login" not in new.events()
        finally:
            new.close()
    finally:
        old.close()


def test_duplicate_login_without_user_agent_reproduces_the_java_npe(ktb: Ktb) -> None:
    import json

    import websocket

    u = ktb.new_user("noua")
    room = ktb.create_room(u)
    old = ktb.peer(u)
    try:
        old.emit("joinRoom", room["_id"])
        old.wait1("joinRoomSuccess")
        ws = websocket.create_connection(ktb.sock.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                                         timeout=5)  # websocket-client sends no User-Agent
        try:
            assert ws.recv().startswith("0{")
            ws.send("40" + json.dumps({"token": u["token"], "sessionId": u["sessionId"]}))
            assert ws.recv().startswith('40{"sid":')
            assert json.loads(ws.recv()[2:]) == ["error", {"message": "연결 처리 중 오류가 발생했습니다."}]
            ws.send("42" + json.dumps(["joinRoom", room["_id"]]))  # left without a user
            assert json.loads(ws.recv()[2:]) == ["joinRoomError", {"message": "Unauthorized"}]
        finally:
            ws.close()
        assert old.quiet("duplicate_login", 0.3)
    finally:
        old.close()


def test_rate_limit_and_banned_words(spawn, tmp_path) -> None:
    words = tmp_path / "banned.txt"
    words.write_text("forbidden\n  zz9top  \n\n")
    ktb = start_ktb(spawn, "--rate-limit", "4", "--banned-words", str(words))
    u = ktb.new_user()
    room = ktb.create_room(u)
    p = ktb.peer(u)
    try:
        p.emit("joinRoom", room["_id"])
        p.wait1("joinRoomSuccess")
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "this is FoRbIdDeN!"})
        assert p.wait1("error") == {"code": "MESSAGE_REJECTED", "message": "금칙어가 포함된 메시지는 전송할 수 없습니다."}
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "xZZ9TOPx"})
        assert p.wait1("error")["code"] == "MESSAGE_REJECTED"
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "forbid den"})
        assert p.wait1("message", lambda d: d.get("type") == "text")["content"] == "forbid den"
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "fourth"})
        p.wait1("message", lambda d: d.get("content") == "fourth")
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "fifth"})  # rejected ones counted too
        err = p.wait1("error")
        assert err["code"] == "RATE_LIMIT_EXCEEDED"
        assert err["message"] == "메시지 전송 횟수 제한을 초과했습니다. 잠시 후 다시 시도해주세요."
        assert isinstance(err["retryAfter"], int) and 1 <= err["retryAfter"] <= 60
    finally:
        p.close()


@pytest.mark.parametrize("mode", ["split", "same-port", "single-port-flag"])
def test_port_layouts_and_polling(spawn, mode: str) -> None:
    if mode == "split":
        ktb = start_ktb(spawn)
        assert ktb.rest != ktb.sock
        assert requests.get(f"{ktb.sock}/api/health").status_code == 404  # Netty port has no REST
        assert requests.get(f"{ktb.rest}/socket.io/?EIO=4&transport=polling").status_code == 404
    elif mode == "same-port":
        ktb = start_ktb(spawn, single=True)
    else:
        port = free_port()
        proc = spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--single-port"), port=port)
        ktb = Ktb(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", proc)
    assert requests.get(f"{ktb.rest}/api/health").json()["status"] == "ok"
    u = ktb.new_user()
    room = ktb.create_room(u)
    # split: polling only; same port: polling upgraded to websocket; flag: websocket only
    transports = {"split": ("polling",), "same-port": ("polling", "websocket"), "single-port-flag": ("websocket",)}[mode]
    p = ktb.peer(u, transports=transports)
    try:
        if mode == "same-port":
            deadline = time.monotonic() + 5
            while p.client.transport() != "websocket" and time.monotonic() < deadline:
                time.sleep(0.05)
        assert p.client.transport() == transports[-1]
        p.emit("joinRoom", room["_id"])
        p.wait1("joinRoomSuccess")
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "over polling"})
        assert p.wait1("message", lambda d: d.get("type") == "text")["content"] == "over polling"
        assert p.client.call("chatMessage", {"room": room["_id"], "content": "acked"}, timeout=5) is None
    finally:
        p.close()


def test_db_persistence_across_restart(spawn, tmp_path) -> None:
    db = tmp_path / "ktb.db"
    ktb = start_ktb(spawn, "--db", str(db), name="first")
    u = ktb.new_user("keeper")
    room = ktb.create_room(u, "persistent room")
    p = ktb.peer(u)
    p.emit("joinRoom", room["_id"])
    p.wait1("joinRoomSuccess")
    for i in range(3):
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": f"kept {i}"})
    p.wait1("message", lambda d: d.get("content") == "kept 2")
    p.close()
    ktb.proc.signal(signal.SIGTERM)
    assert ktb.proc.wait(15) == 0

    again = start_ktb(spawn, "--db", str(db), name="second")
    r = requests.get(f"{again.rest}/api/rooms/{room['_id']}", headers=again.headers(u))  # old token still valid
    assert r.status_code == 200 and r.json()["data"]["name"] == "persistent room"
    u2 = again.login(u)  # password survived
    p2 = again.peer(u2)
    try:
        # the disconnect before the restart was a full leave (Java), so join again first
        p2.emit("joinRoom", room["_id"])
        hist = p2.wait1("joinRoomSuccess")
        assert [m["content"] for m in hist["messages"] if m["type"] == "text"] == ["kept 0", "kept 1", "kept 2"]
        assert [m["content"] for m in hist["messages"] if m["type"] == "system"] == [
            "keeper님이 입장하였습니다.", "keeper님이 퇴장하였습니다.", "keeper님이 입장하였습니다."]
        p2.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "after restart"})
        p2.emit("fetchPreviousMessages", {"roomId": room["_id"]})
        hist = p2.wait1("previousMessagesLoaded", lambda d: any(m["content"] == "after restart" for m in d["messages"]))
        ts = [m["timestamp"] for m in hist["messages"]]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
    finally:
        p2.close()


def test_delay_ms_sets_the_round_trip_floor(spawn) -> None:
    ktb = start_ktb(spawn, "--delay-ms", "300")
    u = ktb.new_user()
    room = ktb.create_room(u)
    p = ktb.peer(u)
    try:
        p.emit("joinRoom", room["_id"])
        p.wait1("joinRoomSuccess")
        t0 = time.perf_counter()
        p.emit("chatMessage", {"room": room["_id"], "type": "text", "content": "slow"})
        p.wait1("message", lambda d: d.get("content") == "slow")
        assert time.perf_counter() - t0 >= 0.29
    finally:
        p.close()


def test_sigterm_and_sigint_exit_cleanly(spawn) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        port = free_port()
        proc = spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(port)), port=port)
        assert requests.get(f"http://127.0.0.1:{port}/api/health").status_code == 200
        proc.signal(sig)
        assert proc.wait(15) == 0
        out = proc.output()
        assert out.count("loadkit ktb server ready") == 1 and "Traceback" not in out


@pytest.mark.parametrize("args", [
    ["--banned-words", "/nonexistent/words.txt"],
    ["--port", "70000"],
    ["--port", "abc"],
    ["--rest-port", "0"],
    ["--db", "/nonexistent-dir/x.db"],
    ["--rate-limit", "0"],
])
def test_bad_config_exits_nonzero_without_traceback(args: list[str]) -> None:
    r = subprocess.run(loadkit_argv("serve", "ktb", "--port", str(free_port()), *args), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_port_in_use_is_a_clear_error(spawn) -> None:
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(port)), port=port)
    r = subprocess.run(loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(port)),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot listen" in r.stderr and "Traceback" not in r.stderr
