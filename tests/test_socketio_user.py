"""LocustSocketIOClient: exactly one request event per round trip, with honest times and failures."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from loadkit.clients.socketio import AnswerTimeout, ConnectRefused, ErrorAnswer  # noqa: E402
from loadkit.procs import free_port  # noqa: E402
from loadkit.users.socketio import LocustSocketIOClient  # noqa: E402

SERVER = str(Path(__file__).with_name("sio_test_server.py"))


class Recorder:
    def __init__(self):
        self.events = []

    def fire(self, **kw):
        self.events.append(kw)


@pytest.fixture
def server(spawn):
    port = free_port()
    spawn([sys.executable, SERVER, str(port)], port=port, name="sio")
    return f"http://127.0.0.1:{port}"


@pytest.mark.timeout(60)
def test_one_event_per_round_trip(server):
    rec = Recorder()
    c = LocustSocketIOClient(rec, server, request_type="ktb", auth={"token": "good"})
    c.connect()
    c.emit("echo", "fire-and-forget")  # no round trip: no event
    a = c.request("later", {"delay": 0.2, "event": "done", "data": "x"}, answer="done")
    c.call("ask", 1, 2)
    with pytest.raises(ErrorAnswer):
        c.request("joinRoom", "missing", answer="joinRoomSuccess", errors=["joinRoomError"])
    with pytest.raises(AnswerTimeout):
        c.request("later", {"delay": 5, "event": "x"}, answer="never", timeout=0.2, name="slow")
    c.close()
    names = [e["name"] for e in rec.events]
    assert names == ["connect", "later", "ask", "joinRoom", "slow"]
    assert all(e["request_type"] == "ktb" for e in rec.events)
    later = rec.events[1]
    assert later["exception"] is None and 200 <= later["response_time"] < 1000  # the server's 0.2 s delay
    assert later["response_length"] == a.nbytes > 0
    assert isinstance(rec.events[3]["exception"], ErrorAnswer) and rec.events[3]["response_length"] > 0
    assert isinstance(rec.events[4]["exception"], AnswerTimeout) and rec.events[4]["response_time"] >= 200


@pytest.mark.timeout(60)
def test_connect_failure_is_reported_then_raised(server):
    rec = Recorder()
    c = LocustSocketIOClient(rec, server, auth={"token": "bad"})
    with pytest.raises(ConnectRefused):
        c.connect()
    [e] = rec.events
    assert e["name"] == "connect" and isinstance(e["exception"], ConnectRefused) and "Invalid token" in str(e["exception"])


class _Cycle:
    def __init__(self):
        self.me = self


def test_gc_tuning_still_collects_cyclic_garbage_every_few_seconds(monkeypatch):
    """``_tune_gc`` makes Python's own full collections practically never happen; its collector
    greenlet must still free cyclic garbage (a soak grew a worker by 250 MB without it)."""
    import gc
    import weakref

    import gevent

    from loadkit.users import socketio as sio_user

    saved = gc.get_threshold()
    monkeypatch.setenv("LOADKIT_GC_EVERY", "0.05")
    monkeypatch.setattr(sio_user, "_COLLECTOR", [])
    gc.disable()  # only an explicit collection can free the cycle below
    try:
        sio_user._tune_gc()
        assert len(sio_user._COLLECTOR) == 1
        garbage = _Cycle()
        ref = weakref.ref(garbage)
        del garbage
        assert ref() is not None
        gevent.sleep(0.3)
        assert ref() is None
    finally:
        for g in sio_user._COLLECTOR:
            g.kill()
        gc.unfreeze()
        gc.set_threshold(*saved)
        gc.enable()


@pytest.mark.parametrize("value, seconds", [("", 10.0), ("2.5", 2.5), ("0", 0.0), ("-1", 10.0), ("nan", 10.0),
                                            ("abc", 10.0)])
def test_gc_every_option(monkeypatch, value, seconds):
    from loadkit.users.socketio import _gc_every

    monkeypatch.setenv("LOADKIT_GC_EVERY", value)
    assert _gc_every() == seconds
