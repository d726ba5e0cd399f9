"""Garbage in, proper answers out: the KTB server over a raw websocket (websocket-client).

Throws malformed Engine.IO/Socket.IO packets, wrong payload types, binary junk, random bytes and an
oversized frame at ``loadkit serve ktb`` and checks that it neither crashes nor leaves the socket
stuck: afterwards the same socket (or, after an oversized frame, a new one) still gets the right
answers.
"""

from __future__ import annotations

import json
import random

import pytest
import requests
import websocket

from ktb_server_helpers import Ktb, start_ktb

pytestmark = pytest.mark.timeout(60)

GARBAGE = [
    "", " ", "x", "9", "7abc", "b!!!", "bQUJD", "\x00\xff", "2probe", "5", "6", "3", "4", "42", "42[", "42]",
    "42[]", "42{}", '42"str"', "42[1,2]", "42null", "42[null]", '42["joinRoom"', "43", "43[]", "44", "44{}", "45",
    '451-["x",{"_placeholder":true,"num":0}]', "4a", "400", "40/nope,", "4999999999999999999999",
    '42["joinRoom",{"a":1}]', '42["joinRoom",[1]]', '42["chatMessage","str"]', '42["chatMessage",[1,2]]',
    '42["chatMessage",{"room":{"x":1}}]', '42["chatMessage",{"fileData":"nope","room":"r"}]',
    '42["fetchPreviousMessages",{"roomId":"r","limit":"many"}]', '42["fetchPreviousMessages",{"roomId":["r"]}]',
    '42["markMessagesAsRead",{"messageIds":"abc"}]', '42["markMessagesAsRead",{"messageIds":[{"a":1}]}]',
    '42["markMessagesAsRead",5]', '42["messageReaction",{"messageId":{"x":1}}]', '42["messageReaction",[]]',
    '42["leaveRoom",{"x":1}]', '42["unknownEvent",1,2,3]', '42[123,"x"]', '42[{"a":1}]',
    '42["chatMessage",{"room":"' + "r" * 1000 + '","content":"' + "c" * 30000 + '"}]',
    "42" + "[" * 5000 + "]" * 5000,
]


def _open(ktb: Ktb, user: dict) -> websocket.WebSocket:
    ws = websocket.create_connection(ktb.sock.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                                     timeout=5, header=["User-Agent: fuzz"])
    assert ws.recv().startswith("0{")
    ws.send("40" + json.dumps({"token": user["token"], "sessionId": user["sessionId"]}))
    assert ws.recv().startswith('40{"sid":')
    return ws


def _recv_event(ws: websocket.WebSocket, name: str, pred=lambda data: True) -> object:
    for _ in range(50):
        msg = ws.recv()
        if msg.startswith("42") and json.loads(msg[2:])[0] == name and pred(json.loads(msg[2:])[1]):
            return json.loads(msg[2:])[1]
    raise AssertionError(f"no {name}")


@pytest.fixture
def ktb(spawn) -> Ktb:
    return start_ktb(spawn, single=True)


def test_garbage_packets_are_dropped_and_the_socket_keeps_working(ktb: Ktb) -> None:
    user = ktb.new_user("fuzzer")
    room = ktb.create_room(user)
    ws = _open(ktb, user)
    try:
        rnd = random.Random(1234)
        for g in GARBAGE:
            ws.send(g)
        for _ in range(200):
            n = rnd.randint(0, 300)
            if rnd.random() < 0.5:
                ws.send_binary(bytes(rnd.getrandbits(8) for _ in range(n)))
            else:
                prefix = rnd.choice(["", "4", "42", "42[", '42["chatMessage",', "0", "2"])
                ws.send(prefix + "".join(chr(rnd.randint(32, 0x2FF)) for _ in range(n)))
        # still alive: an acked joinRoom is answered, then a chat round trip works
        ws.send("4277" + json.dumps(["joinRoom", room["_id"]]))
        ok = _recv_event(ws, "joinRoomSuccess")
        assert ok["roomId"] == room["_id"]
        ws.send("42" + json.dumps(["chatMessage", {"room": room["_id"], "type": "text", "content": "still here"}]))
        assert _recv_event(ws, "message", lambda d: d["type"] == "text")["content"] == "still here"
        ws.send("2")  # a client ping is not part of EIO4 but must not hurt either
        ws.send("42" + json.dumps(["chatMessage", 12345]))
        ws.send("42" + json.dumps(["chatMessage"]))
        assert _recv_event(ws, "error") == {"code": "MESSAGE_ERROR", "message": "메시지 데이터가 없습니다."}
    finally:
        ws.close()
    assert requests.get(f"{ktb.rest}/api/health").status_code == 200
    assert "Traceback" not in ktb.proc.output()


def test_oversized_frame_closes_only_that_connection(ktb: Ktb) -> None:
    user = ktb.new_user("big")
    other = ktb.new_user("bystander")
    room = ktb.create_room(other)
    bystander = _open(ktb, other)
    ws = _open(ktb, user)
    try:
        ws.send("42" + json.dumps(["chatMessage", {"room": room["_id"], "content": "x" * 70000}]))
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            for _ in range(5):
                if ws.recv() == "":
                    raise ConnectionError("closed")
        # the rest of the server is fine
        bystander.send("42" + json.dumps(["joinRoom", room["_id"]]))
        assert _recv_event(bystander, "joinRoomSuccess")["roomId"] == room["_id"]
        again = _open(ktb, ktb.login(user))
        again.close()
    finally:
        ws.close()
        bystander.close()


def test_invalid_utf8_text_frame_closes_that_connection(ktb: Ktb) -> None:
    user = ktb.new_user("utf")
    ws = _open(ktb, user)
    try:
        ws.send_frame(websocket.ABNF.create_frame(b'42["chatMessage","\xff\xfe"]', websocket.ABNF.OPCODE_TEXT))
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            for _ in range(5):
                if ws.recv() == "":
                    raise ConnectionError("closed")
    finally:
        ws.close()
    again = _open(ktb, ktb.login(user))
    again.send('42["joinRoom","nope"]')
    assert _recv_event(again, "joinRoomError") == {"message": "채팅방을 찾을 수 없습니다."}
    again.close()
    assert "Traceback" not in ktb.proc.output()


def test_garbage_over_polling_and_rest(ktb: Ktb) -> None:
    base = ktb.sock + "/socket.io/"
    r = requests.get(base, params={"EIO": "4", "transport": "polling"})
    assert r.status_code == 200 and r.text.startswith("0{")
    sid = json.loads(r.text[1:])["sid"]
    for body in ["", "garbage", "4", "42[", "\x1e\x1e", "9" * 100, "b!!!"]:
        resp = requests.post(base, params={"EIO": "4", "transport": "polling", "sid": sid}, data=body.encode())
        assert resp.status_code in (200, 400), body
    resp = requests.post(base, params={"EIO": "4", "transport": "polling", "sid": sid}, data=b"4" + b"x" * 70000)
    assert resp.status_code in (400, 413)
    assert requests.get(base, params={"EIO": "4", "transport": "polling", "sid": "nope"}).status_code == 400
    assert requests.get(base, params={"EIO": "99", "transport": "polling"}).status_code == 400

    R = ktb.rest
    for data in [b"{", b"[]", b"null", b'{"name": {"x": 1}, "email": "a@b.c", "password": "secret1"}', b"\xff\xfe"]:
        resp = requests.post(f"{R}/api/auth/register", data=data, headers={"Content-Type": "application/json"})
        assert resp.status_code == 500 and resp.json()["code"] == "INTERNAL_SERVER_ERROR", data
    u = ktb.new_user()
    resp = requests.get(f"{R}/api/rooms", params={"page": "abc"}, headers=ktb.headers(u))
    assert resp.status_code == 500
    resp = requests.post(f"{R}/api/rooms", data=b"garbage", headers=ktb.headers(u))
    assert resp.status_code == 500
    assert requests.get(f"{R}/api/health").status_code == 200
    assert "Traceback" not in ktb.proc.output()
