"""The gevent Socket.IO client against a real python-socketio server (tests/sio_test_server.py)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402

from loadkit.clients.socketio import (  # noqa: E402
    AnswerTimeout,
    BadAnswer,
    ConnectionFailed,
    ConnectRefused,
    Disconnect,
    ErrorAnswer,
    SocketIOClient,
)
from loadkit.procs import free_port  # noqa: E402

SERVER = str(Path(__file__).with_name("sio_test_server.py"))


@pytest.fixture
def server(spawn):
    port = free_port()
    spawn([sys.executable, SERVER, str(port)], port=port, name="sio")
    return f"http://127.0.0.1:{port}"


def client(url, **kw):
    kw.setdefault("auth", {"token": "good"})
    return SocketIOClient(url, **kw)


def no_waiters(c: SocketIOClient) -> bool:
    return not c._requests.waiting and not c._requests.acks


@pytest.mark.timeout(60)
def test_request_answer_ack_binary_namespaces(server):
    c = client(server, namespaces=["/", "/admin"])
    c.connect()
    assert c.connected and c.sid
    a = c.request("echo", {"x": 1}, answer="echoed")
    assert a.event == "echoed" and a.data == {"x": 1} and a.nbytes > 0 and a.t_recv >= a.t_sent
    assert c.call("ask", 1, 2).args == [2, 1]
    a = c.request("joinRoom", "r1", answer="joinRoomSuccess", match=lambda args: args[0]["roomId"] == "r1",
                  errors=["joinRoomError"])
    assert a.data == {"roomId": "r1"}
    with pytest.raises(ErrorAnswer) as ei:
        c.request("joinRoom", "missing", answer="joinRoomSuccess", errors=["joinRoomError"])
    assert ei.value.event == "joinRoomError" and ei.value.payload["message"] == "채팅방을 찾을 수 없습니다."
    a = c.request("bin", b"\x00\x01abc", answer="binary")
    assert a.data == {"blob": b"\x00\x01abc", "n": 5}
    assert c.request("whoami", answer="whoami", namespace="/admin").data == "admin"
    assert no_waiters(c)
    c.close()
    assert not c.connected


@pytest.mark.timeout(60)
def test_match_skips_other_answers_and_handlers_see_everything(server):
    c = client(server)
    seen = []
    c.on("echoed", lambda *a: seen.append(a))
    c.connect()
    # a late "later" answer with the wrong payload arrives first and must not resolve the request
    c.emit("later", {"delay": 0.0, "event": "echoed", "data": {"n": 1}})
    a = c.request("later", {"delay": 0.2, "event": "echoed", "data": {"n": 2}}, answer="echoed",
                  match=lambda args: args[0]["n"] == 2)
    assert a.data == {"n": 2}
    assert [s[0]["n"] for s in seen] == [1, 2]
    c.close()


@pytest.mark.timeout(60)
def test_timeout_and_disconnect_never_leak_pending(server):
    c = client(server)
    c.connect()
    with pytest.raises(AnswerTimeout):
        c.request("later", {"delay": 2, "event": "x"}, answer="nothing", timeout=0.2)
    assert no_waiters(c)
    # pings every 1 s: the connection must survive several ping intervals (pongs answered)
    time.sleep(2.5)
    assert c.connected and c.request("echo", 1, answer="echoed").data == 1
    # a waiter pending when the server drops us fails with Disconnect, quickly
    reasons = []
    c.on_disconnect = reasons.append
    waiter = gevent.spawn(c.request, "later", {"delay": 5, "event": "y"}, answer="y", timeout=10)
    gevent.sleep(0.1)
    c.emit("kick")
    with pytest.raises(Disconnect):
        waiter.get(timeout=5)
    assert reasons and not c.connected and no_waiters(c)
    with pytest.raises(Disconnect):
        c.request("echo", 1, answer="echoed")


@pytest.mark.timeout(60)
def test_close_fails_pending_requests(server):
    c = client(server)
    c.connect()
    waiter = gevent.spawn(c.request, "later", {"delay": 5, "event": "y"}, answer="y", timeout=10)
    gevent.sleep(0.1)
    c.close()
    with pytest.raises(Disconnect, match="client closed"):
        waiter.get(timeout=5)
    assert no_waiters(c)


@pytest.mark.timeout(60)
def test_close_is_a_clean_socketio_disconnect_for_the_server(server):
    """close() sends Socket.IO DISCONNECT (and Engine.IO CLOSE) before the socket goes: the server
    sees "client disconnect", where a dropped socket would read as "transport close"."""
    c = client(server)
    c.connect()
    c.close()
    dropped = client(server)
    dropped.connect()
    dropped.ws.sock.shutdown(socket.SHUT_RDWR)  # no goodbye
    probe = client(server)
    probe.connect()
    deadline = time.monotonic() + 5
    while True:
        reasons = probe.request("disconnects", answer="disconnects").data
        if len(reasons) >= 2 or time.monotonic() > deadline:
            break
        gevent.sleep(0.05)
    assert reasons[:2] == ["client disconnect", "transport close"], reasons
    probe.close()


@pytest.mark.timeout(60)
def test_connect_error_is_surfaced(server):
    with pytest.raises(ConnectRefused) as ei:
        client(server, auth={"token": "bad"}).connect()
    assert "Invalid token" in str(ei.value)
    with pytest.raises(ConnectRefused, match="Authentication error"):
        client(server, auth={"token": "string"}).connect()
    with pytest.raises(ConnectionFailed):
        client(f"http://127.0.0.1:{free_port()}", connect_timeout=2).connect()


@pytest.mark.timeout(60)
def test_reconnect_with_backoff(server):
    c = client(server, reconnect=True, reconnect_delay=0.1, reconnect_attempts=5)
    reconnected = gevent.event.Event()
    c.on_reconnect = reconnected.set
    c.connect()
    first_sid = c.sid
    c.emit("kick")
    assert reconnected.wait(10), "did not reconnect"
    assert c.connected and c.sid != first_sid
    assert c.request("echo", "again", answer="echoed").data == "again"
    c.close()


@pytest.fixture
def tls_server(spawn, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    port = free_port()
    spawn([sys.executable, SERVER, str(port), str(cert), str(key)], port=port, name="sio-tls")
    return f"https://127.0.0.1:{port}"


@pytest.mark.timeout(60)
def test_wss_verifies_certificates_unless_opted_out(tls_server):
    with pytest.raises(ConnectionFailed, match="(?i)certificate"):
        client(tls_server).connect()
    c = client(tls_server, verify_tls=False)
    c.connect()
    assert c.url.startswith("wss://") and c.request("echo", "tls", answer="echoed").data == "tls"
    c.close()


@pytest.mark.timeout(60)
def test_reader_role_concurrent_waiters_idle_events_and_blocking_handlers(server):
    """No receive greenlet of its own: waiting greenlets read in turn, events arriving while nobody
    waits are still handled, and a handler that blocks does not lose or stall answers."""
    c = client(server)
    idle_seen = []
    c.on("idle_ev", idle_seen.append)
    c.connect()
    # unsolicited event while nobody waits: handled by the drain greenlet, which then exits
    c.emit("later", {"delay": 0.1, "event": "idle_ev", "data": 7})
    gevent.sleep(0.5)
    assert idle_seen == [7] and c._holder is None
    # several greenlets waiting at once on one connection, answers in reverse order: the reader
    # role passes from one to the next and every answer reaches its own request
    delays = [0.5, 0.4, 0.3, 0.2, 0.1]
    jobs = [gevent.spawn(c.request, "later", {"delay": d, "event": "done", "data": i}, answer="done",
                         match=lambda args, i=i: args[0] == i, timeout=10)
            for i, d in enumerate(delays)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert [j.value.data for j in jobs] == list(range(len(delays)))
    assert no_waiters(c) and c._holder is None and not c._role_queue
    # a handler that blocks inside the reading greenlet: the answer still arrives, in order
    slow = []
    c.on("echoed", lambda *a: (gevent.sleep(0.05), slow.append(a)))
    assert c.request("echo", "a", answer="echoed").data == "a"
    a, b = gevent.spawn(c.request, "echo", "b", answer="echoed", match=lambda args: args[0] == "b"), \
        gevent.spawn(c.request, "echo", "c", answer="echoed", match=lambda args: args[0] == "c")
    gevent.joinall([a, b], timeout=10, raise_error=True)
    assert a.value.data == "b" and b.value.data == "c"
    assert [s[0] for s in slow] == ["a", "b", "c"] and no_waiters(c)
    c.close()


@pytest.mark.timeout(60)
def test_events_nobody_takes_are_counted_as_unhandled(server):
    """An event is "unhandled" when no handler exists and no pending request took it (as its
    answer or failure): counted, reported to ``on_unhandled``, never fatal."""
    c = client(server)
    seen = []
    c.on_unhandled = lambda ev: seen.append(ev.name)
    c.on("handled", lambda *a: None)
    c.connect()
    assert c.request("later", {"delay": 0, "event": "mine", "data": 1}, answer="mine").data == 1
    c.emit("later", {"delay": 0, "event": "handled"})
    c.emit("later", {"delay": 0, "event": "stray", "data": 2})
    gevent.sleep(0.2)
    # a "mine" that the pending request's match rejects is not its answer: unhandled too
    c.emit("later", {"delay": 0.05, "event": "mine", "data": 4})
    assert c.request("later", {"delay": 0.3, "event": "mine", "data": 3}, answer="mine",
                     match=lambda args: args == [3]).data == 3
    assert seen == ["stray", "mine"] and c.unhandled_events == 2 and c.connected
    c.close()


@pytest.mark.timeout(60)
def test_unclaimed_handlers_see_only_what_no_request_took(server):
    """``on(..., claimed=False)``: called for the events no pending request took as its answer;
    such a handler also keeps those events from counting as unhandled."""
    c = client(server)
    every, unclaimed, unhandled = [], [], []
    c.on("mine", lambda d: every.append(d))
    c.on("mine", lambda d: unclaimed.append(d), claimed=False)
    c.on("other", lambda d: unclaimed.append(d), claimed=False)
    c.on_unhandled = lambda ev: unhandled.append(ev.name)
    c.connect()
    assert c.request("later", {"delay": 0, "event": "mine", "data": 1}, answer="mine").data == 1
    c.emit("later", {"delay": 0, "event": "mine", "data": 2})
    c.emit("later", {"delay": 0, "event": "other", "data": 3})
    deadline = time.monotonic() + 5
    while len(unclaimed) < 2 and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert every == [1, 2]
    assert sorted(unclaimed) == [2, 3]
    assert unhandled == [] and c.unhandled_events == 0
    c.close()


@pytest.mark.timeout(60)
def test_an_answer_the_matcher_cannot_read_fails_only_its_request(server):
    """A malformed answer (a list where the predicate expects a dict) is that request's
    ``BadAnswer``, with its timing; the connection and the next request are unaffected."""
    c = client(server)
    c.connect()
    with pytest.raises(BadAnswer) as ei:
        c.request("later", {"delay": 0, "event": "echoed", "data": [1, 2]}, answer="echoed",
                  match=lambda args: args[0]["n"] == 2)
    assert "malformed 'echoed'" in str(ei.value) and "TypeError" in str(ei.value)
    o = c.exchange("later", {"delay": 0, "event": "echoed", "data": [1, 2]}, answer="echoed",
                   match=lambda args: args[0]["n"] == 2)  # the same, as an outcome: timed like an answer
    assert isinstance(o.error, BadAnswer) and o.value is None and o.t_recv >= o.t_sent > 0 and o.nbytes > 0
    with pytest.raises(BadAnswer):
        c.request("joinRoom", "missing", answer="joinRoomSuccess",
                  errors={"joinRoomError": lambda args: args[0]["code"] == "X"})  # the payload has no code
    assert c.connected and no_waiters(c)
    assert c.request("echo", {"n": 3}, answer="echoed").data == {"n": 3}
    c.close()


@pytest.mark.timeout(60)
def test_a_server_that_stops_pinging_is_a_disconnect(spawn):
    """Half-open connection: the server process is frozen (SIGSTOP), so TCP stays up but no
    Engine.IO ping comes. After pingInterval + 2 x pingTimeout + 1 s (1 + 4 + 1 s here) the client
    declares the connection lost: the pending request fails with ``Disconnect`` and
    ``on_disconnect`` says why."""
    port = free_port()
    proc = spawn([sys.executable, SERVER, str(port)], port=port, name="sio")
    c = client(f"http://127.0.0.1:{port}")
    reasons = []
    c.on_disconnect = reasons.append
    c.connect()
    assert c.proto.ping_interval == 1 and c.proto.ping_timeout == 2
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(Disconnect) as ei:
            c.request("echo", 1, answer="echoed", timeout=30)
        waited = time.monotonic() - t0
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    assert "ping timeout" in str(ei.value) and reasons and "ping timeout" in reasons[0], (ei.value, reasons)
    assert waited < 15 and not c.connected and no_waiters(c)


@pytest.mark.timeout(60)
def test_connect_on_a_live_connection_replaces_it(server):
    c = client(server)
    c.connect()
    old = c.ws
    c.connect()
    assert c.ws is not old and old.sock is None  # the old socket was closed, not leaked
    assert c.connected and c.request("echo", 5, answer="echoed").data == 5
    c.close()


def test_reconnect_delay_grows_exponentially_is_capped_and_jittered():
    from loadkit.clients.socketio import reconnect_delay

    assert [reconnect_delay(a, 0.5, 10.0, 0.0, 0.3) for a in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert reconnect_delay(2, 0.5, 10.0, 0.5, 0.0) == pytest.approx(1.0)  # -50 %
    assert reconnect_delay(2, 0.5, 10.0, 0.5, 0.5) == pytest.approx(2.0)
    assert reconnect_delay(2, 0.5, 10.0, 0.5, 0.999999) == pytest.approx(3.0, rel=1e-5)  # +50 %
    assert reconnect_delay(0, 0.5, 10.0, 2.0, 0.0) == 0.0  # never negative


@pytest.mark.timeout(60)
def test_a_namespace_the_server_disconnects_fails_its_pending_requests_only(server):
    c = client(server, namespaces=["/", "/admin"])
    c.connect()
    waiter = gevent.spawn(c.request, "whoami", answer="never", namespace="/admin", timeout=20)
    gevent.sleep(0.1)
    t0 = time.monotonic()
    c.emit("leaveAdmin", namespace="/admin")
    with pytest.raises(Disconnect, match="namespace /admin"):
        waiter.get(timeout=10)
    assert time.monotonic() - t0 < 5  # not the 20 s timeout
    assert c.connected and no_waiters(c)
    assert c.request("echo", 7, answer="echoed").data == 7  # "/" lives on
    c.close()


@pytest.mark.timeout(60)
def test_connect_while_a_reconnect_is_pending_leaves_one_socket(server):
    """A reconnect loop waiting for its backoff must not open a second socket behind an explicit
    connect(): the old one would stay watched and readable, spinning the event loop."""
    c = client(server, reconnect=True, reconnect_delay=0.3, reconnect_jitter=0.0)
    c.connect()
    c.ws.sock.shutdown(socket.SHUT_RDWR)  # dropped: the reconnect loop starts and waits 0.3 s
    deadline = time.monotonic() + 5
    while c.connected and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert not c.connected and c._reconnector is not None and not c._reconnector.dead
    c.connect()  # the user's own connect wins
    mine = c.ws
    cpu0 = time.process_time()
    gevent.sleep(1.0)  # past the loop's backoff
    assert c.ws is mine and c.connected and (c._reconnector is None or c._reconnector.dead)
    assert time.process_time() - cpu0 < 0.5  # no orphaned readable socket spinning the hub
    assert c.request("echo", 1, answer="echoed").data == 1
    c.close()
