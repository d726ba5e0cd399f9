"""KtbChatUser reacts to server-side state changes like a real client (in-process, real server)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402
from locust import events  # noqa: E402
from locust.argument_parser import parse_options  # noqa: E402
from locust.env import Environment  # noqa: E402

from loadkit.procs import free_port, loadkit_argv  # noqa: E402
from loadkit.protocols import ktb  # noqa: E402
from loadkit.protocols.socketio import Event  # noqa: E402
from loadkit.users.ktb import COUNTERS, KtbChatUser  # noqa: E402


class ReactingUser(KtbChatUser):
    pass


def start_ktb(spawn, *extra: str) -> str:
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--host", "127.0.0.1", "--port", str(port), "--rest-port", str(port), *extra),
          port=port, name="ktb")
    return f"http://127.0.0.1:{port}"


def make_env(url: str, *options: str, user_class=ReactingUser) -> Environment:
    opts = parse_options(["--host", url, "--ktb-wait-min", "0", "--ktb-wait-max", "0", *options])
    user_class.host = url  # what Locust does for --host when it starts users
    return Environment(user_classes=[user_class], events=events, host=url, parsed_options=opts)


@pytest.fixture
def seen():
    """Every ktb request event fired while the test runs: [(name, exception)]."""
    got: list[tuple[str, object]] = []

    def record(request_type, name, exception=None, **_kw):
        if request_type in ("ktb", "ktb-phase"):  # phase rows: loadkit metrics with --loadkit-phase-rows on
            got.append((name, exception))

    events.request.add_listener(record)
    yield got
    events.request.remove_listener(record)


def counters_delta(before: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in COUNTERS.items() if v != before.get(k, 0)}


@pytest.mark.timeout(60)
def test_user_joins_the_room_again_after_the_server_dropped_it(spawn, seen):
    url = start_ktb(spawn)
    env = make_env(url, "--ktb-room-size", "1", "--ktb-delivery", "off")
    user = ReactingUser(env)
    try:
        user.on_start()
        user.send_chat()
        # the server drops this user from the room behind the user's back (what the late
        # disconnect of an older socket of the same account does, facts §4.5)
        user.sio.raw.call("leaveRoom", user.room_id, timeout=5)
        user.send_chat()  # refused: no access to the room
        assert user.need_join and not user.need_session
        user.send_chat()  # joins again first, then the message goes through
        user.send_chat()
    finally:
        user.on_stop()
    names = [n for n, _ in seen]
    assert names == ["connect", "joinRoom", "chatMessage", "chatMessage", "joinRoom", "chatMessage", "chatMessage"], seen
    refused = seen[3][1]
    assert isinstance(refused, ktb.MessageError) and ktb.lost_room_access(refused), refused
    assert all(exc is None for i, (_, exc) in enumerate(seen) if i != 3), seen
    assert not user.need_join


@pytest.mark.timeout(60)
def test_a_user_alone_in_its_room_marks_and_reacts_to_its_own_messages(spawn, seen):
    """In rooms of 1 the only messages are the user's own echoes, taken by its chatMessage
    requests (the ``message`` handler never sees them): their ids must still feed
    markMessagesAsRead and messageReaction."""
    url = start_ktb(spawn)
    env = make_env(url, "--ktb-room-size", "1")
    user = ReactingUser(env)
    try:
        user.on_start()
        own = [user.chat_once().data["_id"] for _ in range(2)]
        assert list(user.recent_ids)[-2:] == own
        user.mark_read()
        user.react()
    finally:
        user.on_stop()
    assert [n for n, _ in seen] == ["connect", "joinRoom", "chatMessage", "chatMessage", "markMessagesAsRead",
                                    "messageReaction", "messageReaction"], seen
    assert all(exc is None for _, exc in seen), seen


class PauseRecordingUser(KtbChatUser):
    pauses: list[float] = []

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)


@pytest.mark.timeout(60)
def test_rate_limit_is_its_own_failure_and_pauses_retry_after(spawn, seen):
    url = start_ktb(spawn, "--rate-limit", "2")
    env = make_env(url, "--ktb-room-size", "1", "--ktb-max-retry-after", "7", user_class=PauseRecordingUser)
    user = PauseRecordingUser(env)
    try:
        user.on_start()
        for _ in range(3):
            user.send_chat()
    finally:
        user.on_stop()
    chats = [exc for name, exc in seen if name == "chatMessage"]
    assert chats[:2] == [None, None], seen
    limited = chats[2]
    assert isinstance(limited, ktb.RateLimited) and limited.code == "RATE_LIMIT_EXCEEDED", limited
    assert 0 < limited.retry_after <= 60
    assert user.pauses == [min(7.0, limited.retry_after)]


@pytest.mark.timeout(60)
def test_second_login_expires_the_session_once_then_the_user_logs_in_again(spawn, seen):
    """duplicate_login, session_ended (0.3 s later) and SESSION_EXPIRED on chatMessage are one lost
    session: one ``session`` failure, each signal counted, and the next task logs in again."""
    url = start_ktb(spawn, "--duplicate-login-delay", "0.3")
    env = make_env(url, "--ktb-room-size", "1", "--ktb-delivery", "off")
    before = dict(COUNTERS)
    first, second = ReactingUser(env), ReactingUser(env)
    second.email = first.email  # the same account, as a second device would use it
    try:
        first.on_start()
        second.on_start()  # logs in (invalidating first's session) and connects a second socket
        deadline = time.monotonic() + 5
        while counters_delta(before).get("session_ended", 0) < 1 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        assert first.need_session
        with pytest.raises(ktb.SessionExpired) as ei:
            first.chat_once()  # the old socket still works, the session behind it does not
        assert ei.value.code == "SESSION_EXPIRED"
        second.on_stop()  # the other device goes away (so the re-login below kicks nobody out)
        first.send_chat()  # logs in again, connects, joins, sends
    finally:
        first.on_stop()
        second.on_stop()
    delta = counters_delta(before)
    assert delta.get("duplicate_login") == 1 and delta.get("session_ended") == 1, delta
    # one lost session, counted once by its first signal; not a request event (no request failed)
    assert delta.get("session_lost:SessionExpired") == 1, delta
    assert "session" not in [name for name, _ in seen], seen
    assert seen[-1] == ("chatMessage", None) and seen[-2] == ("joinRoom", None), seen
    assert not first.need_session


@pytest.mark.timeout(60)
def test_a_lost_connection_makes_the_user_log_in_and_connect_again(spawn, seen):
    url = start_ktb(spawn)
    env = make_env(url, "--ktb-room-size", "1")
    user = ReactingUser(env)
    before = dict(COUNTERS)
    try:
        user.on_start()
        token = user.token
        user.sio.raw.ws.sock.shutdown(socket.SHUT_RDWR)  # the network drops the connection
        deadline = time.monotonic() + 5
        while not user.need_session and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert user.need_session
        user.send_chat()
        assert user.token and user.token != token  # a fresh login
    finally:
        user.on_stop()
    names = [n for n, _ in seen]
    assert names == ["connect", "joinRoom", "connect", "joinRoom", "chatMessage"], seen
    assert counters_delta(before).get("session_lost:Disconnect") == 1, counters_delta(before)
    assert all(exc is None for n, exc in seen), seen


@pytest.mark.timeout(60)
def test_unknown_and_unclaimed_events_are_counted_never_fatal(spawn, seen):
    url = start_ktb(spawn)
    env = make_env(url, "--ktb-room-size", "1")
    user = ReactingUser(env)
    before = dict(COUNTERS)
    try:
        user.on_start()
        raw = user.sio.raw
        raw._dispatch(Event("/", "brandNewFeature", [{"x": 1}], None, 20), 0.0)
        raw._dispatch(Event("/", "error", [{"message": "late"}], None, 20), 0.0)  # nobody waits for it
        raw._dispatch(Event("/", "participantsUpdate", [[]], None, 20), 0.0)  # known: no reaction
        user.send_chat()
    finally:
        user.on_stop()
    delta = counters_delta(before)
    assert delta.get("unknown_event:brandNewFeature") == 1 and delta.get("unclaimed_event:error") == 1, delta
    assert not any(k.startswith("unknown_event:participantsUpdate") for k in delta), delta
    assert seen[-1] == ("chatMessage", None) and all(exc is None for _, exc in seen), seen


@pytest.mark.timeout(60)
def test_leave_ack_off_sends_leave_room_untimed(spawn, seen):
    url = start_ktb(spawn)
    env = make_env(url, "--ktb-room-size", "1", "--ktb-leave-ack", "off")
    user = ReactingUser(env)
    try:
        user.on_start()
        user.rejoin()
        user.send_chat()
    finally:
        user.on_stop()
    assert [n for n, _ in seen] == ["connect", "joinRoom", "joinRoom", "chatMessage"], seen
    assert all(exc is None for _, exc in seen), seen


@pytest.mark.timeout(60)
def test_rest_calls_time_out_after_the_option_and_say_so():
    """A server that accepts and never answers: register and login each fail once after
    --ktb-rest-timeout with "timed out after 0.5 s" (not a library default, not "retries
    exceeded"); the login is still tried, since the register may have reached the server."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []
    acceptor = gevent.spawn(lambda: [held.append(srv.accept()) for _ in range(16)])
    url = f"http://127.0.0.1:{srv.getsockname()[1]}"
    rest: list[tuple[str, float, object]] = []

    def record(request_type, name, response_time, exception=None, **_kw):
        if request_type in ("POST", "GET"):
            rest.append((name, response_time, exception))

    events.request.add_listener(record)
    try:
        env = make_env(url, "--ktb-rest-timeout", "0.5", "--ktb-timeout", "5", "--ktb-server", "java")
        user = ReactingUser(env)
        with pytest.raises(ktb.AuthFailed):
            user.login()
    finally:
        events.request.remove_listener(record)
        acceptor.kill()
        srv.close()
    assert [n for n, _, _ in rest] == ["/api/auth/register", "/api/auth/login"], rest
    for _, ms, exc in rest:
        assert "no HTTP response: timed out after 0.5 s" in str(exc) and "etries" not in str(exc), exc
        assert 400 <= ms < 3000, ms


def start_node(spawn, *extra: str) -> str:
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--variant", "node", "--host", "127.0.0.1", "--port", str(port), *extra),
          port=port, name="ktb-node")
    return f"http://127.0.0.1:{port}"


@pytest.mark.timeout(60)
def test_node_fire_and_forget_operations_are_counted_and_timed_at_a_witness(spawn, seen):
    url = start_node(spawn)
    # the witness figures are loadkit metrics; phase rows also fire them as (ktb-phase) request events
    env = make_env(url, "--ktb-room-size", "2", "--ktb-delivery", "off", "--loadkit-phase-rows", "on")
    before = dict(COUNTERS)
    a = ReactingUser(env)
    if a.user_no % 2:  # rooms group --ktb-room-size consecutive users of the process: start a pair
        a = ReactingUser(env)
    b = ReactingUser(env)
    try:
        a.on_start()
        b.on_start()
        assert a.room_id == b.room_id
        assert a.rules.name == "node" and a.sio.raw.connect_timeout >= 15
        a.send_chat()
        a.mark_read()  # nothing answers a; b sees the receipt
        a.rejoin()  # nothing answers a; b sees the leave, then a joins again (full, listing a)
        gevent.sleep(0.2)
        a.send_chat()
    finally:
        a.on_stop()
        b.on_stop()
    names = [n for n, _ in seen]
    assert "markMessagesAsRead" not in names and "leaveRoom" not in names, seen
    assert names.count("read_receipt") == 1 and names.count("leave_seen") == 1, seen
    assert names.count("joinRoom") == 3 and seen[-1] == ("chatMessage", None), seen
    assert all(exc is None for _, exc in seen), seen
    delta = counters_delta(before)
    assert delta.get("emitted:markMessagesAsRead") == 1 and delta.get("emitted:leaveRoom") == 1, delta
    assert "join_raced" not in delta and "leave_unconfirmed" not in delta, delta


@pytest.mark.timeout(60)
def test_node_rejoin_alone_in_the_room_waits_for_rest_to_show_the_leave(spawn, seen):
    """No witness in a room of one: the leave is confirmed over GET /api/rooms/:id before the
    join, so the join is never the short "already in room" answer."""
    url = start_node(spawn, "--db-latency-ms", "30")  # a slow leave: an unconfirmed join would overtake it
    env = make_env(url, "--ktb-room-size", "1")
    before = dict(COUNTERS)
    user = ReactingUser(env)
    try:
        user.on_start()
        for _ in range(2):
            user.rejoin()
            user.send_chat()
    finally:
        user.on_stop()
    assert [n for n, _ in seen] == ["connect", "joinRoom", "joinRoom", "chatMessage", "joinRoom", "chatMessage"], seen
    assert all(exc is None for _, exc in seen), seen
    delta = counters_delta(before)
    assert "join_raced" not in delta and delta.get("emitted:leaveRoom") == 2, delta


@pytest.mark.timeout(60)
def test_a_register_that_timed_out_but_succeeded_is_followed_by_a_login_that_works(spawn):
    """The register reaches the server (the account is made) but its answer comes after
    --ktb-rest-timeout: the register is a failure of its own, and the user logs in anyway."""
    import http.server
    import threading
    import urllib.request

    backend = start_ktb(spawn)  # the Java reference server (REST on its own port)

    class SlowRegisterProxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            req = urllib.request.Request(backend + self.path, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    status, answer = r.status, r.read()
            except urllib.error.HTTPError as exc:
                status, answer = exc.code, exc.read()
            if self.path == "/api/auth/register":
                time.sleep(1.5)  # the account exists now; the answer is late
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting: the point of the test

        def log_message(self, *_a):
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowRegisterProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    rest: list[tuple[str, object]] = []

    def record(request_type, name, exception=None, **_kw):
        if request_type == "POST":
            rest.append((name, exception))

    events.request.add_listener(record)
    try:
        env = make_env(f"http://127.0.0.1:{proxy.server_address[1]}", "--ktb-rest-timeout", "0.5",
                       "--ktb-server", "java")
        user = ReactingUser(env)
        user.login()
    finally:
        events.request.remove_listener(record)
        proxy.shutdown()
    assert [name for name, _ in rest] == ["/api/auth/register", "/api/auth/login"], rest
    assert "timed out after 0.5 s" in str(rest[0][1]) and rest[1][1] is None, rest
    assert user.token and user.session_id
