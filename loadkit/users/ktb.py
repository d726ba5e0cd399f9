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

This module keeps the user class: its settings, the session lifecycle and the tasks. The rest of
the user is in modules with one job each: the ``--ktb-*`` options and their checks
(:mod:`loadkit.users.ktb_options`), the REST calls (:mod:`loadkit.users.ktb_rest`), the reactions
to server-initiated events (:mod:`loadkit.users.ktb_events`) and the process-wide state
(:mod:`loadkit.users.ktb_state`).
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from locust import task

from loadkit.protocols.ktb_vocab import E_ROOM_NOT_FOUND
from loadkit.clients.socketio import Disconnect, ErrorAnswer, SocketIOError
from loadkit.protocols import ktb, ktb_answers, ktb_nonce
from loadkit.protocols import ktb_variants as variants
from loadkit.users import ktb_state as state
from loadkit.users.ktb_events import KtbServerEvents
from loadkit.users.ktb_options import _opt, parse_weights
from loadkit.users.ktb_rest import KtbRestCalls, RestSession, decide_variant
from loadkit.users.ktb_state import COUNTERS, REQUEST_TYPE
from loadkit.users.socketio import SocketIOUser

log = logging.getLogger(__name__)

LEAVE_WITNESS_WAIT_S = 2.0  # then ask REST whether the leave is complete
JOIN_ATTEMPTS = 3


class KtbChatUser(KtbRestCalls, KtbServerEvents, SocketIOUser):
    """Abstract KTB chat user; subclass it in a locustfile (see locustfiles/ktb_chat.py)."""

    abstract = True
    request_type = REQUEST_TYPE
    host_schemes = ("http", "https")  # what --host must be (loadkit.options)
    host_example = "http://127.0.0.1:5001"
    emoji = "👍"

    def __init__(self, environment: Any) -> None:
        env = environment
        self.user_no = next(state.USER_SEQ)
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
        self.run_id = _opt(env, "ktb_run_id") or state.RUN_ID
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
        self._keep_secret()
        self.room_id: str | None = None
        self.seq = 0
        self.recent_ids: deque = deque(maxlen=20)
        self.need_session = True
        self.need_join = False  # set when the server dropped us from the room (see _handle)
        self.me = (state.HOST, state.PID, self.user_no)
        self.content_prefix = ktb_nonce.content_prefix(state.HOST, state.PID, self.user_no)
        self.email = self.account_email()
        # unique per process too: the leave notice "<name>님이 퇴장하였습니다." names the leaver
        self.display_name = f"lk user {self.user_no} p{state.PID}"
        self._wire_handlers()

    # ------------------------------------------------------------------ identity & wait time
    def account_email(self) -> str:
        """Unique per user and per process/worker (the server allows one session per user)."""
        worker = getattr(getattr(self.environment, "runner", None), "worker_index", 0)
        return f"lk-{self.run_id}-w{worker}-{state.PID}-u{self.user_no}@loadkit.test"

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
            slot = state.VARIANTS.get(key)
            if slot is None:
                slot = state.VARIANTS[key] = AsyncResult()
                try:
                    name, why = decide_variant(self.host, self.socket_url, self.server_opt, self.rest_timeout,
                                               self.verify_tls)
                except Exception as exc:  # noqa: BLE001 - never fatal: the Java shape is the old default
                    name, why = variants.JAVA, f"detection failed ({type(exc).__name__}: {exc}), assuming java"
                log.info("loadkit: KTB server variant %s (%s)", name, why)
                hint = variants.one_url_java_hint(name, self.host, self.socket_url)
                if hint:
                    log.warning("loadkit: %s", hint)
                slot.set(name)
            self.rules = variants.RULES[slot.get()]
            if self.rules.min_connect_timeout_s > self.sio.raw.connect_timeout:
                self.sio.raw.connect_timeout = self.rules.min_connect_timeout_s
        return self.rules

    # ------------------------------------------------------------------ server-initiated events

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
        state.STARTING.add(self.user_no)
        try:
            self.ensure_session()
        finally:
            state.STARTING.discard(self.user_no)
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
            if not state.STARTING and (spawning is None or spawning.dead):
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
                state.JOINED.setdefault(self.room_id, set()).add(self.user_no)
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
            state.JOINED.get(self.room_id, set()).discard(self.user_no)

    def _await_leave(self, room: str, done: Event) -> None:
        """Node: ``leaveRoom`` completes asynchronously and tells the leaver nothing. Known complete
        when a witness in this process saw the leave notice, else when REST no longer lists us."""
        others = state.JOINED.get(room, set()) - {self.user_no}
        if others and done.wait(min(self.timeout, LEAVE_WITNESS_WAIT_S)):
            return
        self._await_left_via_rest(room)

    def next_content(self) -> str:
        self.seq += 1
        content = ktb_nonce.make_content(state.HOST, state.PID, self.user_no, self.seq, int(time.time() * 1_000_000), self.content_prefix)
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
            state.remember_pending(state.PENDING_READS, (self.user_id, tuple(ids)), time.perf_counter())
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
            state.remember_pending(state.PENDING_LEAVES, (room, self.display_name), (time.perf_counter(), done))
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
