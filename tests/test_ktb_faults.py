"""Fault injection in the KTB reference server, both variants (issue #15 item 5):
``loadkit serve ktb --fault drop=P,error=P,stall=P --fault-seed N`` (docs/ktb-server.md#fault-injection)."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402
import requests  # noqa: E402
from locust import events  # noqa: E402
from locust.argument_parser import parse_options  # noqa: E402
from locust.env import Environment  # noqa: E402

from loadkit import cli  # noqa: E402
from loadkit.clients.socketio import SocketIOClient  # noqa: E402
from loadkit.procs import free_port, loadkit_argv  # noqa: E402
from loadkit.protocols import ktb  # noqa: E402
from loadkit.protocols.correlation import AnswerTimeout, ConnectionFailed, ConnectRefused, Disconnect  # noqa: E402
from loadkit.targets.faults import FaultDice, parse_faults  # noqa: E402
from loadkit.targets.ktb import faults as kf  # noqa: E402
from loadkit.users import ktb as users_ktb  # noqa: E402
from loadkit.users.ktb import KtbChatUser  # noqa: E402


# ------------------------------------------------------------------------------- pure checks
def test_ktb_fault_option_shares_the_chldo_syntax_and_says_what_is_wrong_in_one_line(capsys):
    assert parse_faults("drop=0.01, error=0.02,stall=0.005", kf.KINDS) == {"drop": 0.01, "error": 0.02, "stall": 0.005}
    assert parse_faults("noend=0.1") == {"noend": 0.1}  # chldo's kinds by default
    for bad, text in (("noend=0.1", "KIND one of drop, error, stall, got 'noend=0.1'"), ("drop=nan", "between 0 and 1"),
                      ("error", "expected KIND=P"), ("drop=0.6,stall=0.5", "add up to 1.1"), ("stall=x", "not a probability")):
        assert cli.main(["serve", "ktb", "--fault", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("loadkit serve ktb: error: --fault: ") and text in err, err
    dice = FaultDice({"drop": 0.25, "stall": 0.25}, seed=3)
    draws = [dice.draw() for _ in range(40)]
    assert dice.summary() == f"drop {draws.count('drop')}, stall {draws.count('stall')} of 40 requests"


@pytest.mark.parametrize("variant", ["java", "node"])
def test_injected_error_events_are_the_servers_own_and_claimed_by_their_operation(variant):
    """What ``--fault error`` sends for each event is what the variant's handler sends when it
    fails, and loadkit's client takes it as the failure of exactly that operation."""
    kinds = {"joinRoom": ktb.JoinRoomError, "chatMessage": ktb.MessageError, "fetchPreviousMessages": ktb.LoadError,
             "markMessagesAsRead": ktb.ServerError, "messageReaction": ktb.ServerError, "leaveRoom": ktb.ServerError}
    for event, (name, payload) in kf.SOCKET_ERRORS[variant].items():
        assert name in ktb.ANSWERS[event][1], (event, name)
        if name == "error":
            assert ktb.error_owner(payload) == {event}, (event, payload)
        exc = ktb.classify(name, payload)
        assert type(exc) is kinds[event] and exc.server_message == payload["message"], (event, exc)
    login = kf.rest_error_body(variant, "POST", "/api/auth/login")
    assert login["message"] == "로그인 처리 중 오류가 발생했습니다." and login["success"] is False
    assert kf.rest_error_body(variant, "GET", "/api/rooms/0123456789abcdef01234567")["message"] == \
        "채팅방 정보를 불러오는데 실패했습니다."
    rooms = kf.rest_error_body(variant, "GET", "/api/rooms")
    assert ktb.rest_failure_text(500, __import__("json").dumps(rooms), None, 1) == \
        "HTTP 500: 채팅방 목록을 불러오는데 실패했습니다."  # Java's message, Node's {error: {message}}
    other = kf.rest_error_body(variant, "POST", "/api/auth/verify-token")
    assert other["message"] == ("서버 에러가 발생했습니다." if variant == "node" else "서버 내부 오류가 발생했습니다.")


@pytest.mark.parametrize("variant", ["java", "node"])
def test_without_faults_nothing_is_installed(variant):
    """No ``--fault`` (or only zero rates): the server's handlers and REST app are its own, so the
    normal path pays nothing; with a rate, the CONNECT handling, the six events and REST draw."""
    from loadkit.targets.ktb.rest import RestApp
    from loadkit.targets.ktb.server import ServerConfig, build

    for faults, wrapped in (({}, False), ({"drop": 0.0}, False), ({"stall": 0.5}, True)):
        store, servers, sio = build(ServerConfig(variant=variant, single_port=True, faults=faults))
        try:
            assert (servers[0]._loadkit_faults is not None) is wrapped
            assert ("_handle_connect" in vars(sio)) is wrapped
            handlers = sio.handlers["/"]
            assert all((getattr(handlers[e], "__qualname__", "").startswith("install_socket_faults")) is wrapped
                       for e in kf.EVENTS), handlers
            rest = servers[0].application.wsgi_app
            assert isinstance(rest, kf.RestFaults) is wrapped
            assert wrapped or type(rest).__name__ == ("NodeRestApp" if variant == "node" else RestApp.__name__)
        finally:
            store.close()


# ------------------------------------------------------------------------- against a server
def start(spawn, variant: str, spec: str, seed: int) -> tuple[str, object]:
    port = free_port()
    one_port = ["--single-port"] if variant == "java" else []
    proc = spawn(loadkit_argv("serve", "ktb", "--variant", variant, "--port", str(port), *one_port,
                              "--fault", spec, "--fault-seed", str(seed)), port=port, name=f"ktb-{variant}")
    return f"http://127.0.0.1:{port}", proc


def rest_outcome(url: str) -> str:
    try:
        r = requests.post(f"{url}/api/auth/login", json={"email": "nobody@loadkit.test", "password": "secret1"},
                          timeout=1.5)  # generous: a slow 401 on a busy box must not read as a stall
    except requests.ReadTimeout:
        return "stall"
    except requests.ConnectionError:
        return "drop"
    assert r.status_code in (401, 500), (r.status_code, r.text)
    if r.status_code == 500:
        assert r.json()["message"] == "로그인 처리 중 오류가 발생했습니다.", r.text
        return "error"
    return "none"


def connect_outcome(url: str, variant: str) -> str:
    client = SocketIOClient(url, connect_timeout=2.0)  # no auth: Java accepts it, Node refuses it
    try:
        client.connect()
    except AnswerTimeout:
        return "stall"
    except (ConnectionFailed, Disconnect):
        return "drop"
    except ConnectRefused as exc:
        if variant == "node" and "Authentication error" in str(exc):
            return "none"
        assert ("Internal error" if variant == "java" else "Authentication failed") in str(exc), exc
        return "error"
    finally:
        client.close()
    assert variant == "java"
    return "none"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", ["java", "node"])
def test_ktb_faults_follow_the_seed_request_by_request(spawn, variant):
    """A fixed request sequence meets exactly the faults ``FaultDice`` draws for the seed: REST
    calls first, then Socket.IO handshakes; the server's stop line counts the same."""
    rates, seed = {"drop": 0.1, "error": 0.2, "stall": 0.05}, 11
    url, proc = start(spawn, variant, "drop=0.1,error=0.2,stall=0.05", seed)
    dice = FaultDice(rates, seed)
    expected = [dice.draw() or "none" for _ in range(60)]
    seen = [rest_outcome(url) for _ in range(45)] + [connect_outcome(url, variant) for _ in range(15)]
    assert seen == expected
    assert {"drop", "error", "stall"} <= set(seen[:45]) and {"drop", "error", "stall"} & set(seen[45:])
    proc.stop()
    m = re.search(r"faults injected: drop (\d+), error (\d+), stall (\d+) of (\d+) requests", proc.output())
    assert m and [int(x) for x in m.groups()] == [expected.count(k) for k in ("drop", "error", "stall")] + [60], \
        proc.output()[-500:]
    assert "Traceback" not in proc.output()


class FaultedUser(KtbChatUser):
    pass


REST_TEXTS = {
    "error": re.compile(r"^HTTP 500: (회원가입 처리 중 오류가 발생했습니다\.|로그인 처리 중 오류가 발생했습니다\.|"
                        r"채팅방 생성에 실패했습니다\.|서버 에러가 발생했습니다\.|채팅방 정보를 불러오는데 실패했습니다\.)$"),
    "drop": re.compile(r"^no HTTP response: .*(closed|reset)"),
    "stall": re.compile(r"^no HTTP response: timed out after 0\.5 s$"),
}
#: a dropped or stalled register made no account (faults act before the request is handled): the
#: login the user tries anyway is refused
REST_CONSEQUENCES = re.compile(r"^HTTP 401: 이메일 또는 비밀번호가 올바르지 않습니다\.$")
INJECTED_SOCKET_TEXTS = {payload["message"] for table in kf.SOCKET_ERRORS.values() for _, payload in table.values()}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("variant", ["java", "node"])
def test_injected_ktb_faults_are_classified_failures_of_the_users(spawn, variant, monkeypatch):
    """A KTB user runs its tasks against a faulty server until every kind has hit a REST call and a
    Socket.IO operation: each shows up as its documented failure, and the user carries on."""
    # the pause after a failed session setup (0.5-1.5 s, random) made short: many setups fail here
    monkeypatch.setattr(users_ktb, "random", types.SimpleNamespace(random=lambda: -0.45))
    url, proc = start(spawn, variant, "drop=0.1,error=0.1,stall=0.1", 4)
    opts = parse_options(["--host", url, "--ktb-server", variant, "--ktb-timeout", "0.5", "--ktb-room-size", "1",
                          "--ktb-wait-min", "0", "--ktb-wait-max", "0"])
    FaultedUser.host = url
    env = Environment(user_classes=[FaultedUser], events=events, host=url, parsed_options=opts)
    got: list[tuple[str, str, BaseException | None]] = []

    def record(request_type, name, exception=None, **_kw):
        got.append((request_type, name, exception))

    def kinds_seen() -> set[str]:
        out = set()
        for rtype, _name, exc in got:
            if exc is None:
                continue
            if rtype in ("GET", "POST"):
                out |= {f"rest-{k}" for k, rx in REST_TEXTS.items() if rx.search(str(exc))}
            elif isinstance(exc, ktb.KtbError) and exc.server_message in INJECTED_SOCKET_TEXTS:
                out.add("sio-error")
            elif isinstance(exc, (Disconnect, ConnectionFailed)):
                out.add("sio-drop")
            elif isinstance(exc, AnswerTimeout):
                out.add("sio-stall")
        return out

    wanted = {"rest-error", "rest-drop", "rest-stall", "sio-error", "sio-drop", "sio-stall"}
    events.request.add_listener(record)
    user = FaultedUser(env)
    try:
        user.server_rules()
        user.sio.raw.connect_timeout = 1.0  # Node's 15 s (duplicate-login hold) would make a stalled CONNECT slow
        tasks = itertools.cycle([user.send_chat, user.fetch_previous, user.mark_read, user.react, user.rejoin])
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not wanted <= kinds_seen():
            next(tasks)()
        after = len(got)
        for _ in range(20):  # and it carries on: a message gets through again
            user.send_chat()
            if ("ktb", "chatMessage", None) in got[after:]:
                break
    finally:
        user.on_stop()
        events.request.remove_listener(record)
    assert wanted <= kinds_seen(), (kinds_seen(), [(n, repr(e)) for _, n, e in got if e])
    for rtype, name, exc in got:  # every failure is one of the documented classes, REST with its text
        if exc is None:
            continue
        if rtype in ("GET", "POST"):
            assert any(rx.search(str(exc)) for rx in [*REST_TEXTS.values(), REST_CONSEQUENCES]), (name, exc)
        else:
            assert isinstance(exc, (ktb.KtbError, Disconnect, ConnectionFailed, AnswerTimeout, ConnectRefused)), (name, exc)
    assert ("ktb", "chatMessage", None) in got[after:], got[after:]
    assert [n for t, n, e in got if t == "ktb" and e is None].count("connect") >= 2  # new sessions after drops
    proc.stop()
    assert "faults injected:" in proc.output() and "Traceback" not in proc.output()
