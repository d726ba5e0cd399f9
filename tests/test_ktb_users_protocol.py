"""KTB rules (loadkit/protocols/ktb.py): nonces, answer matching, error ownership, classification."""

from __future__ import annotations

import random
import string

import pytest

from loadkit.protocols import ktb


def test_nonce_round_trip_and_grouping():
    c = ktb.make_content(12345, 4242, 7, 19, 1763724452123456)
    assert c == "lk 12.345~4.242~7~19~1.763.724.452.123.456"
    n = ktb.parse_content(c)
    assert n == ktb.Nonce(12345, 4242, 7, 19, 1763724452123456)
    assert n.sender == (12345, 4242, 7)
    assert ktb.make_content(1, 2, 3, 4, 5, ktb.content_prefix(1, 2, 3)) == ktb.make_content(1, 2, 3, 4, 5)
    assert ktb.parse_content(c + " zq9x") == n  # a forced banned word after the nonce keeps it parseable
    for bad in (None, 5, "", "hello", "lk 1~2~3", "lk a~b~c~d~e"):
        assert ktb.parse_content(bad) is None


def test_nonces_can_never_contain_a_banned_word():
    rnd = random.Random(7)
    alphabet = string.ascii_lowercase + string.digits
    # words as the real list draws them: 4-10 chars of [a-z0-9]; plus every 4-digit string
    words = {"".join(rnd.choice(alphabet) for _ in range(rnd.randint(4, 10))) for _ in range(3000)}
    words |= {f"{i:04d}" for i in range(10000)}
    for _ in range(300):
        c = ktb.make_content(rnd.randrange(2**24), rnd.randrange(2**22), rnd.randrange(10**6),
                             rnd.randrange(10**9), rnd.randrange(10**17))
        assert ktb.is_banned_word_safe(c) and ktb.max_alnum_run(c) <= 3, c
        low = c.lower()
        assert not any(w in low for w in words), c
    assert not ktb.is_banned_word_safe("lk 1~2 zq9x") and ktb.max_alnum_run("ab cdef") == 4


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
    assert ktb.match_join("r1")([{"roomId": "r1"}]) and not ktb.match_join("r1")([{"roomId": "r2"}])
    assert not ktb.match_join("r1")([]) and not ktb.match_join("r1")(["r1"])
    m = ktb.match_read("u1", ["a", "b"])
    assert m([{"userId": "u1", "messageIds": ["a", "b"]}])
    assert not m([{"userId": "u2", "messageIds": ["a", "b"]}]) and not m([{"userId": "u1", "messageIds": ["a"]}])
    add = ktb.match_reaction("m1", "👍", "u1", True)
    rem = ktb.match_reaction("m1", "👍", "u1", False)
    assert add([{"messageId": "m1", "reactions": {"👍": ["u1"]}}]) and not add([{"messageId": "m1", "reactions": {}}])
    assert rem([{"messageId": "m1", "reactions": {}}]) and not rem([{"messageId": "m1", "reactions": {"👍": ["u1"]}}])
    assert not add([{"messageId": "m2", "reactions": {"👍": ["u1"]}}])
    c = ktb.match_content("lk 1~2")
    assert c([{"content": "lk 1~2"}]) and not c([{"content": "lk 1~3"}]) and not c([None])


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


def test_option_problems_are_one_line_each():
    from types import SimpleNamespace

    from loadkit.users.ktb import option_problem

    good = SimpleNamespace(ktb_weights="", ktb_room_size=10, ktb_timeout=10.0, ktb_wait_min=1.0, ktb_wait_max=3.0)
    assert option_problem(good) is None
    assert option_problem(None) is None
    for change, says in ((dict(ktb_weights="chat=1"), "unknown task 'chat'"), (dict(ktb_room_size=0), "--ktb-room-size"),
                         (dict(ktb_timeout=0.0), "--ktb-timeout"), (dict(ktb_wait_min=-1.0), "--ktb-wait-min")):
        problem = option_problem(SimpleNamespace(**{**vars(good), **change}))
        assert problem and problem.startswith("loadkit: ") and says in problem and "\n" not in problem, problem


def test_bad_web_ui_values_stop_the_run_once_started():
    """Values typed into the web UI reach the users after `init`: the test_start check stops that
    run (on the master or a local runner, not on workers) instead of letting every user fail."""
    from types import SimpleNamespace

    import gevent

    from loadkit.users import ktb as ktb_users

    stopped = []
    runner = SimpleNamespace(stop=lambda: stopped.append(True))
    opts = SimpleNamespace(ktb_weights="nope=1", ktb_room_size=10, ktb_timeout=10.0, ktb_wait_min=1.0, ktb_wait_max=3.0)
    ktb_users._validate_web_ui_options(SimpleNamespace(runner=runner, parsed_options=opts))
    gevent.sleep(0.01)
    assert stopped == [True]
    opts.ktb_weights = ""
    ktb_users._validate_web_ui_options(SimpleNamespace(runner=runner, parsed_options=opts))
    gevent.sleep(0.01)
    assert stopped == [True]


def test_counters_fold_names_beyond_the_cap_into_other():
    from loadkit.metrics.counters import Counters

    c = Counters()
    c.max_keys = 3
    for name in ("a", "b", "c", "d", "e", "a"):
        c.bump(name)
    assert c == {"a": 2, "b": 1, "c": 1, "<other>": 2}
