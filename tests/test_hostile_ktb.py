"""The KTB hostile-server suite (issue #15 item 3): a server that breaks the upgrade, the framing,
Engine.IO, Socket.IO, the JSON of every answer a KTB user reads, the acks, or the REST answers is a
classified failure of the request it spoiled, never a traceback, a hang or a dead user.

One hostile server process (tests/hostile_ktb.py) serves every behaviour on a port of its own.
One in-process Locust run (a ``LocalRunner``, two users per behaviour, 5 s) loads all of them at
once; each behaviour's test then reads what its own users reported (request events are fired in the
user's greenlet, so each is attributed to its user's class). A few real ``locust`` command lines
check what a user of the tool sees: exit code, stderr, ``_failures.csv`` and ``_exceptions.csv``.

The failure classes a user can see are documented in docs/ktb-users.md ("Failure classes"). To add
a behaviour: an entry in ``BEHAVIOURS`` (tests/hostile_ktb.py) and its expected classes here.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import resource
import sys
import time
import weakref
from collections import defaultdict
from pathlib import Path

import gevent
import pytest
from locust.argument_parser import parse_options
from locust.env import Environment
from locust.event import Events

from loadkit.procs import ManagedProcess
from loadkit.users.ktb import KtbChatUser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOSTILE = str(HERE / "hostile_ktb.py")
RUN_S = 5.0
TIMEOUT_S = 2.0  # --ktb-timeout: answers, REST calls and the whole connect handshake

LOGIN, REGISTER, ROOMS = "/api/auth/login", "/api/auth/register", "/api/rooms"
REST_FAIL = {"CatchResponseError"}  # Locust's class for a REST answer the user judged failed

# behaviour -> ({request name: failure classes it must fail with, every time}, tasks the users run)
CHAT = ("send_chat",)
CONNECT_FAILED = {"connect": {"ConnectionFailed"}}
EXPECTED: dict[str, tuple[dict[str, set[str]], tuple[str, ...]]] = {
    "correct": ({}, ("send_chat", "fetch_previous", "mark_read", "react", "rejoin")),
    "ws-silent-after-accept": ({"connect": {"AnswerTimeout"}}, CHAT),
    "ws-http-500": (CONNECT_FAILED, CHAT),
    "ws-http-garbage": (CONNECT_FAILED, CHAT),
    "ws-wrong-accept": (CONNECT_FAILED, CHAT),
    "ws-closed-at-upgrade": (CONNECT_FAILED, CHAT),
    "frame-masked": (CONNECT_FAILED, CHAT),
    "frame-reserved-bits": (CONNECT_FAILED, CHAT),
    "frame-unknown-opcode": (CONNECT_FAILED, CHAT),
    "frame-unknown-control": (CONNECT_FAILED, CHAT),
    "frame-fragmented-control": (CONNECT_FAILED, CHAT),
    "frame-continuation-first": (CONNECT_FAILED, CHAT),
    "frame-oversized": (CONNECT_FAILED, CHAT),
    "frame-close-mid-frame": (CONNECT_FAILED, CHAT),
    "frame-invalid-utf8": (CONNECT_FAILED, CHAT),
    "eio-garbage": (CONNECT_FAILED, CHAT),
    "eio-open-without-sid": (CONNECT_FAILED, CHAT),
    "eio-open-not-json": (CONNECT_FAILED, CHAT),
    "sio-connect-refused": ({"connect": {"ConnectRefused"}}, CHAT),
    "sio-connect-error-odd-payload": ({"connect": {"ConnectRefused"}}, CHAT),
    "sio-connect-garbage": (CONNECT_FAILED, CHAT),
    "sio-no-connect-ack": ({"connect": {"AnswerTimeout"}}, CHAT),
    "join-messages-5": ({"joinRoom": {"BadAnswer"}}, CHAT),
    "join-participants-x": ({"joinRoom": {"BadAnswer"}}, CHAT),
    "join-message-objects-wrong": ({"joinRoom": {"BadAnswer"}}, CHAT),
    "join-not-an-object": ({"joinRoom": {"BadAnswer"}}, CHAT),
    "join-error-not-an-object": ({"joinRoom": {"JoinRoomError"}}, CHAT),
    "chat-echo-id-wrong-type": ({"chatMessage": {"BadAnswer"}}, CHAT),
    "chat-echo-not-an-object": ({"chatMessage": {"BadAnswer"}}, CHAT),
    "chat-error-not-an-object": ({"chatMessage": {"ServerError"}}, CHAT),
    "chat-error-string": ({"chatMessage": {"ServerError"}}, CHAT),
    "previous-messages-null": ({"fetchPreviousMessages": {"BadAnswer"}}, ("fetch_previous",)),
    "previous-not-an-object": ({"fetchPreviousMessages": {"BadAnswer"}}, ("fetch_previous",)),
    "read-ids-not-a-list": ({"markMessagesAsRead": {"BadAnswer"}}, ("mark_read",)),
    "read-not-an-object": ({"markMessagesAsRead": {"BadAnswer"}}, ("mark_read",)),
    "reaction-reactions-a-list": ({"messageReaction": {"BadAnswer"}}, ("react",)),
    "reaction-users-a-number": ({"messageReaction": {"BadAnswer"}}, ("react",)),
    "unsolicited-events-of-wrong-types": ({}, CHAT),
    "ack-unknown-and-duplicate-ids": ({"leaveRoom": {"AnswerTimeout"}}, ("rejoin",)),
    "binary-event-answer": ({"chatMessage": {"BadAnswer"}}, CHAT),
    "binary-attachments-too-many": ({"chatMessage": {"Disconnect"}}, CHAT),
    "binary-attachments-over-the-limit": ({"chatMessage": {"Disconnect"}}, CHAT),  # 1.8 MB, over the run's 1 MiB
    "binary-frame-stray": ({"chatMessage": {"Disconnect"}}, CHAT),
    "never-answers-any-emit": ({"joinRoom": {"AnswerTimeout"}}, CHAT),
    "sio-disconnect-on-emit": ({"chatMessage": {"Disconnect"}}, CHAT),
    "frame-masked-mid-session": ({"chatMessage": {"Disconnect"}}, CHAT),
    "sio-garbage-mid-session": ({"chatMessage": {"Disconnect"}}, CHAT),
    "sio-event-without-name": ({"chatMessage": {"Disconnect"}}, CHAT),
    "chat-echo-over-the-limit": ({"chatMessage": {"Disconnect"}}, CHAT),
    "chat-echo-over-max-message-size": ({"chatMessage": {"Disconnect"}}, CHAT),  # 2 MiB, over the run's 1 MiB
    "node-register-user-a-string": ({REGISTER: REST_FAIL}, CHAT),
    "node-join-never-lists-the-user": ({"joinRoom": {"JoinRoomError"}}, CHAT),  # JOIN_NOT_LISTED after 3 answers
    # (each failing REST check is retried for --ktb-timeout: the join's own failure may come after the run)
    "node-room-check-html": ({"joinRoom": {"JoinRoomError"}, "/api/rooms/[id]": REST_FAIL}, CHAT),
    "rest-register-html": ({REGISTER: REST_FAIL}, CHAT),
    "rest-register-500": ({REGISTER: REST_FAIL}, CHAT),
    "rest-login-echoes-secrets": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-html": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-500": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-truncated-json": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-user-a-string": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-token-a-number": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-hangs": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-not-http": ({LOGIN: REST_FAIL}, CHAT),
    "rest-login-closes": ({LOGIN: REST_FAIL}, CHAT),
    "rest-room-id-wrong-type": ({ROOMS: REST_FAIL}, CHAT),
}


#: spoiled requests that need not have failed within the run (but never succeed, nor fail otherwise)
SLOWER = {"node-room-check-html": {"joinRoom"}}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The hostile server process: {behaviour: port}."""
    d = tmp_path_factory.mktemp("hostile_ktb")
    map_file = d / "ports.json"
    proc = ManagedProcess([sys.executable, HOSTILE, str(map_file)], log_path=d / "hostile.log").start()
    try:
        deadline = time.monotonic() + 30
        while not map_file.exists():
            assert proc.returncode is None and time.monotonic() < deadline, proc.output()[-2000:]
            time.sleep(0.05)
        yield json.loads(map_file.read_text())
    finally:
        proc.stop()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class _Tracebacks(logging.Handler):
    """Every log record that carries a traceback (a user's unhandled exception, a handler bug)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info or "Traceback" in text:
            self.records.append((_behaviour_of_current(), self.format(record)))


_BY_GREENLET: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _behaviour_of_current() -> str:
    """The behaviour whose user runs in the current greenlet ("" for another greenlet)."""
    return _BY_GREENLET.get(gevent.getcurrent(), "")


class HostileUser(KtbChatUser):
    abstract = True
    behaviour = ""

    def __init__(self, environment) -> None:
        super().__init__(environment)
        if self.behaviour.startswith("node-"):
            self.server_opt = "node"  # (decided lazily, per host: this user's variant)
        # the class's tasks, evenly: when they are all five of KtbChatUser's, the user would pick
        # them by --ktb-weights' defaults (rejoin 1 of 17: the "correct" control could miss a leave)
        self.tasks = list(type(self).tasks)

    def on_start(self) -> None:
        _BY_GREENLET[gevent.getcurrent()] = self.behaviour  # (a greenlet's args are cleared when it is killed)
        super().on_start()


class Outcome:
    def __init__(self) -> None:
        self.ok: dict[str, int] = defaultdict(int)
        self.failed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.texts: dict[str, str] = {}
        self.user_errors: list[str] = []


@pytest.fixture(scope="module")
def run(hostile):
    """One in-process Locust run loading every behaviour with two users each."""
    outcomes: dict[str, Outcome] = defaultdict(Outcome)
    classes = []
    for name, port in hostile.items():
        if name not in EXPECTED:
            continue  # (a behaviour of its own test)
        _, tasks = EXPECTED[name]
        cls = type(f"Hostile_{name}", (HostileUser,), {"host": f"http://127.0.0.1:{port}", "behaviour": name,
                                                       "fixed_count": 2})
        cls.tasks = [getattr(KtbChatUser, t) for t in tasks]  # (set after: Locust's metaclass adds the base's)
        classes.append(cls)
    opts = parse_options(["--ktb-timeout", str(TIMEOUT_S), "--ktb-server", "java", "--ktb-wait-min", "0.1",
                          "--ktb-wait-max", "0.2", "--ktb-auth-first", "off", "--ktb-room-size", "2",
                          "--ktb-max-message-size", str(1 << 20)])
    env = Environment(user_classes=classes, events=Events(), parsed_options=opts)

    def on_request(request_type, name, exception=None, **_kw):
        o = outcomes[_behaviour_of_current()]
        if exception is None:
            o.ok[name] += 1
        else:
            o.failed[name][type(exception).__name__] += 1
            o.texts.setdefault(f"{name} {type(exception).__name__}", str(exception))

    def on_user_error(user_instance, exception, tb):
        outcomes[getattr(user_instance, "behaviour", "")].user_errors.append(f"{type(exception).__name__}: {exception}")

    env.events.request.add_listener(on_request)
    env.events.user_error.add_listener(on_user_error)
    tracebacks = _Tracebacks()
    logging.getLogger().addHandler(tracebacks)
    rss0 = _rss_mb()
    runner = env.create_local_runner()
    try:
        runner.start(2 * len(classes), spawn_rate=len(classes) * 2)
        gevent.sleep(RUN_S)
        t0 = time.monotonic()
        runner.quit()
        stop_s = time.monotonic() - t0
    finally:
        logging.getLogger().removeHandler(tracebacks)
    yield {"outcomes": outcomes, "stop_s": stop_s, "tracebacks": tracebacks.records, "runner": runner,
           "rss_growth_mb": _rss_mb() - rss0, "users": len(classes) * 2}


def test_the_suite_covers_at_least_25_hostile_behaviours(hostile):
    assert set(hostile) == set(EXPECTED) | {"chat-echo-15mb"}
    assert set(CLI_RUNS) <= set(EXPECTED)
    assert len([b for b, (spoiled, _) in EXPECTED.items() if spoiled]) >= 25


@pytest.mark.parametrize("behaviour", list(EXPECTED))
def test_hostile_behaviour_is_a_classified_failure(run, behaviour):
    spoiled, _ = EXPECTED[behaviour]
    o = run["outcomes"][behaviour]
    seen = f"ok={dict(o.ok)} failed={ {k: dict(v) for k, v in o.failed.items()} } texts={o.texts}"
    assert not o.user_errors, o.user_errors  # no user died of an exception
    assert not [t for b, t in run["tracebacks"] if b == behaviour], [t for b, t in run["tracebacks"] if b == behaviour]
    for name, classes in spoiled.items():
        assert o.failed.get(name) or name in SLOWER.get(behaviour, ()), f"{name} never failed: {seen}"
        assert set(o.failed.get(name, ())) <= classes, seen  # a documented class, the right one
        assert not o.ok.get(name), f"{name} succeeded although the server spoiled it: {seen}"
    # nothing else failed: the failure is pinned on the request the server spoiled
    assert set(o.failed) <= set(spoiled), seen
    if behaviour == "correct":  # the control: every operation of a KTB user completed
        assert {"connect", "joinRoom", "chatMessage", "fetchPreviousMessages", "markMessagesAsRead",
                "messageReaction", "leaveRoom"} <= set(o.ok), seen
    elif not spoiled:  # nothing spoiled: what the users did completed
        assert {"connect", "joinRoom", "chatMessage"} <= set(o.ok), seen


def test_the_hostile_run_ends_on_time_without_tracebacks_and_bounded_memory(run):
    assert not run["outcomes"][""].ok and not run["outcomes"][""].failed  # every request is a user's
    assert run["stop_s"] < 3.0, run["stop_s"]  # every user stopped at once: nobody hangs in a read
    assert not run["runner"].user_greenlets, "users still running after quit"
    assert not run["tracebacks"], run["tracebacks"][:3]
    assert not run["runner"].exceptions, list(run["runner"].exceptions.values())[:3]
    assert run["rss_growth_mb"] < 60, run["rss_growth_mb"]


# behaviour -> (spoiled request name, the class _failures.csv names)
CLI_RUNS = {
    "join-messages-5": ("joinRoom", "BadAnswer"),  # a traceback that killed every user (issue #15)
    "rest-login-user-a-string": (LOGIN, "CatchResponseError"),  # the same
    "never-answers-any-emit": ("joinRoom", "AnswerTimeout"),
    "frame-oversized": ("connect", "ConnectionFailed"),
}


def test_locust_runs_against_hostile_servers_fail_classified_without_tracebacks(hostile, tmp_path):
    """What a user of the command line sees: the run ends on time, exits 1 (every request of the
    spoiled operation failed), prints no traceback, writes no row to ``_exceptions.csv`` and names
    the failure class in ``_failures.csv``; the spoiled request failed every time it was sent."""
    seconds = 6  # (Locust's -t counts from its start: ~2 s of imports when 4 start at once on 2 cores)
    procs = {}
    for behaviour in CLI_RUNS:
        prefix = tmp_path / behaviour
        procs[behaviour] = ManagedProcess(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "ktb_chat.py"), "--headless",
             "-u", "2", "-r", "2", "-t", f"{seconds}s", "--host", f"http://127.0.0.1:{hostile[behaviour]}",
             "--csv", str(prefix), "--only-summary", "--ktb-server", "java", "--ktb-timeout", "1",
             "--ktb-wait-min", "0.1", "--ktb-wait-max", "0.2"],
            log_path=tmp_path / f"{behaviour}.log").start()
    t0 = time.monotonic()
    try:
        codes = {b: p.wait(timeout=seconds + 45) for b, p in procs.items()}
    finally:
        for p in procs.values():
            p.stop()
    assert time.monotonic() - t0 < seconds + 30  # each run ended on time (4 started at once, 2 cores)
    for behaviour, (name, cls) in CLI_RUNS.items():
        out = procs[behaviour].output()
        prefix = tmp_path / behaviour
        assert codes[behaviour] == 1, (behaviour, out[-3000:])
        assert "Traceback" not in out, (behaviour, out[-3000:])
        assert list(csv.DictReader(open(f"{prefix}_exceptions.csv"))) == [], behaviour
        failures = list(csv.DictReader(open(f"{prefix}_failures.csv")))
        assert {r["Name"] for r in failures} == {name}, (behaviour, failures)
        assert all(r["Error"].startswith(cls + "(") for r in failures), (behaviour, failures)
        stats = {r["Name"]: r for r in csv.DictReader(open(f"{prefix}_stats.csv"))}
        assert int(stats[name]["Request Count"]) >= 1 and stats[name]["Failure Count"] == stats[name]["Request Count"], \
            (behaviour, stats[name])


def test_a_rest_call_in_flight_at_the_end_is_unfinished_not_dropped(hostile, tmp_path):
    """A login the server never answers, within a REST timeout longer than the run: at the end of
    the run it is counted (``unfinished:/api/auth/login`` beside the ``POST`` row, its age as
    ``unfinished_age``), and as no login ever completed the run exits 1 and says so. Before, the
    request vanished and the run exited 0 with nothing recorded."""
    prefix = tmp_path / "hang"
    p = ManagedProcess(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "ktb_chat.py"), "--headless",
         "-u", "2", "-r", "2", "-t", "4s", "--host", f"http://127.0.0.1:{hostile['rest-login-hangs']}",
         "--csv", str(prefix), "--only-summary", "--ktb-server", "java", "--ktb-rest-timeout", "60",
         "--stop-timeout", "1"],
        log_path=tmp_path / "hang.log").start()
    try:
        rc = p.wait(timeout=40)
    finally:
        p.stop()
    out = p.output()
    assert rc == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert "POST /api/auth/login: no request completed, 2 still waiting" in out, out[-3000:]
    counts = {(r["Type"], r["Name"]): int(r["Count"]) for r in csv.DictReader(open(f"{prefix}_counters.csv"))}
    assert counts.get(("POST", "unfinished:/api/auth/login")) == 2, counts
    metrics = {(r["Type"], r["Name"]): r for r in csv.DictReader(open(f"{prefix}_metrics.csv"))}
    assert int(metrics[("ktb", "unfinished_age")]["Count"]) == 2, metrics


def test_a_server_echoing_the_password_and_a_token_leaves_them_in_no_output(hostile, tmp_path):
    """Secrets never written (issue #15 item 6), KTB: a login answered 401 with the password (keyed
    and in the message text) and a JWT echoed back. Every file of the run and of its report,
    the console log included, holds neither; the failure is still there, masked."""
    from hostile_ktb import ECHOED_PASSWORD, ECHOED_TOKEN

    prefix = tmp_path / "run"
    p = ManagedProcess(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "ktb_chat.py"), "--headless",
         "-u", "2", "-r", "2", "-t", "3s", "--host", f"http://127.0.0.1:{hostile['rest-login-echoes-secrets']}",
         "--csv", str(prefix), "--ktb-server", "java", "--ktb-password", ECHOED_PASSWORD],
        log_path=tmp_path / "locust.log").start()
    try:
        assert p.wait(timeout=40) == 1, p.output()[-3000:]  # every login failed
    finally:
        p.stop()
    report = ManagedProcess([sys.executable, "-m", "loadkit", "report", "--locust", str(prefix), "--out",
                             str(tmp_path / "report")], log_path=tmp_path / "report.log").start()
    try:
        assert report.wait(timeout=120) == 0, report.output()[-2000:]
    finally:
        report.stop()
    failures = Path(f"{prefix}_failures.csv").read_text()
    assert "HTTP 401" in failures and "wrong password *** for lk@x.test" in failures, failures
    outputs = {p.name: p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()}
    assert "report.html" in outputs and "locust.log" in outputs, sorted(outputs)
    leaked = [name for name, text in outputs.items() if ECHOED_PASSWORD in text or ECHOED_TOKEN in text]
    assert not leaked, leaked


def test_a_15_mb_answer_is_taken_and_its_memory_given_back(hostile):
    """A 15 MB ``message`` echo (under the 16 MiB default limit) completes its chatMessage, and
    the process's memory returns to within 10 MB of what it was before (issue #15 acceptance).
    (Seconds of it are the frame decoder joining 16 KiB reads: quadratic before the shared
    decoder collects a large frame's reads in a list.)"""
    cls = type("Big", (HostileUser,), {"host": f"http://127.0.0.1:{hostile['chat-echo-15mb']}",
                                       "behaviour": "chat-echo-15mb"})
    opts = parse_options(["--ktb-timeout", "20", "--ktb-server", "java", "--ktb-auth-first", "off"])
    env = Environment(user_classes=[cls], events=Events(), parsed_options=opts)
    got: list = []
    env.events.request.add_listener(lambda name, exception=None, response_length=0, **_: got.append(
        (name, exception, response_length)))
    user = cls(env)
    try:
        user.on_start()
        gc.collect()
        rss0 = _rss_mb()
        t0 = time.monotonic()
        user.send_chat()
        elapsed = time.monotonic() - t0
        gc.collect()
        gevent.sleep(0.1)
        grown = _rss_mb() - rss0
    finally:
        user.on_stop()
    chats = [(e, n) for name, e, n in got if name == "chatMessage"]
    assert [e for e, _ in chats] == [None] and all(n > 15 << 20 for _, n in chats), got
    assert elapsed < 30, elapsed
    assert grown < 10, f"RSS {grown:.1f} MB above the baseline after a 15 MB answer ({elapsed:.1f} s)"
