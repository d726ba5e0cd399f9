"""KTB rules (loadkit/protocols/ktb.py, ktb_answers.py, ktb_nonce.py): nonces, answer matching, error ownership,
classification."""

from __future__ import annotations

import random
import re
import string

import pytest

from loadkit.protocols import ktb, ktb_answers, ktb_nonce


def test_nonce_round_trip_and_grouping():
    c = ktb_nonce.make_content(12345, 4242, 7, 19, 1763724452123456)
    assert c == "lk 12.345~4.242~7~19~1.763.724.452.123.456"
    n = ktb_nonce.parse_content(c)
    assert n == ktb_nonce.Nonce(12345, 4242, 7, 19, 1763724452123456)
    assert n.sender == (12345, 4242, 7)
    assert ktb_nonce.make_content(1, 2, 3, 4, 5, ktb_nonce.content_prefix(1, 2, 3)) == ktb_nonce.make_content(1, 2, 3, 4, 5)
    assert ktb_nonce.parse_content(c + " zq9x") == n  # a forced banned word after the nonce keeps it parseable
    for bad in (None, 5, "", "hello", "lk 1~2~3", "lk a~b~c~d~e"):
        assert ktb_nonce.parse_content(bad) is None


def test_nonces_can_never_contain_a_banned_word():
    rnd = random.Random(7)
    alphabet = string.ascii_lowercase + string.digits
    # words as the real list draws them: 4-10 chars of [a-z0-9]; plus every 4-digit string
    words = {"".join(rnd.choice(alphabet) for _ in range(rnd.randint(4, 10))) for _ in range(3000)}
    words |= {f"{i:04d}" for i in range(10000)}
    for _ in range(300):
        c = ktb_nonce.make_content(rnd.randrange(2**24), rnd.randrange(2**22), rnd.randrange(10**6),
                             rnd.randrange(10**9), rnd.randrange(10**17))
        assert ktb_nonce.is_banned_word_safe(c) and ktb_nonce.max_alnum_run(c) <= 3, c
        low = c.lower()
        assert not any(w in low for w in words), c
    assert not ktb_nonce.is_banned_word_safe("lk 1~2 zq9x") and ktb_nonce.max_alnum_run("ab cdef") == 4


@pytest.mark.parametrize(
    "payload,owners",
    [
        ({"code": "RATE_LIMIT_EXCEEDED", "message": "x", "retryAfter": 3}, {"chatMessage"}),
        ({"code": "MESSAGE_REJECTED", "message": "x"}, {"chatMessage"}),
        ({"code": "SESSION_EXPIRED", "message": "x"}, {"chatMessage"}),
        ({"code": "LOAD_ERROR", "message": "x"}, {"fetchPreviousMessages"}),
        ({"message": "Room access denied"}, {"markMessagesAsRead"}),
        ({"message": "지원하지 않는 리액션 타입입니다."}, {"messageReaction"}),
        ({"message": "채팅방 퇴장 중 오류가 발생했습니다."}, {"leaveRoom"}),
        ({"message": "연결 처리 중 오류가 발생했습니다."}, set()),
    ],
)
def test_error_owner(payload, owners):
    assert set(ktb.error_owner(payload)) == owners


def test_unknown_error_may_belong_to_any_error_emitting_request():
    owners = ktb.error_owner({"message": "something new"})
    assert {"chatMessage", "fetchPreviousMessages", "markMessagesAsRead", "messageReaction", "leaveRoom"} <= owners
    pred = ktb.failure_events("chatMessage")["error"]
    assert pred([{"code": "MESSAGE_REJECTED", "message": "x"}]) and not pred([{"code": "LOAD_ERROR", "message": "x"}])
    # any joinRoomError fails the join, except ktb-2nd's follow-up to a successful one
    join_err = ktb.failure_events("joinRoom")["joinRoomError"]
    assert join_err([{"message": "anything"}]) and not join_err([{"message": "messages is not defined"}])


def test_classify_kinds_and_texts():
    e = ktb.classify("error", {"code": "RATE_LIMIT_EXCEEDED", "message": "limit", "retryAfter": 42})
    assert isinstance(e, ktb.RateLimited) and e.retry_after == 42 and str(e) == "RATE_LIMIT_EXCEEDED: limit"
    assert isinstance(ktb.classify("error", {"code": "MESSAGE_REJECTED", "message": "m"}), ktb.MessageRejected)
    assert isinstance(ktb.classify("error", {"code": "SESSION_EXPIRED", "message": "m"}), ktb.SessionExpired)
    assert isinstance(ktb.classify("error", {"code": "LOAD_ERROR", "message": "m"}), ktb.LoadError)
    assert isinstance(ktb.classify("error", {"code": "MESSAGE_ERROR", "message": "m"}), ktb.MessageError)
    e = ktb.classify("error", {"message": "Room access denied"})
    assert isinstance(e, ktb.ServerError) and str(e) == "ERROR: Room access denied"
    e = ktb.classify("joinRoomError", {"message": "채팅방을 찾을 수 없습니다."})
    assert isinstance(e, ktb.JoinRoomError) and "채팅방을 찾을 수 없습니다." in str(e)
    e = ktb.classify("duplicate_login", {"type": "new_login_attempt"})
    assert isinstance(e, ktb.SessionExpired) and str(e) == "duplicate_login: new_login_attempt"
    assert isinstance(ktb.classify("session_ended", {"reason": "duplicate_login", "message": "m"}), ktb.SessionExpired)
    assert isinstance(ktb.classify("error", "weird string"), ktb.ServerError)
    assert ktb.RateLimited("RATE_LIMIT_EXCEEDED", "x", {"retryAfter": "bad"}).retry_after == 1.0


def test_answer_matchers():
    assert ktb_answers.match_join("r1")([{"roomId": "r1"}]) and not ktb_answers.match_join("r1")([{"roomId": "r2"}])
    for not_an_object in ([], ["r1"]):  # no joinRoomSuccess can be anyone's answer: malformed
        with pytest.raises(ValueError, match="joinRoomSuccess payload is"):
            ktb_answers.match_join("r1")(not_an_object)
    m = ktb_answers.match_read("u1", ["a", "b"])
    assert m([{"userId": "u1", "messageIds": ["a", "b"]}])
    assert not m([{"userId": "u2", "messageIds": ["a", "b"]}]) and not m([{"userId": "u1", "messageIds": ["a"]}])
    add = ktb_answers.match_reaction("m1", "👍", "u1", True)
    rem = ktb_answers.match_reaction("m1", "👍", "u1", False)
    assert add([{"messageId": "m1", "reactions": {"👍": ["u1"]}}]) and not add([{"messageId": "m1", "reactions": {}}])
    assert rem([{"messageId": "m1", "reactions": {}}]) and not rem([{"messageId": "m1", "reactions": {"👍": ["u1"]}}])
    assert not add([{"messageId": "m2", "reactions": {"👍": ["u1"]}}])
    c = ktb_answers.match_content("lk 1~2")
    assert c([{"content": "lk 1~2"}]) and not c([{"content": "lk 1~3"}])
    with pytest.raises(ValueError, match="message payload is null"):
        c([None])


@pytest.mark.parametrize("payload", [
    {"code": ["RATE_LIMIT_EXCEEDED"], "message": "x"},
    {"code": {"a": 1}, "message": ["not", "text"]},
    {"code": 429, "message": None},
    {"message": {"nested": True}},
])
def test_error_payloads_of_the_wrong_types_still_classify(payload):
    """A server that puts a list, an object or a number where a code or message belongs gets a
    classified failure, not a TypeError from a set lookup inside the client's read loop."""
    owners = ktb.error_owner(payload)
    assert "chatMessage" in owners  # unrecognised: may belong to any emit that fails through `error`
    exc = ktb.classify("error", payload)
    assert isinstance(exc, ktb.KtbError) and type(exc) is ktb.ServerError
    assert ktb.error_predicate("chatMessage")([payload]) is True


def test_ktb_option_checks_say_which_option_and_what_is_wrong():
    """The --ktb-* checks (loadkit.options rules, shared by the command line and the web UI)."""
    import loadkit.users.ktb  # noqa: F401 - declares the rules
    from loadkit.options import problems

    assert problems({"ktb_weights": "", "ktb_room_size": "10", "ktb_timeout": "10", "ktb_wait_max": "3"}) == []
    for dest, value, says in (
        ("ktb_weights", "chat=1", "--ktb-weights: unknown task 'chat'"),
        ("ktb_weights", "chatMessage=-5", "--ktb-weights: chatMessage=-5 must be >= 0"),
        ("ktb_weights", "chatMessage=abc", "--ktb-weights: chatMessage='abc' is not a whole number"),
        ("ktb_room_size", "0", "--ktb-room-size: must be >= 1"),
        ("ktb_room_size", "abc", "--ktb-room-size: expected a whole number"),
        ("ktb_timeout", "nan", "--ktb-timeout: expected a finite number"),
        ("ktb_timeout", "0", "--ktb-timeout: must be > 0"),
        ("ktb_wait_max", "inf", "--ktb-wait-max: expected a finite number"),
        ("ktb_max_retry_after", "-5", "--ktb-max-retry-after: must be >= 0"),
        ("ktb_banned_every", "-1", "--ktb-banned-every: must be >= 0"),
        ("ktb_max_message_size", "100", "--ktb-max-message-size: must be >= 1024"),
        ("ktb_socket_url", "notaurl", "--ktb-socket-url: needs a URL starting with http:// or https://"),
        ("ktb_server", "nodejs", "--ktb-server: expected one of auto, java, node"),
    ):
        found = problems({dest: value})
        assert len(found) == 1 and found[0].startswith(says) and "\n" not in found[0], (dest, value, found)


def test_counters_fold_names_beyond_the_cap_into_other():
    from loadkit.metrics.counters import Counters

    c = Counters()
    c.max_keys = 3
    for name in ("a", "b", "c", "d", "e", "a"):
        c.bump(name)
    assert c == {"a": 2, "b": 1, "c": 1, "<other>": 2}


# ------------------------------------------------------------------ wrong-typed answers (issue #15)
@pytest.mark.parametrize("matcher,args,says", [
    (ktb_answers.match_join("r1"), [{"roomId": "r1", "messages": 5}], "joinRoomSuccess.messages is int, not a list"),
    (ktb_answers.match_join("r1"), [{"roomId": "r1", "participants": "x"}], "joinRoomSuccess.participants is str"),
    (ktb_answers.match_join("r1"), [{"roomId": "r1", "messages": [5]}], "joinRoomSuccess.messages[0] is int, not an object"),
    (ktb_answers.match_join("r1"), [{"roomId": "r1", "messages": [{"_id": 7}]}], "messages[0]._id is int, not a string"),
    (ktb_answers.match_join("r1"), [{"roomId": "r1", "participants": [None]}], "participants[0] is null"),
    (ktb_answers.match_join("r1"), [{"roomId": "r1", "hasMore": "yes"}], "joinRoomSuccess.hasMore is str, not a boolean"),
    (ktb_answers.match_join("r1"), ["ok"], "joinRoomSuccess payload is str"),
    (ktb_answers.match_previous(), [{"messages": None, "hasMore": False}], "previousMessagesLoaded.messages is null"),
    (ktb_answers.match_previous(), [{"messages": [], "hasMore": "yes"}], "previousMessagesLoaded.hasMore is str"),
    (ktb_answers.match_previous(), [[1, 2]], "previousMessagesLoaded payload is list"),
    (ktb_answers.match_read("u1", ["a"]), [{"userId": "u1", "messageIds": "all"}], "messagesRead.messageIds is str"),
    (ktb_answers.match_read("u1", ["a"]), [{"userId": 5, "messageIds": ["a"]}], "messagesRead.userId is int"),
    (ktb_answers.match_read("u1", ["a"]), [5], "messagesRead payload is int"),
    (ktb_answers.match_reaction("m1", "👍", "u1", True), [{"messageId": "m1", "reactions": [1]}], "reactions is list"),
    (ktb_answers.match_reaction("m1", "👍", "u1", True), [{"messageId": "m1", "reactions": {"👍": 5}}], "is int, not a list"),
    (ktb_answers.match_reaction("m1", "👍", "u1", True), [None], "messageReactionUpdate payload is null"),
    (ktb_answers.match_content("lk 1"), [{"content": "lk 1", "_id": {"$oid": 1}}], "message._id is dict, not a string"),
    (ktb_answers.match_content("lk 1"), [b"\x00binary"], "message payload is bytes"),
])
def test_a_wrong_typed_field_of_our_answer_is_named(matcher, args, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        matcher(args)


def test_well_formed_answers_of_both_variants_pass_and_others_answers_are_not_checked():
    join = ktb_answers.match_join("r1")
    assert join([{"roomId": "r1"}])  # Java's short form
    assert join([{"roomId": "r1", "participants": [{"_id": "u1", "name": "a"}], "hasMore": True, "activeStreams": [],
                  "messages": [{"_id": "m1", "content": "x", "type": "text", "sender": {"_id": "u1"}}]}])
    assert not join([{"roomId": "r2", "messages": 5}])  # another room's answer: not ours, not judged
    assert ktb_answers.match_previous()([{"messages": [{"_id": "m1"}], "hasMore": False, "oldestTimestamp": 1}])
    assert ktb_answers.match_read("u1", ["a"])([{"userId": "u1", "messageIds": ["a"]}])
    assert not ktb_answers.match_read("u1", ["a"])([{"userId": "u2", "messageIds": "all"}])  # another member's
    react = ktb_answers.match_reaction("m1", "👍", "u1", False)
    assert react([{"messageId": "m1", "reactions": {}}]) and react([{"messageId": "m1"}])
    assert not react([{"messageId": "m2", "reactions": [1]}])
    assert not ktb_answers.match_content("lk 1")([{"content": "lk 2", "_id": 5}])


def test_a_malformed_answer_fails_its_request_alone_as_bad_answer():
    """The client's pure core turns the matcher's ValueError into ``BadAnswer`` for the request
    (the connection and the other requests live on): joinRoomSuccess with ``messages: 5``."""
    from loadkit.protocols.correlation import BadAnswer, Pending, PendingRequests
    from loadkit.protocols.socketio import Event

    reqs = PendingRequests()
    join = reqs.add(Pending("joinRoomSuccess", ktb_answers.match_join("r1"), dict(ktb.failure_events("joinRoom")), "/", 1.0))
    chat = reqs.add(Pending("message", ktb_answers.match_content("lk 1"), dict(ktb.failure_events("chatMessage")), "/", 1.0))
    assert reqs.event(Event("/", "joinRoomSuccess", [{"roomId": "r1", "messages": 5}], None, 40), 2.0) is join
    assert isinstance(join.error, BadAnswer) and "joinRoomSuccess.messages is int, not a list" in str(join.error)
    assert not chat.done and reqs.event(Event("/", "message", [{"content": "lk 1", "_id": "m1"}], None, 9), 3.0) is chat
    assert chat.value is not None and chat.value.data["_id"] == "m1"


@pytest.mark.parametrize("body,says", [
    ('{"token":"t","sessionId":"s","user":"bob"}', "answer.user is str, not an object: 'bob'"),
    ('{"token":12345,"sessionId":"s"}', "answer.token is int, not a non-empty string"),
    ('{"token":"t","sessionId":""}', "answer.sessionId is str, not a non-empty string"),
    ('{"token":"t","sessionId":"s","user":{"_id":5}}', "answer.user._id is int, not a string"),
    ("<html><body>It works!</body></html>", "answer is not JSON (35 bytes: '<html><body>It works!</body></html>')"),
    ('{"token":"abc","sessio', "answer is not JSON"),
    ("[1,2]", "answer is list, not a JSON object"),
    ("", "answer is not JSON (0 bytes: '')"),
])
def test_a_login_answer_of_the_wrong_shape_is_named(body, says):
    with pytest.raises(ValueError, match=re.escape(says)) as err:
        ktb_answers.login_answer(body)
    assert "12345" not in str(err.value)  # a token's value is never shown, whatever its type


def test_rest_answers_of_the_right_shape():
    assert ktb_answers.login_answer('{"token":"t","sessionId":"s","user":{"_id":"u1"}}') == ("t", "s", "u1")
    assert ktb_answers.login_answer('{"token":"t","sessionId":"s","user":{"id":"u1"}}') == ("t", "s", "u1")  # Java
    assert ktb_answers.login_answer('{"token":"t","sessionId":"s"}') == ("t", "s", None)
    assert ktb_answers.register_answer(201, '{"success":true,"user":{"_id":"u1"}}') == ({"success": True,
                                                                                  "user": {"_id": "u1"}}, "u1")
    assert ktb_answers.room_answer('{"success":true,"data":{"_id":"r1"}}') == "r1"
    with pytest.raises(ValueError, match=re.escape("answer.data._id is int, not a non-empty string: 5")):
        ktb_answers.room_answer('{"data":{"_id":5}}')
    with pytest.raises(ValueError, match="answer.user is list"):
        ktb_answers.register_answer(201, '{"user":[]}')
