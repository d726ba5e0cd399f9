"""``KtbChatUser``: a KTB Chat client that behaves like the real frontend and measures round trips.

Per user: register (409 = exists) and log in over REST with an account unique per user *and* per
process (the server keeps one session per user), get the room of its group (rooms of
``--ktb-room-size`` users, created over REST by the group's first user, or ``--ktb-room-id``),
connect the Socket.IO socket with ``auth {token, sessionId}``, ``joinRoom``, then run weighted tasks
covering all six client events. See docs/ktb-users.md for every request name and its definition.

Two server variants (``--ktb-server auto|java|node``, decided once per process before the first
task; rules in :mod:`loadkit.protocols.ktb_variants`): the Java backend (REST and Socket.IO apart,
automatic acks, ``messagesRead`` to the whole room) and the Node backend (one port, no acks,
``messagesRead`` to the other members only, an asynchronous ``leaveRoom``). Where the sender gets
no completion signal (Node's ``markMessagesAsRead`` and ``leaveRoom``) the emit is counted and what
another member observes is timed (``read_receipt``, ``leave_seen``).

Reactions to the server, like a real client:
- ``RATE_LIMIT_EXCEEDED`` → failure ``RateLimited`` and a pause of ``retryAfter`` seconds;
- ``MESSAGE_REJECTED`` → failure ``MessageRejected``;
- ``SESSION_EXPIRED``, ``duplicate_login``, ``session_ended``, a disconnect → log in again,
  reconnect and re-join before the next task;
- unknown server events are counted (``ktb_counters``), never fatal.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import secrets
import time
from collections import deque
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from locust import events, task
from locust.contrib.fasthttp import FastHttpSession

from loadkit.options import choice, number, parsed_by, rule, url
from loadkit.options import value as option_value
from loadkit.protocols.ktb_vocab import E_ROOM_NOT_FOUND
from loadkit.metrics.counters import counters
from loadkit.clients.socketio import Disconnect, ErrorAnswer, SocketIOError
from loadkit.protocols import ktb, ktb_answers, ktb_nonce
from loadkit.protocols import ktb_variants as variants
from loadkit.users.socketio import SocketIOUser

log = logging.getLogger(__name__)

REQUEST_TYPE = "ktb"
DEFAULT_WEIGHTS = {
    "chatMessage": 10,
    "fetchPreviousMessages": 2,
    "markMessagesAsRead": 3,
    "messageReaction": 1,
    "rejoin": 1,
}


# ------------------------------------------------------------------------------------ options
@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # parser.add_argument itself, not an argument group's: only Locust's own add_argument marks an
    # option for the web UI (an argument group's add_argument is plain argparse)
    parser.add_argument("--ktb-socket-url", default="", help="Socket.IO base URL (default: --host, the REST base URL)")
    parser.add_argument("--ktb-room-size", type=int, default=10, help="users per chat room (rooms are per process)")
    parser.add_argument("--ktb-room-id", default="", help="join this existing room instead of creating rooms")
    parser.add_argument("--ktb-password", default="loadkit-pass-1", is_secret=True, help="password of the generated accounts")
    parser.add_argument("--ktb-run-id", default="", help="account name prefix (default: random per process)")
    parser.add_argument("--ktb-server", default="auto", choices=["auto", "java", "node"],
                        help="which KTB backend is loaded: auto (decided once before the first task from what the "
                             "server shows, logged in one line), java or node; see docs/ktb-users.md")
    parser.add_argument("--ktb-timeout", type=float, default=10.0, help="seconds to wait for an answer, and for the whole connect handshake")
    parser.add_argument("--ktb-rest-timeout", type=float, default=0.0,
                        help="seconds a REST call (register, login, rooms) may take (default: --ktb-timeout)")
    parser.add_argument("--ktb-wait-min", type=float, default=1.0, help="min seconds between tasks")
    parser.add_argument("--ktb-wait-max", type=float, default=3.0, help="max seconds between tasks")
    parser.add_argument(
        "--ktb-weights",
        default="",
        help="task weights, e.g. chatMessage=10,fetchPreviousMessages=2,markMessagesAsRead=3,messageReaction=1,rejoin=1",
    )
    parser.add_argument("--ktb-delivery", default="on", choices=["on", "off"], help="record `delivery` latency to other members")
    parser.add_argument("--ktb-banned-word", default="", help="word appended to every Nth message (forces MESSAGE_REJECTED)")
    parser.add_argument("--ktb-banned-every", type=int, default=0, help="N for --ktb-banned-word (0: never)")
    parser.add_argument("--ktb-insecure", action="store_true", default=False, help="do not verify TLS certificates (wss://)")
    parser.add_argument("--ktb-max-message-size", type=int, default=16 * 1024 * 1024,
                        help="largest websocket message (bytes) a KTB user accepts: a bigger one ends the connection "
                             "(a classified failure of the request waiting on it); default 16777216 (16 MiB)")
    parser.add_argument("--ktb-max-retry-after", type=float, default=60.0, help="cap on the RATE_LIMIT pause (seconds)")
    parser.add_argument("--ktb-heartbeat", default="on", choices=["on", "off"],
                        help="declare a connection lost when the server sends no Engine.IO ping for pingInterval + "
                             "2 x pingTimeout (off: for a server that announces pings but never sends them)")
    parser.add_argument("--ktb-auth-first", default="on", choices=["on", "off"],
                        help="on: no user starts its tasks until every user of this process has logged in and "
                             "joined (logins, bcrypt-slow on Node, do not overlap the measured operations); "
                             "default on")
    parser.add_argument("--ktb-leave-ack", default="on", choices=["on", "off"],
                        help="time leaveRoom by its Socket.IO ack (on; the Java server acks every registered "
                             "event) or send it untimed (off: for a server that never acks it)")


class RestSession(FastHttpSession):
    """Locust's FastHttpSession, and a REST call still waiting when the user is stopped (the end of
    the run: a login the server never answers, within a long ``--ktb-rest-timeout``) is counted as
    unfinished under its own row (``POST /api/auth/login``), like the Socket.IO requests: never
    dropped (issue #15 item 2)."""

    measure: Any = None

    def request(self, method: str, url: str, name: str | None = None, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super().request(method, url, name=name, **kwargs)
        except gevent.GreenletExit:
            if self.measure is not None:
                self.measure.unfinished(name or url, (time.perf_counter() - t0) * 1000.0, request_type=method)
            raise


def _opt(env: Any, name: str) -> Any:
    """The run's ``--ktb-*`` value, or the default its ``add_argument`` above declares."""
    return option_value(env, name)


def parse_weights(text: str) -> dict[str, int]:
    """``"chatMessage=10,rejoin=0"`` → weights (unknown names are an error, not ignored)."""
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, val = part.partition("=")
        if key not in weights:
            raise ValueError(f"--ktb-weights: unknown task {key!r} (known: {', '.join(weights)})")
        try:
            weights[key] = int(val)
        except ValueError:
            raise ValueError(f"--ktb-weights: {key}={val!r} is not a whole number") from None
        if weights[key] < 0:
            raise ValueError(f"--ktb-weights: {key}={val} must be >= 0")
    if not any(weights.values()):
        raise ValueError("--ktb-weights: every weight is 0")
    return weights


# --------------------------------------------------------------------------- process-wide state
#: counts of things that are not round trips (unknown events, session losses by signal, re-joins,
#: skipped deliveries ...): merged over workers, logged at the end, written to <prefix>_counters.csv
COUNTERS = counters(REQUEST_TYPE)
_ROOMS: dict[tuple, AsyncResult] = {}
_HOST = ktb_nonce.host_token()
#: (REST URL, Socket.IO URL, --ktb-server) -> (variant, why): decided once per process
_VARIANTS: dict[tuple, AsyncResult] = {}
#: emits whose completion only another member can see, waiting for their first witness:
#: (userId, messageIds) -> perf_counter at emit; (roomId, leaver's name) -> (perf_counter, Event)
_PENDING_READS: dict[tuple, float] = {}
_PENDING_LEAVES: dict[tuple, tuple[float, Event]] = {}
_PENDING_MAX = 5000
#: users of this process still logging in / joining in on_start (--ktb-auth-first)
_STARTING: set[int] = set()
#: users of this process currently joined, per room: is there a witness for a leave?
_JOINED: dict[str, set[int]] = {}
LEAVE_WITNESS_WAIT_S = 2.0  # then ask REST whether the leave is complete
JOIN_ATTEMPTS = 3


def _new_process_identity() -> None:
    """This process's identity: account names, room names and the sender part of every message
    nonce, and the per-process tables above. Made again in a forked child (``locust --processes N``
    forks after this module was imported): children sharing their parent's pid and user numbers
    would take each other's messages in a shared room for their own echoes."""
    global _RUN_ID, _PID, _USER_SEQ
    _RUN_ID = secrets.token_hex(3)
    _PID = os.getpid()
    _USER_SEQ = itertools.count()
    for table in (_ROOMS, _VARIANTS, _PENDING_READS, _PENDING_LEAVES, _JOINED, _STARTING):
        table.clear()


_new_process_identity()
os.register_at_fork(after_in_child=_new_process_identity)


def _remember_pending(table: dict, key: tuple, value: Any) -> None:
    """Register an emit for its witness; keeps the first emit of a key, and the table bounded (an
    emit nobody witnesses, e.g. in a room of one, is never popped)."""
    if len(table) >= _PENDING_MAX:
        table.clear()
        COUNTERS.bump("witness_table_resets")
    table.setdefault(key, value)


def decide_variant(host: str, socket_url: str | None, forced: str, timeout: float, verify: bool) -> tuple[str, str]:
    """``--ktb-server``, or (auto) what the server shows before the test: one URL or two, and
    ``GET /health`` vs ``GET /api/health`` (rules: ``ktb_variants.detect_variant``)."""
    if forced in variants.RULES:
        return forced, f"--ktb-server {forced}"
    import requests  # here, not at the top: imported before locust it breaks gevent's ssl patch
    two_urls = bool(socket_url) and socket_url.rstrip("/") != host.rstrip("/")

    def probe(path: str) -> tuple[int | None, str | None]:
        try:
            r = requests.get(host.rstrip("/") + path, timeout=timeout, verify=verify, allow_redirects=False)
        except requests.RequestException:
            return None, None
        return r.status_code, r.headers.get("X-Powered-By")

    if two_urls:
        return variants.detect_variant(two_urls=True, health=None, api_health=None)
    api_health, _ = probe("/api/health")
    health, powered = probe("/health")
    return variants.detect_variant(two_urls=False, health=health, api_health=api_health, powered_by=powered)


def _checks() -> None:
    """The ``--ktb-*`` checks, shared by the command line and the web UI (loadkit.options)."""
    rule("--ktb-socket-url", url("http", "https", "ws", "wss", example="http://127.0.0.1:5002", empty_ok=True))
    rule("--ktb-room-size", number(1, 100000, integer=True))
    rule("--ktb-timeout", number(0, 3600, above=True))
    rule("--ktb-rest-timeout", number(0, 3600))
    rule("--ktb-wait-min", number(0, 86400))
    rule("--ktb-wait-max", number(0, 86400))
    rule("--ktb-weights", parsed_by(parse_weights))
    rule("--ktb-banned-every", number(0, integer=True))
    rule("--ktb-max-retry-after", number(0, 86400))
    rule("--ktb-max-message-size", number(1024, 1 << 30, integer=True))
    rule("--ktb-server", choice("auto", "java", "node"))
    for flag in ("--ktb-delivery", "--ktb-heartbeat", "--ktb-leave-ack", "--ktb-auth-first"):
        rule(flag, choice("on", "off"))


_checks()


class KtbChatUser(SocketIOUser):
    """Abstract KTB chat user; subclass it in a locustfile (see locustfiles/ktb_chat.py)."""

    abstract = True
    request_type = REQUEST_TYPE
    host_schemes = ("http", "https")  # what --host must be (loadkit.options)
    host_example = "http://127.0.0.1:5001"
    emoji = "👍"

    def __init__(self, environment: Any) -> None:
        env = environment
        self.user_no = next(_USER_SEQ)
        self.timeout = float(_opt(env, "ktb_timeout"))
        self.rest_timeout = float(_opt(env, "ktb_rest_timeout") or 0.0) or self.timeout
        self.server_opt = _opt(env, "ktb_server") or "auto"
        self.rules: variants.VariantRules | None = None
        self.last_fetch_reply: float | None = None
        self.wait_min = float(_opt(env, "ktb_wait_min"))
        self.wait_max = max(self.wait_min, float(_opt(env, "ktb_wait_max")))
        self.room_size = max(1, int(_opt(env, "ktb_room_size")))
        self.fixed_room = _opt(env, "ktb_room_id") or ""
        self.password = _opt(env, "ktb_password")
        self.run_id = _opt(env, "ktb_run_id") or _RUN_ID
        self.delivery = _opt(env, "ktb_delivery") == "on"
        self.banned_word = _opt(env, "ktb_banned_word") or ""
        self.banned_every = int(_opt(env, "ktb_banned_every") or 0)
        self.max_retry_after = float(_opt(env, "ktb_max_retry_after"))
        self.leave_ack = _opt(env, "ktb_leave_ack") == "on"
        self.auth_first = _opt(env, "ktb_auth_first") == "on"
        self.heartbeat_check = _opt(env, "ktb_heartbeat") == "on"
        self.verify_tls = not bool(_opt(env, "ktb_insecure"))
        self.max_message_size = int(_opt(env, "ktb_max_message_size"))
        self.socket_url = _opt(env, "ktb_socket_url") or None
        # the whole handshake (TCP, upgrade, Engine.IO OPEN, CONNECT acks) is bounded by --ktb-timeout
        # (raised to the variant's floor in server_rules: a Node handshake may be held 10 s)
        self.connect_timeout = self.timeout
        super().__init__(environment)
        if not self.host:
            raise ValueError("KtbChatUser needs --host (the REST base URL, e.g. http://127.0.0.1:5001)")
        # REST calls time out after --ktb-rest-timeout (never a library default), and a request is
        # sent once: a POST that timed out may have been executed (register: handled in login())
        self.sio.raw.max_message = self.max_message_size  # (the frame decoder's limit, set at each upgrade)
        self.rest = RestSession(self.host, self.measure.rest_event, user=self, insecure=not self.verify_tls,
                                network_timeout=self.rest_timeout, connection_timeout=self.rest_timeout,
                                max_retries=0)
        self.rest.measure = self.measure
        weights_opt = _opt(env, "ktb_weights") or ""
        weights = parse_weights(weights_opt)
        table = {
            "chatMessage": "send_chat",
            "fetchPreviousMessages": "fetch_previous",
            "markMessagesAsRead": "mark_read",
            "messageReaction": "react",
            "rejoin": "rejoin",
        }
        # a subclass that declares its own @task methods keeps them unless --ktb-weights is given
        custom_tasks = set(type(self).tasks) != set(KtbChatUser.tasks)
        if weights_opt or not custom_tasks:
            self.tasks = [getattr(type(self), table[k]) for k, w in weights.items() for _ in range(w)]
        self.token = self.session_id = self.user_id = None
        self.room_id: str | None = None
        self.seq = 0
        self.recent_ids: deque = deque(maxlen=20)
        self.need_session = True
        self.need_join = False  # set when the server dropped us from the room (see _handle)
        self.me = (_HOST, _PID, self.user_no)
        self.content_prefix = ktb_nonce.content_prefix(_HOST, _PID, self.user_no)
        self.email = self.account_email()
        # unique per process too: the leave notice "<name>님이 퇴장하였습니다." names the leaver
        self.display_name = f"lk user {self.user_no} p{_PID}"
        self._wire_handlers()

    # ------------------------------------------------------------------ identity & wait time
    def account_email(self) -> str:
        """Unique per user and per process/worker (the server allows one session per user)."""
        worker = getattr(getattr(self.environment, "runner", None), "worker_index", 0)
        return f"lk-{self.run_id}-w{worker}-{_PID}-u{self.user_no}@loadkit.test"

    def wait_time(self) -> float:  # type: ignore[override]
        if self.wait_max <= self.wait_min:
            return self.wait_min
        return random.uniform(self.wait_min, self.wait_max)

    def socketio_auth(self) -> Any:
        return {"token": self.token, "sessionId": self.session_id}

    def classify_error(self, exc: ErrorAnswer) -> Exception:
        return ktb.classify(exc.event, exc.payload)

    def _fire(self, name: str, rt_ms: float, length: int, exc: Exception | None) -> None:
        self.measure.request(name, rt_ms, length, exc)

    def _receive_metric(self, name: str, ms: float, length: int) -> None:
        """A figure observed on the *receiving* side (``delivery``, ``read_receipt``,
        ``leave_seen``): not a round trip of this user, so a loadkit metric (ms), not a request."""
        self.measure.metric(name, ms)

    # ------------------------------------------------------------------ server variant
    def server_rules(self) -> variants.VariantRules:
        """The variant's rules, decided once per process and target (one log line says which and why)."""
        if self.rules is None:
            key = (self.host, self.socket_url, self.server_opt)
            slot = _VARIANTS.get(key)
            if slot is None:
                slot = _VARIANTS[key] = AsyncResult()
                try:
                    name, why = decide_variant(self.host, self.socket_url, self.server_opt, self.rest_timeout,
                                               self.verify_tls)
                except Exception as exc:  # noqa: BLE001 - never fatal: the Java shape is the old default
                    name, why = variants.JAVA, f"detection failed ({type(exc).__name__}: {exc}), assuming java"
                log.info("loadkit: KTB server variant %s (%s)", name, why)
                slot.set(name)
            self.rules = variants.RULES[slot.get()]
            if self.rules.min_connect_timeout_s > self.sio.raw.connect_timeout:
                self.sio.raw.connect_timeout = self.rules.min_connect_timeout_s
        return self.rules

    # ------------------------------------------------------------------ server-initiated events
    def _wire_handlers(self) -> None:
        sio = self.sio
        # our own echoes are taken by chat_once's request (which remembers their ids): the
        # handler sees only the messages no request claimed, i.e. other members' (delivery)
        sio.on("message", self._on_message, claimed=False)
        sio.on("duplicate_login", lambda *a: self._session_lost("duplicate_login", a))
        sio.on("session_ended", lambda *a: self._session_lost("session_ended", a))
        # a failure event that no pending request took (it came late, after its request timed
        # out, or belongs to nothing we sent): counted, so it is visible at the end of the run
        for ev in ("error", "joinRoomError"):
            sio.on(ev, _counter(f"unclaimed_event:{ev}"), claimed=False)
        sio.on("messagesRead", self._on_read_receipt, claimed=False)
        for ev in ktb.KNOWN_SERVER_EVENTS - {"message", "duplicate_login", "session_ended", "error", "joinRoomError",
                                             "messagesRead"}:
            sio.on(ev, _noop, claimed=False)  # known, needs no reaction: not "unknown"
        sio.raw.on_unhandled = self._on_unknown
        sio.raw.on_disconnect = self._on_disconnect

    def _remember(self, msg: dict) -> None:
        """Keep the ids of recent messages in our room (markMessagesAsRead and messageReaction
        act on them)."""
        mid = msg.get("_id")
        if isinstance(mid, str) and mid and msg.get("room") in (None, self.room_id):
            self.recent_ids.append(mid)

    def _on_message(self, msg: Any = None, *_: Any) -> None:
        if not isinstance(msg, dict):
            return
        self._remember(msg)
        if _PENDING_LEAVES and msg.get("type") == "system":
            self._on_leave_notice(msg)
            return
        if self.delivery:
            content = msg.get("content")
            if not isinstance(content, str) or content.startswith(self.content_prefix):
                return  # our own echo (timed by chatMessage) or not a loadkit message
            n = ktb_nonce.parse_content(content)
            if n is not None and n.sender != self.me:
                if n.host != _HOST:
                    COUNTERS.bump("delivery_other_host")
                    return
                rt = time.time() * 1000.0 - n.sent_us / 1000.0
                self._receive_metric("delivery", max(0.0, rt), len(msg.get("content", "")))

    def _on_leave_notice(self, msg: dict) -> None:
        """Witness of a leave: a member who stays sees "<name>님이 퇴장하였습니다." (``leave_seen``)."""
        notice = variants.leave_notice(msg)
        pending = _PENDING_LEAVES.pop(notice, None) if notice else None
        if pending is not None:
            t0, done = pending
            self._receive_metric("leave_seen", (time.perf_counter() - t0) * 1000.0, 0)
            done.set()

    def _on_read_receipt(self, payload: Any = None, *_: Any) -> None:
        """Witness of a read receipt: another member's ``messagesRead`` (``read_receipt``, time from
        the reader's emit to its first witness in this process)."""
        if not _PENDING_READS:
            return
        key = variants.read_receipt_key(payload)
        t0 = _PENDING_READS.pop(key, None) if key else None
        if t0 is not None:
            self._receive_metric("read_receipt", (time.perf_counter() - t0) * 1000.0, len(key[1]))

    def _session_lost(self, event: str, args: tuple) -> None:
        COUNTERS.bump(event)
        self._lose_session(ktb.classify(event, args[0] if args else None))

    def _on_disconnect(self, reason: str) -> None:
        COUNTERS.bump("disconnects")
        self._lose_session(Disconnect(reason))

    def _lose_session(self, exc: Exception) -> None:
        """One ``session_lost:<class>`` count per lost session: the server's duplicate_login, the
        session_ended 10 s later and the disconnect after it are one loss, counted by the first
        (the counters still count each signal). Not a request event: no request of ours failed."""
        already = self.need_session
        self.need_session = True
        if not already:
            COUNTERS.bump(f"session_lost:{type(exc).__name__}")
            log.info("user %s: session lost (%s); logging in again", self.user_no, exc)

    def _on_unknown(self, ev: Any) -> None:
        COUNTERS.bump(f"unknown_event:{ev.name}")

    # ------------------------------------------------------------------ REST
    def _rest_headers(self) -> dict[str, str]:
        return {"x-auth-token": self.token or "", "x-session-id": self.session_id or ""}

    def _rest_failure(self, r: Any) -> str:
        return ktb.rest_failure_text(r.status_code or 0, _text(r), getattr(r, "error", None), self.rest_timeout)

    def login(self) -> None:
        """Register (201, or 409 = exists) then log in; sets token, sessionId and user id.

        Node's register already logs in (201 with a token and a sessionId): then no login call. A
        register that got no answer (timed out, reset) may still have created the account on the
        server: it is reported, and the login is tried anyway.
        """
        body = {"name": self.display_name, "email": self.email, "password": self.password}
        creds = None
        with self.rest.post("/api/auth/register", json=body, name="/api/auth/register", catch_response=True) as r:
            if r.status_code in (200, 201):
                try:  # an HTML page or a wrong-typed `user` is the server's failure, not a crash
                    data, uid = ktb_answers.register_answer(r.status_code, _text(r))
                except ValueError as exc:
                    r.failure(f"HTTP {r.status_code}: {exc}")
                    raise ktb.AuthFailed(str(r.status_code), "register failed") from None
                r.success()
                creds = variants.auth_from_register(r.status_code, data)
            elif r.status_code == 409:
                r.success()
            else:
                r.failure(self._rest_failure(r))
                if r.status_code:  # the server answered: no account was made
                    raise ktb.AuthFailed(str(r.status_code), "register failed")
        if creds is not None:
            self.token, self.session_id = creds
            self.user_id = uid
            if self.user_id:
                return
        with self.rest.post(
            "/api/auth/login", json={"email": self.email, "password": self.password}, name="/api/auth/login", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(self._rest_failure(r))
                raise ktb.AuthFailed(str(r.status_code), "login failed")
            try:  # `"user": "bob"`, a number as token, an HTML page: the login failed, the user lives
                self.token, self.session_id, self.user_id = ktb_answers.login_answer(_text(r))
            except ValueError as exc:
                r.failure(f"HTTP 200: {exc}")
                raise ktb.AuthFailed("200", "login failed") from None

    def room_for_me(self) -> str:
        """The room of this user's group; the group's first user creates it over REST."""
        if self.fixed_room:
            return self.fixed_room
        group = self.user_no // self.room_size
        key = self._room_key()
        slot = _ROOMS.get(key)
        if slot is None or (slot.ready() and not slot.successful()):
            slot = _ROOMS[key] = AsyncResult()
            try:
                slot.set(self._create_room(group))
            except Exception as exc:  # noqa: BLE001 - waiting members must see it too
                slot.set_exception(exc)
                raise
        return slot.get(timeout=self.timeout * 3)

    def _room_key(self) -> tuple:
        # per target: one process may load several servers
        return (self.host, self.room_size, self.user_no // self.room_size)

    def _forget_room(self, room_id: str | None) -> None:
        """The server no longer knows our group's room (it restarted with an in-memory store, or
        the room was deleted): the next ``room_for_me`` of the group creates it again."""
        slot = _ROOMS.get(self._room_key())
        if slot is not None and slot.ready() and slot.successful() and slot.get() == room_id:
            del _ROOMS[self._room_key()]
            COUNTERS.bump("rooms_recreated")

    def _create_room(self, group: int) -> str:
        name = f"lk {self.run_id} {_PID} room {group}"
        with self.rest.post("/api/rooms", json={"name": name}, headers=self._rest_headers(), name="/api/rooms", catch_response=True) as r:
            if r.status_code not in (200, 201):
                r.failure(self._rest_failure(r))
                raise ktb.ServerError(str(r.status_code), "room creation failed")
            try:
                room = ktb_answers.room_answer(_text(r))
            except ValueError as exc:
                r.failure(f"HTTP {r.status_code}: {exc}")
                raise ktb.ServerError(str(r.status_code), "room creation failed") from None
            return room

    # ------------------------------------------------------------------ session lifecycle
    def establish(self) -> None:
        """(Re-)login, connect, join. Raises after reporting on failure.

        The old socket is closed cleanly *before* the login and the new handshake: a Node server
        would otherwise hold the new handshake 10 s and evict the old socket (duplicate login).
        """
        self.server_rules()
        self._left_room()
        self.sio.close()
        self.need_session = True
        self.login()
        self.room_id = self.room_for_me()
        # cleared before the new socket exists, so that a session loss the server signals on it
        # (duplicate_login, a disconnect) while it connects or joins is not overwritten
        self.need_session = self.need_join = False
        try:
            self.sio.connect()
            self.join()
        except ktb.JoinRoomError as exc:
            self.need_session = True
            if not self.fixed_room and E_ROOM_NOT_FOUND in str(exc):
                self._forget_room(self.room_id)
            raise
        except BaseException:
            self.need_session = True
            raise

    def ensure_session(self) -> bool:
        if not self.need_session:
            return True
        COUNTERS.bump("session_attempts")
        try:
            self.establish()
            COUNTERS.bump("sessions")  # sessions established (logged in, connected, joined)
            return True
        except (SocketIOError, ktb.KtbError) as exc:
            log.debug("user %s: session setup failed: %s", self.user_no, exc)
        except gevent.Timeout:
            pass
        gevent.sleep(min(5.0, 0.5 + random.random()))
        return False

    def on_start(self) -> None:
        _STARTING.add(self.user_no)
        try:
            self.ensure_session()
        finally:
            _STARTING.discard(self.user_no)
        if self.auth_first:
            self._wait_for_the_others()

    def _wait_for_the_others(self) -> None:
        """Hold this user's tasks until the spawn is complete and every user of this process has
        logged in and joined (bounded): the REST logins — ~0.5 s of bcrypt each on the Node
        server, serialised on its event loop — would otherwise overlap and inflate every measured
        operation of the users already running. Locust's ``--reset-stats`` would drop the login
        rows too; this keeps them, reported as their own rows."""
        runner = getattr(self.environment, "runner", None)
        deadline = time.monotonic() + max(30.0, self.timeout * 3)
        while time.monotonic() < deadline:
            spawning = getattr(runner, "spawning_greenlet", None)
            if not _STARTING and (spawning is None or spawning.dead):
                return
            gevent.sleep(0.05)
        COUNTERS.bump("auth_first_wait_timeouts")

    def on_stop(self) -> None:
        self._left_room()
        self.sio.close()

    def pause(self, seconds: float) -> None:
        """Back off (after RATE_LIMIT_EXCEEDED): the user sends nothing for ``seconds``."""
        gevent.sleep(seconds)

    def _handle(self, exc: Exception) -> None:
        """React to a reported failure like a real client would."""
        if isinstance(exc, ktb.RateLimited):
            COUNTERS.bump("rate_limited_pauses")
            self.pause(min(self.max_retry_after, exc.retry_after))
        elif isinstance(exc, (ktb.SessionExpired, Disconnect)):
            self._lose_session(exc)  # the first signal of a lost session, whichever it is
        elif isinstance(exc, (ktb.AuthFailed, ktb.JoinRoomError)):
            self.need_session = True
        elif ktb.lost_room_access(exc):
            # the server dropped us from the room (docs/ktb-servers.md Java §4.5, Node §4.5): a real client
            # joins it again
            COUNTERS.bump("room_rejoins")
            self.need_join = True

    # ------------------------------------------------------------------ operations
    def _join_attempt(self) -> tuple[Any, str]:
        """One ``joinRoom`` → its ``joinRoomSuccess`` (not reported yet) and how it reads; a
        failure is reported as ``joinRoom`` and raised."""
        room = self.room_id
        # the outcome carries its timing, failure or not (GreenletExit: counted as unfinished)
        o = self.sio.exchange("joinRoom", room, answer="joinRoomSuccess", match=ktb_answers.match_join(room),
                              errors=ktb.failure_events("joinRoom"), timeout=self.timeout)
        if o.error is not None:
            self._fire("joinRoom", o.elapsed_ms, o.nbytes, o.error)
            raise o.error
        a = o.value
        assert a is not None
        return a, variants.join_reply(a.data, self.user_id)

    def join(self) -> None:
        """``joinRoom`` until the server's answer means we are in the room (docs/ktb-servers.md Node §7): a full
        ``joinRoomSuccess`` listing us, or (Java) the short form. On Node a short form, or a full
        one without us, is the race with a leave still running: wait until the server shows the
        leave complete, then join again (counted as ``join_raced``; only the attempt that
        completes is timed)."""
        rules = self.server_rules()
        for attempt in range(JOIN_ATTEMPTS):
            a, reply = self._join_attempt()
            if variants.join_counts(rules, reply, known_member=False):
                self._fire("joinRoom", a.elapsed_ms, a.nbytes, None)
                _JOINED.setdefault(self.room_id, set()).add(self.user_no)
                data = a.data if isinstance(a.data, dict) else {}
                for m in data.get("messages") or ():  # (types checked by ktb_answers.match_join)
                    if m.get("_id"):
                        self.recent_ids.append(m["_id"])
                return
            COUNTERS.bump("join_raced")
            if attempt + 1 < JOIN_ATTEMPTS:
                self._await_left_via_rest(self.room_id)
        exc = ktb.JoinRoomError("JOIN_NOT_LISTED", f"{JOIN_ATTEMPTS} joinRoomSuccess answers in a row did not "
                                                   f"put this user in the room (last: {reply})")
        self._fire("joinRoom", a.elapsed_ms, a.nbytes, exc)
        raise exc

    def _left_room(self) -> None:
        if self.room_id:
            _JOINED.get(self.room_id, set()).discard(self.user_no)

    def _listed(self, room: str) -> bool | None:
        """Is this user a participant of ``room`` according to ``GET /api/rooms/:id`` (None: unknown)?"""
        with self.rest.get(f"/api/rooms/{room}", headers=self._rest_headers(), name="/api/rooms/[id]",
                           catch_response=True) as r:
            listed = variants.user_listed(_json(r), self.user_id or "") if r.status_code == 200 else None
            if listed is None:
                r.failure(self._rest_failure(r))
            else:
                r.success()
        return listed

    def _await_left_via_rest(self, room: str) -> bool:
        """Poll ``GET /api/rooms/:id`` until this user is no longer listed (at most --ktb-timeout)."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._listed(room) is False:
                return True
            if time.monotonic() >= deadline:
                COUNTERS.bump("leave_unconfirmed")
                return False
            gevent.sleep(0.1)

    def _await_leave(self, room: str, done: Event) -> None:
        """Node: ``leaveRoom`` completes asynchronously and tells the leaver nothing. Known complete
        when a witness in this process saw the leave notice, else when REST no longer lists us."""
        others = _JOINED.get(room, set()) - {self.user_no}
        if others and done.wait(min(self.timeout, LEAVE_WITNESS_WAIT_S)):
            return
        self._await_left_via_rest(room)

    def next_content(self) -> str:
        self.seq += 1
        content = ktb_nonce.make_content(_HOST, _PID, self.user_no, self.seq, int(time.time() * 1_000_000), self.content_prefix)
        if self.banned_word and self.banned_every > 0 and self.seq % self.banned_every == 0:
            content = f"{content} {self.banned_word}"
        return content

    def chat_once(self) -> Any:
        content = self.next_content()
        a = self.sio.request(
            "chatMessage", {"room": self.room_id, "type": "text", "content": content},
            answer="message", match=ktb_answers.match_content(content), errors=_CHAT_ERRORS, timeout=self.timeout,
        )
        mid = a.args[0].get("_id")  # a dict (match_content checked it) in our room: we sent it there
        if mid:
            self.recent_ids.append(mid)
        return a

    def _run(self, fn: Any, *args: Any) -> Any:
        self.server_rules()
        if not self.ensure_session():
            return None
        try:
            if self.need_join:
                self.need_join = False
                self.join()
            return fn(*args)
        except (SocketIOError, ktb.KtbError) as exc:
            self._handle(exc)
        return None

    @task
    def send_chat(self) -> None:
        """chatMessage → our own ``message`` echo, recognised by its nonce content."""
        self._run(self.chat_once)

    @task
    def fetch_previous(self) -> None:
        """fetchPreviousMessages → previousMessagesLoaded. Node drops a fetch sent within 300 ms of
        the previous reply without any answer: the user waits out that gap first (not timed)."""
        def op() -> None:
            rules = self.server_rules()
            wait = variants.fetch_wait(rules, time.perf_counter(), self.last_fetch_reply)
            if wait > 0:
                COUNTERS.bump("fetch_paced")
                gevent.sleep(wait)
            try:
                self.sio.request(
                    "fetchPreviousMessages", {"roomId": self.room_id, "limit": 30},
                    answer="previousMessagesLoaded", match=ktb_answers.match_previous(),
                    errors=ktb.failure_events("fetchPreviousMessages"),
                    timeout=self.timeout,
                )
            finally:
                self.last_fetch_reply = time.perf_counter()

        self._run(op)

    @task
    def mark_read(self) -> None:
        """markMessagesAsRead of up to 3 received messages.

        Java: timed to our own ``messagesRead`` (the whole room gets it). Node: the sender gets
        nothing, so the emit is counted (``emitted:markMessagesAsRead``) and only the other members'
        receipt is timed (``read_receipt``, both variants)."""
        def op() -> None:
            if not self.recent_ids:
                self.chat_once()
            ids = list(self.recent_ids)[-3:]
            if not ids:
                return
            _remember_pending(_PENDING_READS, (self.user_id, tuple(ids)), time.perf_counter())
            payload = {"roomId": self.room_id, "messageIds": ids}
            if self.server_rules().read_receipt_to_sender:
                self.sio.request(
                    "markMessagesAsRead", payload, answer="messagesRead", match=ktb_answers.match_read(self.user_id, ids),
                    errors=ktb.failure_events("markMessagesAsRead"), timeout=self.timeout,
                )
            else:
                self.sio.emit("markMessagesAsRead", payload)
                COUNTERS.bump("emitted:markMessagesAsRead")

        self._run(op)

    @task
    def react(self) -> None:
        """messageReaction add then remove on a recent message → messageReactionUpdate (twice)."""
        def op() -> None:
            if not self.recent_ids:
                self.chat_once()
            if not self.recent_ids:
                return
            mid = self.recent_ids[-1]
            for kind in ("add", "remove"):
                self.sio.request(
                    "messageReaction", {"messageId": mid, "reaction": self.emoji, "type": kind},
                    answer="messageReactionUpdate", match=ktb_answers.match_reaction(mid, self.emoji, self.user_id, kind == "add"),
                    errors=ktb.failure_events("messageReaction"), timeout=self.timeout,
                )

        self._run(op)

    @task
    def rejoin(self) -> None:
        """leaveRoom then joinRoom again, never before the leave is complete.

        Java: leaveRoom is timed by its Socket.IO ack (the server acks every registered event and
        handles one socket's events in order). With ``--ktb-leave-ack off`` it is sent without an
        ack id and not timed. Node: nothing answers the leaver, so the emit is counted
        (``emitted:leaveRoom``); a member who stays times it (``leave_seen``, both variants), and
        the re-join waits until that witness, or REST, shows the leave complete.
        """
        def op() -> None:
            rules = self.server_rules()
            room = self.room_id
            done = Event()
            _remember_pending(_PENDING_LEAVES, (room, self.display_name), (time.perf_counter(), done))
            self._left_room()
            if rules.acks and self.leave_ack:
                self.sio.call("leaveRoom", room, errors=ktb.failure_events("leaveRoom"), timeout=self.timeout)
            else:
                self.sio.emit("leaveRoom", room)
                COUNTERS.bump("emitted:leaveRoom")
                if not rules.leave_in_order:
                    self._await_leave(room, done)
            self.join()

        self._run(op)


_CHAT_ERRORS = ktb.failure_events("chatMessage")


def _noop(*_: Any) -> None:
    return None


def _counter(key: str) -> Any:
    def bump(*_: Any) -> None:
        COUNTERS.bump(key)

    return bump


def _text(resp: Any) -> str:
    try:
        return resp.text or ""
    except Exception:  # noqa: BLE001 - no body at all (no response)
        return ""


def _json(resp: Any) -> dict:
    try:
        data = resp.json()
    except Exception:  # noqa: BLE001 - an empty or HTML body is a failure, not a crash
        return {}
    return data if isinstance(data, dict) else {}
