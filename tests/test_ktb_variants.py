"""Per-variant KTB rules (loadkit/protocols/ktb_variants.py) and the error shapes of both variants
(loadkit/protocols/ktb.py), with literal payloads taken from the facts sheets."""

from __future__ import annotations

import socket

import pytest

from loadkit.protocols import ktb
from loadkit.protocols import ktb_variants as kv
from loadkit.protocols import ktb_vocab as V

JAVA, NODE = kv.RULES["java"], kv.RULES["node"]
ME = "65f1c0ffee0000000000000a"


# ------------------------------------------------------------------------------- detection
@pytest.mark.parametrize("kw, variant", [
    (dict(two_urls=True, health=None, api_health=None), "java"),
    (dict(two_urls=False, health=404, api_health=200), "java"),  # the Java deployment on one port
    (dict(two_urls=False, health=200, api_health=404), "node"),
    (dict(two_urls=False, health=None, api_health=None, powered_by="Express"), "node"),
    (dict(two_urls=False, health=None, api_health=None), "java"),  # nothing answers: the old default
])
def test_detect_variant(kw, variant):
    got, why = kv.detect_variant(**kw)
    assert got == variant and why


def test_session_id_length_tells_the_variant():
    assert kv.variant_from_session_id("a" * 64) == "node"
    assert kv.variant_from_session_id("0f" * 16) == "java"
    assert kv.variant_from_session_id(None) is None and kv.variant_from_session_id("x") is None


def test_register_logs_in_only_when_it_answers_credentials():
    node = {"success": True, "token": "t.o.k", "sessionId": "a" * 64, "user": {"_id": ME}}
    java = {"success": True, "token": None, "sessionId": None, "user": {"_id": ME}}
    assert kv.auth_from_register(201, node) == ("t.o.k", "a" * 64)
    assert kv.auth_from_register(201, java) is None
    assert kv.auth_from_register(409, {"success": False, "message": V.R_EMAIL_TAKEN}) is None


# ------------------------------------------------------------------------------------ joins
def test_join_reply_forms():
    full_java = {"roomId": "r", "participants": [{"id": ME, "name": "a"}], "messages": []}
    full_node = {"roomId": "r", "participants": [{"_id": ME, "name": "a"}], "messages": [], "oldestTimestamp": None}
    without_me = {"roomId": "r", "participants": [{"_id": "other"}], "messages": []}
    assert kv.join_reply(full_java, ME) == kv.FULL
    assert kv.join_reply(full_node, ME) == kv.FULL
    assert kv.join_reply({"roomId": "r"}, ME) == kv.SHORT
    assert kv.join_reply(without_me, ME) == kv.NOT_LISTED


def test_short_join_counts_on_java_but_not_on_node():
    assert kv.join_counts(JAVA, kv.SHORT, known_member=False)
    assert kv.join_counts(JAVA, kv.NOT_LISTED, known_member=False)  # Java: any answer for the room
    assert not kv.join_counts(NODE, kv.SHORT, known_member=False)
    assert kv.join_counts(NODE, kv.SHORT, known_member=True)
    assert not kv.join_counts(NODE, kv.NOT_LISTED, known_member=True)
    assert kv.join_counts(NODE, kv.FULL, known_member=False)


def test_rules_of_the_two_variants_differ_where_the_facts_do():
    assert JAVA.acks and not NODE.acks
    assert JAVA.read_receipt_to_sender and not NODE.read_receipt_to_sender
    assert JAVA.leave_in_order and not NODE.leave_in_order
    assert NODE.register_logs_in and not JAVA.register_logs_in
    assert NODE.min_connect_timeout_s >= 15  # the 10 s duplicate-login hold


# ------------------------------------------------------------------------------- witnesses
def test_leave_notice_names_the_leaver_and_room():
    msg = {"_id": "x", "room": "r1", "content": "lk user 3 p9님이 퇴장하였습니다.", "type": "system"}
    assert kv.leave_notice(msg) == ("r1", "lk user 3 p9")
    assert kv.leave_notice(dict(msg, content="lk user 3 p9님이 입장하였습니다.")) is None
    assert kv.leave_notice(dict(msg, type="text")) is None  # a user typing the text is not a notice
    assert kv.leave_notice(["not", "a", "dict"]) is None


def test_read_receipt_key():
    assert kv.read_receipt_key({"userId": ME, "messageIds": ["a", "b"]}) == (ME, ("a", "b"))
    assert kv.read_receipt_key({"userId": ME}) is None
    assert kv.read_receipt_key(None) is None


def test_user_listed_in_a_rest_room():
    body = {"success": True, "data": {"_id": "r", "participants": [{"_id": ME, "name": "a", "email": "e"}]}}
    assert kv.user_listed(body, ME) is True
    assert kv.user_listed(body, "someone") is False
    assert kv.user_listed({"success": False, "message": "x"}, ME) is None


def test_fetch_pacing_only_on_node():
    assert kv.fetch_wait(JAVA, 10.0, 9.99) == 0.0
    assert kv.fetch_wait(NODE, 10.0, None) == 0.0
    assert kv.fetch_wait(NODE, 10.0, 9.9) == pytest.approx(0.25)
    assert kv.fetch_wait(NODE, 10.0, 9.0) == 0.0


# --------------------------------------------------------------------------- error shapes
def test_node_load_error_has_type_not_code():
    payload = {"type": "LOAD_ERROR", "message": V.E_ROOM_ACCESS}
    assert ktb.error_owner(payload) == {"fetchPreviousMessages"}
    err = ktb.classify("error", payload)
    assert isinstance(err, ktb.LoadError) and ktb.lost_room_access(err)


def test_java_load_error_with_code_still_classified():
    err = ktb.classify("error", {"code": "LOAD_ERROR", "message": "x"})
    assert isinstance(err, ktb.LoadError)


def test_node_stale_session_triggers_the_same_relogin_as_java():
    node = ktb.classify("error", {"code": "MESSAGE_ERROR", "message": V.E_SESSION})
    java = ktb.classify("error", {"code": "SESSION_EXPIRED", "message": V.E_SESSION})
    assert isinstance(node, ktb.SessionExpired) and isinstance(java, ktb.SessionExpired)
    other = ktb.classify("error", {"code": "MESSAGE_ERROR", "message": V.E_ROOM_ACCESS})
    assert type(other) is ktb.MessageError


def test_message_only_errors_are_attributed_by_text():
    assert ktb.error_owner({"message": V.E_READ}) == {"markMessagesAsRead"}
    assert ktb.error_owner({"message": V.E_MAP_KEY}) == {"messageReaction"}
    cast = 'Cast to ObjectId failed for value "x" (type string) at path "_id" for model "Message"'
    assert ktb.error_owner({"message": cast}) == {"messageReaction"}
    assert ktb.error_owner({"message": V.E_LEAVE}) == {"leaveRoom"}
    assert isinstance(ktb.classify("error", {"message": V.E_MSG_NOT_FOUND}), ktb.ServerError)


def test_ktb_2nd_follow_up_errors_fail_nothing():
    for text in V.BENIGN_ERRORS:
        assert ktb.error_owner({"message": text}) == frozenset()
        assert ktb.error_owner({"code": "MESSAGE_ERROR", "message": text}) == frozenset()
        assert not ktb.failure_events("joinRoom")["joinRoomError"]([{"message": text}])
        assert kv.ignorable("joinRoomError", {"message": text})
    assert ktb.failure_events("joinRoom")["joinRoomError"]([{"message": V.E_ROOM_NOT_FOUND}])


def test_node_extra_events_are_known():
    for ev in ("connect_success", "initialMessagesLoaded", "messageLoadError", "userLeft", "messageLoadStart"):
        assert ev in ktb.KNOWN_SERVER_EVENTS


# ------------------------------------------------------------------------- REST failures
class _Wrapped(Exception):
    def __init__(self, original):
        super().__init__("retries exceeded")
        self.original = original


def test_rest_failure_texts_say_what_happened():
    assert ktb.rest_failure_text(0, "", _Wrapped(socket.timeout("timed out")), 10) == \
        "no HTTP response: timed out after 10 s"
    assert ktb.rest_failure_text(0, "", ConnectionRefusedError(111, "Connection refused"), 5) == \
        "no HTTP response: connection refused"
    assert ktb.rest_failure_text(401, '{"success":false,"message":"인증 토큰이 없습니다."}', None, 5) == \
        "HTTP 401: 인증 토큰이 없습니다."
    assert ktb.rest_failure_text(401, "", None, 5) == "HTTP 401: (empty body)"  # Java's Spring filter
    node_429 = '{"success":false,"error":{"message":"너무 많은 요청","code":"TOO_MANY_REQUESTS"}}'
    assert ktb.rest_failure_text(429, node_429, None, 5) == "HTTP 429: 너무 많은 요청"
    assert "retries" not in ktb.rest_failure_text(0, "", _Wrapped(socket.timeout("timed out")), 3).lower()


def test_a_java_server_given_one_url_gets_the_socket_url_hint():
    """The Java server serves Socket.IO on a port of its own: given only --host, every connect goes to
    the REST port and fails (seen: 210 of 210 "server closed the websocket during handshake").
    The user is told before the first failure, with the fix."""
    hint = kv.one_url_java_hint(kv.JAVA, "http://127.0.0.1:5001", None)
    assert hint is not None
    assert "no --ktb-socket-url was given: Socket.IO is tried at http://127.0.0.1:5001" in hint
    assert hint.endswith("add --ktb-socket-url http://127.0.0.1:5002")
    assert kv.one_url_java_hint(kv.JAVA, "https://chat.example:8443/", None).endswith(
        "add --ktb-socket-url http://<host>:<Socket.IO port>")
    assert kv.one_url_java_hint(kv.JAVA, "http://h:5001", "http://h:5001/") is not None  # the same URL twice
    assert kv.one_url_java_hint(kv.JAVA, "http://h:5001", "http://h:5002") is None
    assert kv.one_url_java_hint(kv.NODE, "http://h:5000", None) is None
