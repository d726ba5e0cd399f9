"""The one error tree (``loadkit.protocols.errors``) and the result objects that carry timings.

Pure: no sockets, no servers. Every failure class a client can report is checked against the kind
it must be, its name is pinned (failure tables, CSVs and the Prometheus ``exception`` label show
``type(exc).__name__``: dashboards key on it), and a failure's timing is read from the request's
outcome, never from the exception.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import loadkit.protocols
from loadkit.clients import transport
from loadkit.protocols import chldo_turn as ch
from loadkit.protocols import correlation as sio
from loadkit.protocols import errors as E
from loadkit.protocols import ktb
from loadkit.protocols.socketio import Event, ProtocolError
from loadkit.protocols.wsframe import OP_BINARY, OP_CLOSE, OP_PING, WireError, client_frame

MS = 0.001

#: class -> the shared kinds it must be (and the per-protocol root it keeps)
KINDS: dict[type, tuple[type, ...]] = {
    WireError: (E.RemoteProtocolError,),
    ProtocolError: (E.RemoteProtocolError,),
    sio.SocketIOError: (E.LoadkitError,),
    sio.ConnectionFailed: (sio.SocketIOError, E.ConnectFailed),
    sio.ConnectRefused: (sio.SocketIOError, E.ConnectFailed, E.Rejected),
    sio.Disconnect: (sio.SocketIOError, E.ConnectionLost),
    sio.AnswerTimeout: (sio.SocketIOError, E.Timeout),
    sio.ErrorAnswer: (sio.SocketIOError, E.Rejected),
    sio.BadAnswer: (sio.SocketIOError, E.RemoteProtocolError),
    ktb.KtbError: (E.Rejected,),
    ktb.RateLimited: (ktb.KtbError, E.Rejected),
    ktb.MessageRejected: (ktb.KtbError, E.Rejected),
    ktb.SessionExpired: (ktb.KtbError, E.Rejected),
    ktb.LoadError: (ktb.KtbError, E.Rejected),
    ktb.MessageError: (ktb.KtbError, E.Rejected),
    ktb.JoinRoomError: (ktb.KtbError, E.Rejected),
    ktb.ServerError: (ktb.KtbError, E.Rejected),
    ktb.AuthFailed: (ktb.KtbError, E.Rejected),
    ch.ChldoError: (E.LoadkitError,),
    ch.ChldoValidationError: (ch.ChldoError, E.Rejected),
    ch.ChldoStreamError: (ch.ChldoError, E.Rejected),
    ch.ChldoTimeout: (ch.ChldoError, E.Timeout),
    ch.ChldoProtocolError: (ch.ChldoError, E.RemoteProtocolError),
    ch.ChldoConnectionLost: (ch.ChldoError, E.ConnectionLost),
    ch.ChldoConnectError: (ch.ChldoConnectionLost, E.ConnectFailed),
    transport.SendFailed: (E.ConnectionLost, ConnectionError),
    transport.UpgradeFailed: (E.ConnectFailed,),
}

SHARED = (E.Timeout, E.ConnectionLost, E.ConnectFailed, E.RemoteProtocolError, E.LocalProtocolError, E.Rejected)


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
def test_every_failure_class_is_the_kind_it_says(cls: type) -> None:
    assert issubclass(cls, E.LoadkitError)
    for kind in KINDS[cls]:
        assert issubclass(cls, kind), f"{cls.__name__} is not a {kind.__name__}"
    # and no kind it was not given (a timeout is never also a lost connection, ...)
    own = {k for k in SHARED if any(issubclass(given, k) for given in KINDS[cls])}
    assert {k for k in SHARED if issubclass(cls, k)} == own


def test_the_shared_kinds_hang_from_one_root_and_the_protocol_violations_say_who() -> None:
    for kind in SHARED + (E.ProtocolViolation,):
        assert issubclass(kind, E.LoadkitError)
    assert issubclass(E.RemoteProtocolError, E.ProtocolViolation)
    assert issubclass(E.LocalProtocolError, E.ProtocolViolation)
    assert not issubclass(E.RemoteProtocolError, E.LocalProtocolError)
    # the parallel names of the issue: one kind each
    assert issubclass(sio.AnswerTimeout, E.Timeout) and issubclass(ch.ChldoTimeout, E.Timeout)
    assert issubclass(sio.Disconnect, E.ConnectionLost) and issubclass(ch.ChldoConnectionLost, E.ConnectionLost)


def test_every_exception_class_of_the_cores_and_the_transport_is_in_the_tree_and_in_this_table() -> None:
    """A failure class added later without a place in the tree (or in ``KINDS``) fails here."""
    modules = [importlib.import_module(f"loadkit.protocols.{m.name}")
               for m in pkgutil.iter_modules(loadkit.protocols.__path__)] + [transport]
    found = {obj for mod in modules for obj in vars(mod).values()
             if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__}
    found -= {getattr(E, name) for name in E.__all__}
    assert found, "no exception classes found: the scan is broken"
    assert found == set(KINDS), f"not in KINDS: {found - set(KINDS)}; gone: {set(KINDS) - found}"


def test_the_class_names_failure_tables_and_dashboards_show_are_unchanged() -> None:
    assert sorted(c.__name__ for c in KINDS) == sorted([
        "WireError", "ProtocolError", "SocketIOError", "ConnectionFailed", "ConnectRefused", "Disconnect",
        "AnswerTimeout", "ErrorAnswer", "BadAnswer", "KtbError", "RateLimited", "MessageRejected",
        "SessionExpired", "LoadError", "MessageError", "JoinRoomError", "ServerError", "AuthFailed",
        "ChldoError", "ChldoValidationError", "ChldoStreamError", "ChldoTimeout", "ChldoProtocolError",
        "ChldoConnectionLost", "ChldoConnectError", "SendFailed", "UpgradeFailed"])


def test_a_rejection_carries_the_servers_code_and_message() -> None:
    e = sio.ErrorAnswer("error", [{"code": "MESSAGE_REJECTED", "message": "too long"}])
    assert (e.code, e.server_message) == ("MESSAGE_REJECTED", "too long")
    assert str(e) == "error: {'code': 'MESSAGE_REJECTED', 'message': 'too long'}"  # unchanged text
    e = sio.ErrorAnswer("joinRoomError", ["Room not found"])
    assert (e.code, e.server_message) == (None, "Room not found")
    r = sio.ConnectRefused("/", {"message": "Invalid token"})
    assert (r.code, r.server_message, str(r)) == (None, "Invalid token", "CONNECT_ERROR /: Invalid token")
    k = ktb.classify("error", {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down", "retryAfter": 2})
    assert isinstance(k, E.Rejected) and (k.code, k.server_message) == ("RATE_LIMIT_EXCEEDED", "slow down")
    v = ch.ChldoValidationError("api_key is required")
    assert (v.code, v.server_message, str(v)) == (None, "api_key is required", "api_key is required")


def test_a_control_frame_we_would_send_too_long_is_a_local_protocol_error() -> None:
    key = b"\x00\x00\x00\x00"
    assert len(client_frame(OP_PING, b"x" * 125, key)) == 2 + 4 + 125
    with pytest.raises(E.LocalProtocolError, match="at most 125"):
        client_frame(OP_CLOSE, b"x" * 126, key)
    assert len(client_frame(OP_BINARY, b"x" * 126, key)) == 4 + 4 + 126  # data frames may be long


# ----------------------------------------------------------------------- timings in the outcome
def ev(name: str, *args: object, nbytes: int = 10) -> Event:
    return Event("/", name, list(args), None, nbytes)


def test_every_outcome_carries_its_timing_and_size_whatever_resolved_it() -> None:
    reqs = sio.PendingRequests()
    ok = reqs.add(sio.Pending("echoed", None, {}, "/", t_sent=1 * MS))
    rejected = reqs.add(sio.Pending("joined", None, {"joinError": None}, "/", t_sent=2 * MS))
    bad = reqs.add(sio.Pending("listed", lambda args: args[0]["n"] == 1, {}, "/", t_sent=3 * MS))
    lost = reqs.add(sio.Pending("never", None, {}, "/", t_sent=4 * MS))
    assert reqs.event(ev("echoed", 1, nbytes=11), 6 * MS) is ok
    assert reqs.event(ev("joinError", "full", nbytes=22), 9 * MS) is rejected
    assert reqs.event(ev("listed", [1], nbytes=33), 13 * MS) is bad
    assert reqs.fail_all(sio.Disconnect("server closed"), now=20 * MS) == [lost]
    got = {name: (o.error is None, round(o.elapsed_ms, 6), o.nbytes)
           for name, o in [("ok", ok), ("rejected", rejected), ("bad", bad), ("lost", lost)]}
    assert got == {"ok": (True, 5.0, 11), "rejected": (False, 7.0, 22), "bad": (False, 10.0, 33),
                   "lost": (False, 16.0, 0)}
    assert ok.result() is ok.value and ok.value is not None and ok.value.elapsed_ms == pytest.approx(5.0)
    for o, cls in [(rejected, sio.ErrorAnswer), (bad, sio.BadAnswer), (lost, sio.Disconnect)]:
        with pytest.raises(cls):
            o.result()
        for attr in ("t_sent", "t_recv", "nbytes"):  # the exception is only the kind and the text
            assert not hasattr(o.error, attr)


def test_a_failure_nothing_on_the_wire_decided_has_no_read_time_until_the_shell_stamps_it() -> None:
    reqs = sio.PendingRequests()
    p = reqs.add(sio.Pending("x", None, {}, "/", t_sent=1 * MS))
    assert p.t_recv is None and not p.done
    reqs.fail_all(sio.Disconnect("client closed"))  # no time given: the waiter's shell stamps it
    assert p.done and p.t_recv is None and p.nbytes == 0
    assert p.fail(sio.AnswerTimeout("late"), 9 * MS) is False  # resolved once: the first outcome stays
    assert isinstance(p.error, sio.Disconnect)


def test_the_locust_client_reports_a_failure_with_the_outcomes_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user reads send → read from the outcome (the failure event arrived 7 ms after the
    send, whenever the user's greenlet got to report it), and reports the classified error."""
    from loadkit.users.socketio import LocustSocketIOClient

    fired: list[dict] = []

    class Events:
        def fire(self, **kw: object) -> None:
            fired.append(kw)

    class Classified(Exception):
        pass

    c = LocustSocketIOClient(Events(), "http://127.0.0.1:9", classify_error=lambda e: Classified(str(e)))
    o = sio.Pending("joined", None, {"joinError": None}, "/", t_sent=100 * MS)
    o.fail(sio.ErrorAnswer("joinError", ["full"]), 107 * MS, 42)
    monkeypatch.setattr(c.raw, "_exchange", lambda *a: o)
    with pytest.raises(Classified, match="full"):
        c.request("join", "r1", answer="joined", errors=("joinError",))
    ((kw),) = fired
    assert kw["name"] == "join" and kw["response_time"] == pytest.approx(7.0) and kw["response_length"] == 42
    assert isinstance(kw["exception"], Classified)

    fired.clear()
    ok = sio.Pending("joined", None, {}, "/", t_sent=200 * MS)
    ok.resolve(sio.Answer("joined", [{"room": "r1"}], 15, 200 * MS, 203 * MS))
    monkeypatch.setattr(c.raw, "_exchange", lambda *a: ok)
    assert c.request("join", "r1", answer="joined").data == {"room": "r1"}
    assert fired[0]["response_time"] == pytest.approx(3.0) and fired[0]["exception"] is None
