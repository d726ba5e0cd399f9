"""The Socket.IO client's decisions without I/O: which event or ack answers which request, the
CONNECT handshake, reconnect backoff. Literal event sequences; times in milliseconds (as seconds)."""

from __future__ import annotations

import pytest

from loadkit.protocols.correlation import (
    Answer,
    Backoff,
    BadAnswer,
    ConnectRefused,
    Disconnect,
    ErrorAnswer,
    Handshake,
    Pending,
    PendingRequests,
    reconnect_delay,
)
from loadkit.protocols.socketio import Ack, ConnectError, Connected, EioOpen, Event

MS = 0.001


def ev(name: str, *args, ns: str = "/", nbytes: int = 10) -> Event:
    return Event(ns, name, list(args), None, nbytes)


def room_is(room: str):
    return lambda args: args[0]["roomId"] == room


def test_an_answer_completes_its_request_with_the_times_it_was_sent_and_read():
    reqs = PendingRequests()
    p = reqs.add(Pending("joinRoomSuccess", room_is("r1"), {"joinRoomError": None}, "/", t_sent=100 * MS))
    assert reqs.event(ev("message", {"roomId": "r1"}), 101 * MS) is None  # nobody's answer
    assert reqs.event(ev("joinRoomSuccess", {"roomId": "r2"}), 102 * MS) is None  # predicate says no
    assert not p.done
    assert reqs.event(ev("joinRoomSuccess", {"roomId": "r1"}, nbytes=33), 107 * MS) is p
    assert p.done and p.error is None
    a = p.value
    assert isinstance(a, Answer)
    assert (a.event, a.data, a.nbytes) == ("joinRoomSuccess", {"roomId": "r1"}, 33)
    assert a.elapsed_ms == pytest.approx(7.0)
    assert len(reqs) == 0
    # a second identical answer finds nobody waiting
    assert reqs.event(ev("joinRoomSuccess", {"roomId": "r1"}), 108 * MS) is None


def test_the_first_request_in_send_order_claims_an_event_and_namespaces_are_kept_apart():
    reqs = PendingRequests()
    admin = reqs.add(Pending("echoed", None, {}, "/admin", t_sent=0.0))
    first = reqs.add(Pending("echoed", None, {}, "/", t_sent=1 * MS))
    second = reqs.add(Pending("echoed", None, {}, "/", t_sent=2 * MS))
    assert reqs.event(ev("echoed", 1), 5 * MS) is first
    assert reqs.event(ev("echoed", 2), 6 * MS) is second
    assert not admin.done
    assert reqs.event(ev("echoed", 3, ns="/admin"), 9 * MS) is admin
    assert admin.value.elapsed_ms == pytest.approx(9.0)


def test_a_failure_event_fails_its_request_with_the_servers_payload_and_times():
    reqs = PendingRequests()
    p = reqs.add(Pending("joinRoomSuccess", None, {"joinRoomError": room_is("r1")}, "/", t_sent=10 * MS))
    assert reqs.event(ev("joinRoomError", {"roomId": "r9", "message": "no"}), 11 * MS) is None  # not ours
    assert reqs.event(ev("joinRoomError", {"roomId": "r1", "message": "full"}, nbytes=40), 15 * MS) is p
    assert isinstance(p.error, ErrorAnswer) and p.value is None
    assert p.error.payload == {"roomId": "r1", "message": "full"}
    assert (p.t_sent, p.t_recv, p.nbytes) == (10 * MS, 15 * MS, 40)  # the outcome's, not the exception's
    assert p.elapsed_ms == pytest.approx(5.0)
    assert not hasattr(p.error, "t_sent") and not hasattr(p.error, "t_recv")
    assert "joinRoomError" in str(p.error)


def test_a_payload_the_predicate_cannot_read_fails_only_that_request():
    reqs = PendingRequests()
    p = reqs.add(Pending("joinRoomSuccess", room_is("r1"), {}, "/", t_sent=0.0))
    other = reqs.add(Pending("echoed", None, {}, "/", t_sent=0.0))
    assert reqs.event(ev("joinRoomSuccess", ["not", "a", "dict"]), 3 * MS) is p
    assert isinstance(p.error, BadAnswer) and "malformed 'joinRoomSuccess'" in str(p.error)
    assert (p.t_recv, p.nbytes) == (3 * MS, 10)
    assert not other.done and reqs.waiting == [other]


def test_acks_answer_by_id_and_failure_events_can_still_come_first():
    reqs = PendingRequests()
    plain = reqs.add(Pending(None, None, {}, "/", t_sent=0.0), ack_id=1)
    guarded = reqs.add(Pending(None, None, {"error": None}, "/", t_sent=0.0), ack_id=2)
    assert reqs.waiting == [guarded]  # only a request with failure events listens to events
    assert reqs.ack(Ack("/", 7, [1], 5), 2 * MS) is None  # unknown id
    assert reqs.ack(Ack("/", 1, ["ok"], 5), 4 * MS) is plain
    assert plain.value.event == "ack" and plain.value.args == ["ok"] and plain.value.elapsed_ms == pytest.approx(4)
    assert reqs.event(ev("error", "denied"), 5 * MS) is guarded
    assert isinstance(guarded.error, ErrorAnswer)
    assert reqs.ack(Ack("/", 2, ["late"], 5), 6 * MS) is None  # failed already: the late ack changes nothing
    assert guarded.value is None and len(reqs) == 0


def test_fail_all_and_a_namespace_disconnect_fail_exactly_the_right_requests():
    reqs = PendingRequests()
    a = reqs.add(Pending("x", None, {}, "/"))
    b = reqs.add(Pending(None, None, {"e": None}, "/admin"), ack_id=1)
    c = reqs.add(Pending(None, None, {}, "/"), ack_id=2)
    failed = reqs.fail_all(Disconnect("server disconnected namespace /admin"), "/admin")
    assert failed == [b] and isinstance(b.error, Disconnect)
    assert not a.done and not c.done and len(reqs) == 2
    failed = reqs.fail_all(Disconnect("client closed"))
    assert set(map(id, failed)) == {id(a), id(c)} and len(reqs) == 0
    assert str(a.error) == "client closed"
    assert reqs.fail_all(Disconnect("again")) == []  # nothing is failed twice


def test_forget_drops_a_request_its_caller_gave_up_on():
    reqs = PendingRequests()
    p = reqs.add(Pending(None, None, {"e": None}, "/"), ack_id=3)
    reqs.forget(p, 3)
    assert len(reqs) == 0
    assert reqs.ack(Ack("/", 3, [], 1), 0.0) is None and reqs.event(ev("e"), 0.0) is None


def test_handshake_connects_every_namespace_after_open_and_ends_when_all_are_acked():
    hs = Handshake(["/", "/admin"])
    assert hs.on_event(ev("early", 1)) == [] and not hs.done  # events before the acks are not its business
    assert hs.on_event(EioOpen("sid1", 25.0, 20.0, 1000, [])) == ["/", "/admin"]
    assert hs.on_event(EioOpen("sid1", 25.0, 20.0, 1000, [])) == []  # a second OPEN connects nothing twice
    assert hs.on_event(Connected("/", "abc")) == [] and not hs.done
    assert hs.on_event(Connected("/admin", "def")) == [] and hs.done
    assert hs.sid == "abc"


def test_handshake_refused_names_the_namespace_and_the_servers_message():
    hs = Handshake(["/"])
    hs.on_event(EioOpen("sid1", 25.0, 20.0, 1000, []))
    with pytest.raises(ConnectRefused, match="CONNECT_ERROR /: Authentication error"):
        hs.on_event(ConnectError("/", {"message": "Authentication error"}))
    assert not hs.done


def test_handshake_is_not_done_before_open_even_if_an_ack_came_first():
    hs = Handshake(["/"])
    hs.on_event(Connected("/", "abc"))
    assert not hs.done
    assert hs.on_event(EioOpen("s", 25.0, 20.0, 1000, [])) == ["/"]
    assert hs.done


def test_reconnect_delays_in_ms_double_cap_and_spread():
    ms = [round(reconnect_delay(a, 0.5, 10.0, 0.0, 0.3) * 1000) for a in range(7)]
    assert ms == [500, 1000, 2000, 4000, 8000, 10000, 10000]
    assert reconnect_delay(2, 0.5, 10.0, 0.5, 0.0) * 1000 == pytest.approx(1000)  # -50 %
    assert reconnect_delay(2, 0.5, 10.0, 0.5, 0.999999) * 1000 == pytest.approx(3000, rel=1e-5)  # +50 %
    assert reconnect_delay(0, 0.5, 10.0, 2.0, 0.0) == 0.0  # never negative


def test_backoff_gives_up_after_its_attempts_and_starts_over_after_reset():
    b = Backoff(0.1, 0.25, 0.0, attempts=3)
    assert [b.next_delay(0.5) for _ in range(4)] == [0.1, 0.2, 0.25, None]
    b.reset()
    assert b.next_delay(0.5) == 0.1
    forever = Backoff(0.1, 0.25, 0.0, attempts=None)
    assert [forever.next_delay(0.5) for _ in range(50)][-1] == 0.25
