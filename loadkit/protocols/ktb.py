"""KTB Chat rules a load client needs, with no I/O: which event answers which emit, how an answer
is recognised, which ``error`` belongs to which emit, how failures are classified, and message
nonces that can never contain a banned word.

Sources: docs/ktb-servers.md (Java §5, §6, §7; Node §4, §5, §7) and docs/ktb-users.md. The servers'
texts come from :mod:`loadkit.protocols.ktb_vocab`;
what differs per variant is in :mod:`loadkit.protocols.ktb_variants`.

Banned words are 4–10 character ``[a-z0-9]`` strings matched as case-insensitive substrings, so a
text whose every run of ASCII letters/digits is at most 3 characters long can never match one.
Nonces are built that way: numbers are written in groups of at most 3 digits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from typing import Any, Callable, NamedTuple

from loadkit.protocols import ktb_vocab as V
from loadkit.protocols.errors import Rejected

# ------------------------------------------------------------------------------------ answers
#: emit -> (answer event, failure events). ``leaveRoom`` has no answer event for the leaver, so it
#: is measured with a Socket.IO ack (the Java server auto-acks registered events, docs/ktb-servers.md Java §1).
ANSWERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "joinRoom": ("joinRoomSuccess", ("joinRoomError", "error")),
    "chatMessage": ("message", ("error",)),
    "fetchPreviousMessages": ("previousMessagesLoaded", ("error",)),
    "markMessagesAsRead": ("messagesRead", ("error",)),
    "messageReaction": ("messageReactionUpdate", ("error",)),
    "leaveRoom": ("", ("error",)),  # ack
}

#: events every client may receive without asking; never counted as "unknown"
KNOWN_SERVER_EVENTS = V.KNOWN_SERVER_EVENTS

# error codes (docs/ktb-servers.md Java §5.3, §5.4; Node: ``{type: LOAD_ERROR}``) and the code-less messages of
# the other handlers (Java §5.2, §5.5, §5.6; Node §4)
CHAT_CODES = frozenset({V.MESSAGE_ERROR, V.SESSION_EXPIRED, V.RATE_LIMIT_EXCEEDED, V.MESSAGE_REJECTED})
LOAD_CODES = frozenset({V.LOAD_ERROR})
_READ_MESSAGES = frozenset({"Invalid room", "Room access denied", V.E_READ})
_REACTION_MESSAGES = frozenset({V.E_MSG_NOT_FOUND, V.E_REACTION_TYPE, V.E_REACTION, V.E_MAP_KEY})
_LEAVE_MESSAGES = frozenset({V.E_LEAVE})
_ANY_MESSAGES = frozenset({"Unauthorized", "User not found"})
CONNECT_PROBLEM = V.E_CONNECT  # sent on connect, belongs to no emit


def _text(value: Any) -> str | None:
    """A code or message as text (None stays None): a server that sends a number, a list or an
    object there must get a classified failure, not a TypeError from a set lookup."""
    return value if value is None or type(value) is str else str(value)


def error_owner(payload: Any) -> frozenset[str]:
    """Which emits an ``error`` event with this payload can answer (empty: none of ours).

    Codes decide when present; otherwise the fixed Korean/English messages of each handler.
    An unrecognised code-less message may belong to any emit that fails through ``error``.
    """
    if not isinstance(payload, dict):
        return frozenset(k for k, v in ANSWERS.items() if "error" in v[1])
    msg = _text(payload.get("message"))
    if msg in V.BENIGN_ERRORS:
        return frozenset()  # ktb-2nd's follow-up to a successful operation (docs/ktb-servers.md Node §6.2)
    code = _text(payload.get("code"))
    if code is None and _text(payload.get("type")) in LOAD_CODES:
        code = V.LOAD_ERROR  # Node: {type: "LOAD_ERROR", message}
    if code in CHAT_CODES:
        return frozenset({"chatMessage"})
    if code in LOAD_CODES:
        return frozenset({"fetchPreviousMessages"})
    if code is None:
        if msg in _READ_MESSAGES:
            return frozenset({"markMessagesAsRead"})
        if msg in _REACTION_MESSAGES or (msg or "").endswith('for model "Message"'):
            return frozenset({"messageReaction"})
        if msg in _LEAVE_MESSAGES:
            return frozenset({"leaveRoom"})
        if msg == CONNECT_PROBLEM:
            return frozenset()
        if msg in _ANY_MESSAGES:
            return frozenset({"leaveRoom", "markMessagesAsRead", "messageReaction", "joinRoom"})
    return frozenset(k for k, v in ANSWERS.items() if "error" in v[1])


def error_predicate(emit: str) -> Callable[[list[Any]], bool]:
    """Predicate for the client's ``errors=`` map: does this ``error`` event belong to ``emit``?"""

    def pred(args: list[Any]) -> bool:
        return emit in error_owner(args[0] if args else None)

    return pred


def _not_benign(args: list[Any]) -> bool:
    p = args[0] if args else None
    return not (isinstance(p, dict) and p.get("message") in V.BENIGN_ERRORS)


def _failure_events(emit: str) -> dict[str, Callable[[list[Any]], bool] | None]:
    out: dict[str, Callable[[list[Any]], bool] | None] = {}
    for ev in ANSWERS[emit][1]:
        out[ev] = error_predicate(emit) if ev == "error" else _not_benign
    return out


_FAILURE_EVENTS = {emit: _failure_events(emit) for emit in ANSWERS}


def failure_events(emit: str) -> dict[str, Callable[[list[Any]], bool] | None]:
    """The ``errors=`` map for ``SocketIOClient.request`` for a KTB emit (built once, shared:
    do not mutate)."""
    return _FAILURE_EVENTS[emit]


# ---------------------------------------------------------------------------- answer matchers
# A matcher says whether an event answers *this* request. Once the event's identifying key says it
# is ours (or the event cannot be anyone's: not even an object), every field the user then reads is
# checked here, and a wrong type raises ``ValueError`` naming the field: the client turns that into
# ``BadAnswer`` for this request alone (``correlation.PendingRequests``), a classified failure
# instead of a TypeError in the user's task later (``joinRoomSuccess`` with ``messages: 5`` killed
# every user before these checks).
def _first(args: list[Any]) -> Any:
    return args[0] if args else None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _payload(event: str, args: list[Any]) -> dict[str, Any]:
    """The event's object payload; ``ValueError`` when it is something else."""
    p = _first(args)
    if not isinstance(p, dict):
        raise ValueError(f"{event} payload is {_kind(p)}, not an object: {p!r:.80}")
    return p


def _check(ok: bool, event: str, field: str, value: Any, want: str, *, secret: bool = False) -> None:
    if not ok:  # (a secret's value, even of the wrong type, is never shown: only its type)
        shown = "" if secret else f": {value!r:.80}"
        raise ValueError(f"{event}.{field} is {_kind(value)}, not {want}{shown}")


def _check_list_of_objects(event: str, field: str, value: Any, *, required: bool = False) -> None:
    """``value`` is a list of objects (absent allowed unless ``required``); an object's ``_id``,
    when it has one, is a string."""
    if value is None and not required:
        return
    if type(value) is not list:
        _check(False, event, field, value, "a list")
    for item in value:  # (no call per item when all is well: 30 messages per join)
        if type(item) is not dict or not (item.get("_id") is None or type(item.get("_id")) is str):
            i = value.index(item)
            _check(isinstance(item, dict), event, f"{field}[{i}]", item, "an object")
            _check(False, event, f"{field}[{i}]._id", item.get("_id"), "a string")


def check_join_success(p: dict[str, Any]) -> None:
    """The fields of our ``joinRoomSuccess`` the user reads: ``participants`` (a list of objects)
    and ``messages`` (a list of objects with string ids), each optional (the short form
    ``{roomId}``), and ``hasMore`` a boolean when present."""
    ev = "joinRoomSuccess"
    if "participants" in p:
        _check_list_of_objects(ev, "participants", p["participants"], required=True)
    if "messages" in p:
        _check_list_of_objects(ev, "messages", p["messages"], required=True)
    has_more = p.get("hasMore")
    _check(has_more is None or isinstance(has_more, bool), ev, "hasMore", has_more, "a boolean")


def match_join(room_id: str) -> Callable[[list[Any]], bool]:
    """``joinRoomSuccess`` for this room (the short "already joined" form ``{roomId}`` included);
    checked (``check_join_success``) once it names our room."""

    def pred(args: list[Any]) -> bool:
        p = _payload("joinRoomSuccess", args)
        if p.get("roomId") != room_id:
            return False
        check_join_success(p)
        return True

    return pred


def _previous(args: list[Any]) -> bool:
    p = _payload("previousMessagesLoaded", args)
    _check_list_of_objects("previousMessagesLoaded", "messages", p.get("messages"), required="messages" in p)
    has_more = p.get("hasMore")
    _check(has_more is None or isinstance(has_more, bool), "previousMessagesLoaded", "hasMore", has_more, "a boolean")
    return True


def match_previous() -> Callable[[list[Any]], bool]:
    """``previousMessagesLoaded`` carries no room or request id: the next one on this socket,
    checked (an object; ``messages`` a list of objects, ``hasMore`` a boolean, when present)."""
    return _previous


def match_read(user_id: str, message_ids: list[str]) -> Callable[[list[Any]], bool]:
    """``messagesRead`` from *this* user for exactly these ids (it is broadcast to the room)."""
    ids = list(message_ids)

    def pred(args: list[Any]) -> bool:
        p = _payload("messagesRead", args)
        uid, got = p.get("userId"), p.get("messageIds")
        _check(isinstance(uid, str), "messagesRead", "userId", uid, "a string")
        if uid != user_id:
            return False
        _check(isinstance(got, list), "messagesRead", "messageIds", got, "a list")
        return bool(got == ids)

    return pred


def match_reaction(message_id: str, emoji: str, user_id: str, add: bool) -> Callable[[list[Any]], bool]:
    """``messageReactionUpdate`` for this message whose set for ``emoji`` shows our add/remove."""

    def pred(args: list[Any]) -> bool:
        p = _payload("messageReactionUpdate", args)
        if p.get("messageId") != message_id:
            return False
        reactions = p.get("reactions")
        if reactions is None:
            reactions = {}
        _check(isinstance(reactions, dict), "messageReactionUpdate", "reactions", reactions, "an object")
        users = reactions.get(emoji)
        if users is None:
            users = []
        _check(isinstance(users, list), "messageReactionUpdate", f"reactions[{emoji!r}]", users, "a list")
        return (user_id in users) if add else (user_id not in users)

    return pred


def match_content(content: str) -> Callable[[list[Any]], bool]:
    """The ``message`` broadcast echoing our own text: the server echoes no client id, so the
    (unique, trimmed) content is the correlation key. The echo's ``_id`` (the user keeps it for
    reads and reactions) must be a string."""

    def pred(args: list[Any]) -> bool:  # (the hot path: run for every `message` while a chat waits)
        p = args[0] if args else None
        if type(p) is not dict:
            p = _payload("message", args)
        if p.get("content") != content:
            return False
        mid = p.get("_id")
        if mid is not None and type(mid) is not str:
            _check(False, "message", "_id", mid, "a string")
        return True

    return pred


# ------------------------------------------------------------------------------------ failures
class KtbError(Rejected):
    """A KTB server-side failure; the text is ``CODE: message`` (Locust groups failures by it)."""

    kind = "KTB_ERROR"

    def __init__(self, code: str | None, message: str, payload: Any = None) -> None:
        self.code = code
        self.server_message = message
        self.payload = payload
        super().__init__(f"{code or self.kind}: {message}")


class RateLimited(KtbError):
    kind = "RATE_LIMIT_EXCEEDED"

    @property
    def retry_after(self) -> float:
        try:
            return max(0.0, float((self.payload or {}).get("retryAfter", 1)))
        except (TypeError, ValueError, AttributeError):
            return 1.0


class MessageRejected(KtbError):
    kind = "MESSAGE_REJECTED"


class SessionExpired(KtbError):
    """``SESSION_EXPIRED``, ``duplicate_login``, ``session_ended``: the client must log in again."""

    kind = "SESSION_EXPIRED"


class LoadError(KtbError):
    kind = "LOAD_ERROR"


class MessageError(KtbError):
    kind = "MESSAGE_ERROR"


class JoinRoomError(KtbError):
    kind = "JOIN_ROOM_ERROR"


class ServerError(KtbError):
    """An ``error`` event without a code (read, reaction, leave handlers)."""

    kind = "ERROR"


class AuthFailed(KtbError):
    """REST login/register or Socket.IO CONNECT_ERROR (``Invalid token``, ``Invalid session`` …)."""

    kind = "AUTH_FAILED"


_BY_CODE = {
    "RATE_LIMIT_EXCEEDED": RateLimited,
    "MESSAGE_REJECTED": MessageRejected,
    "SESSION_EXPIRED": SessionExpired,
    "LOAD_ERROR": LoadError,
    "MESSAGE_ERROR": MessageError,
}


def classify(event: str, payload: Any) -> KtbError:
    """Turn a failure event (``error``, ``joinRoomError``, ``session_ended``, ``duplicate_login``)
    into the exception that names its kind and carries the server's code and message."""
    if event == "duplicate_login":
        p = payload if isinstance(payload, dict) else {}
        return SessionExpired("duplicate_login", str(p.get("type", "duplicate_login")), payload)
    if event == "session_ended":
        p = payload if isinstance(payload, dict) else {}
        return SessionExpired("session_ended", f"{p.get('reason', '')} {p.get('message', '')}".strip(), payload)
    if isinstance(payload, dict):
        code = _text(payload.get("code"))
        if code is None and _text(payload.get("type")) in LOAD_CODES:
            code = V.LOAD_ERROR  # Node sends {type: "LOAD_ERROR", message} (docs/ktb-servers.md Node §4.4)
        message = str(payload.get("message", ""))
    else:
        code, message = None, "" if payload is None else str(payload)
    if event == "joinRoomError":
        return JoinRoomError(code or "JOIN_ROOM_ERROR", message, payload)
    if code == V.MESSAGE_ERROR and message == V.E_SESSION:
        # Node's stale session (its chat handler has no SESSION_EXPIRED code): same re-login
        return SessionExpired(code, message, payload)
    cls = _BY_CODE.get(code or "", ServerError)
    return cls(code, message, payload)


#: the server's text when the socket's user is not (or no longer) a participant of the room:
#: chatMessage → MESSAGE_ERROR, fetchPreviousMessages → LOAD_ERROR (docs/ktb-servers.md Java §4.5, Node §4.5)
NO_ROOM_ACCESS = V.E_ROOM_ACCESS


def lost_room_access(exc: BaseException) -> bool:
    """True for the failure that means "join the room again": the server dropped this user from
    the room's participants (e.g. the late disconnect of an older socket of the same user)."""
    return isinstance(exc, (MessageError, LoadError)) and exc.server_message == NO_ROOM_ACCESS


def rest_failure_text(status: int, body_text: str | None, error: BaseException | None, timeout_s: float) -> str:
    """What happened to a REST call, in words (never a client library's "retries exceeded" for a
    request that was sent once): the status and the server's own message, or why no answer came."""
    if status:
        msg = None
        try:
            data = json.loads(body_text or "")
        except ValueError:
            data = None
        if isinstance(data, dict):
            msg = data.get("message")
            if not msg and isinstance(data.get("error"), dict):
                msg = data["error"].get("message")  # Node's 429 / room-list errors
        detail = msg if isinstance(msg, str) and msg else (body_text or "")[:200] or "(empty body)"
        return f"HTTP {status}: {detail}"
    original = getattr(error, "original", None) or error
    seen: set[int] = set()
    while original is not None and id(original) not in seen:  # unwrap library wrappers
        seen.add(id(original))
        nxt = getattr(original, "original", None) or original.__cause__
        if nxt is None:
            break
        original = nxt
    if isinstance(original, (socket.timeout, TimeoutError)) or "timed out" in str(original).lower():
        return f"no HTTP response: timed out after {timeout_s:g} s"
    if isinstance(original, ConnectionRefusedError) or "refused" in str(original).lower():
        return "no HTTP response: connection refused"
    if isinstance(original, ConnectionResetError):
        return "no HTTP response: connection reset by the server"
    return f"no HTTP response: {type(original).__name__}: {original}"


# ----------------------------------------------------------------------------- REST answers
def json_object(body_text: str | None) -> dict[str, Any]:
    """A REST answer's body as a JSON object; ``ValueError`` saying what it is instead (an HTML
    page, truncated JSON, a list ...), so that the failure text tells the user what came back."""
    text = body_text or ""
    try:
        data = json.loads(text)
    except ValueError:
        head = " ".join(text[:60].split())
        raise ValueError(f"answer is not JSON ({len(text)} bytes: {head!r})") from None
    if not isinstance(data, dict):
        raise ValueError(f"answer is {_kind(data)}, not a JSON object")
    return data


def _user_id(data: dict[str, Any]) -> str | None:
    user = data.get("user")
    if user is None:
        return None
    _check(isinstance(user, dict), "answer", "user", user, "an object")
    uid = user.get("_id", user.get("id"))
    _check(uid is None or isinstance(uid, str), "answer", "user._id", uid, "a string")
    return uid  # type: ignore[no-any-return]


def login_answer(body_text: str | None) -> tuple[str, str, str | None]:
    """(token, sessionId, user id) of a ``POST /api/auth/login`` 200 answer; ``ValueError`` naming
    the field of the wrong type (``"user": "bob"``, a number as token ...): the login request then
    fails (``AUTH_FAILED``) instead of the user dying of an AttributeError."""
    data = json_object(body_text)
    token, sid = data.get("token"), data.get("sessionId")
    _check(isinstance(token, str) and bool(token), "answer", "token", token, "a non-empty string", secret=True)
    _check(isinstance(sid, str) and bool(sid), "answer", "sessionId", sid, "a non-empty string", secret=True)
    return str(token), str(sid), _user_id(data)


def register_answer(status: int, body_text: str | None) -> tuple[dict[str, Any], str | None]:
    """(body, user id) of a ``POST /api/auth/register`` 200/201 answer (Node's already carries a
    token, see ``ktb_variants.auth_from_register``); ``ValueError`` when it is no JSON object or
    its ``user`` has the wrong type."""
    data = json_object(body_text)
    return data, _user_id(data)


def room_answer(body_text: str | None) -> str:
    """The new room's id of a ``POST /api/rooms`` 200/201 answer (``data._id``, a string)."""
    data = json_object(body_text).get("data")
    if not isinstance(data, dict):
        _check(False, "answer", "data", data, "an object")
        raise AssertionError  # (_check raised)
    rid = data.get("_id")
    _check(isinstance(rid, str) and bool(rid), "answer", "data._id", rid, "a non-empty string")
    return str(rid)


# -------------------------------------------------------------------------------------- nonces
_ALNUM_RUN = re.compile(r"[A-Za-z0-9]{4,}")
NONCE_PREFIX = "lk "
_NONCE_RE = re.compile(r"^lk ([0-9.]+)~([0-9.]+)~([0-9.]+)~([0-9.]+)~([0-9.]+)(?:$|\s)")


def max_alnum_run(text: str) -> int:
    """Length of the longest run of ASCII letters/digits (what a banned word could hide in)."""
    best = run = 0
    for ch in text:
        if ch.isascii() and ch.isalnum():
            run += 1
            if run > best:
                best = run
        else:
            run = 0
    return best


def is_banned_word_safe(text: str) -> bool:
    """True if no 4+ character ``[A-Za-z0-9]`` run exists, so no banned word can match."""
    return _ALNUM_RUN.search(text) is None


def _grp(n: int) -> str:
    """1763724452123456 -> '1.763.724.452.123.456' (runs of at most 3 digits)."""
    return format(int(n), ",").replace(",", ".")


def host_token() -> int:
    """A number naming this host's clock (a hash of the hostname): delivery latency is only
    computed between processes that share a clock."""
    return int.from_bytes(hashlib.blake2s(socket.gethostname().encode(), digest_size=3).digest(), "big")


class Nonce(NamedTuple):
    """A parsed nonce (a NamedTuple, not a frozen dataclass: parsed for every ``message`` a room
    member receives, and a frozen dataclass's ``__init__`` alone costs ~1 us)."""

    host: int
    pid: int
    user: int
    seq: int
    sent_us: int  # sender's time.time() at emit, in microseconds

    @property
    def sender(self) -> tuple[int, int, int]:
        return (self.host, self.pid, self.user)


def content_prefix(host: int, pid: int, user: int) -> str:
    """The constant part of one sender's nonces (computed once per user)."""
    return f"{NONCE_PREFIX}{_grp(host)}~{_grp(pid)}~{_grp(user)}~"


def make_content(host: int, pid: int, user: int, seq: int, sent_us: int, prefix: str | None = None) -> str:
    """Message content carrying a nonce; always banned-word safe.

    ``lk <host>~<pid>~<user>~<seq>~<sender time.time() in us>``, every number grouped by 3 digits
    with dots, e.g. ``lk 12.345~4.242~7~19~1.763.724.452.123.456``.
    """
    if prefix is None:
        prefix = content_prefix(host, pid, user)
    # runs once per message: the grouped seconds are cached (they change once a second), the
    # microseconds are always two groups of 3 digits
    sec, us = divmod(int(sent_us), 1_000_000)
    if sec != _SEC_CACHE[0]:
        _SEC_CACHE[0], _SEC_CACHE[1] = sec, (_grp(sec) + ".") if sec else ""
    head = _SEC_CACHE[1]
    if head:
        return "%s%s~%s%03d.%03d" % (prefix, _grp(seq) if seq > 999 else seq, head, us // 1000, us % 1000)
    return f"{prefix}{_grp(seq)}~{_grp(us)}"


_SEC_CACHE: list[Any] = [-1, ""]


def parse_content(content: Any) -> Nonce | None:
    """The nonce in a message written by ``make_content`` (None for anything else)."""
    if not isinstance(content, str) or not content.startswith(NONCE_PREFIX):
        return None
    m = _NONCE_RE.match(content)
    if m is None:
        return None
    host, pid, user, seq, sent = m.groups()
    return _new_nonce(Nonce, (int(host.replace(".", "")), int(pid.replace(".", "")), int(user.replace(".", "")),
                              int(seq.replace(".", "")), int(sent.replace(".", ""))))


_new_nonce = tuple.__new__


def default_pid() -> int:
    return os.getpid()
