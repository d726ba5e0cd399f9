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
def _first(args: list[Any]) -> Any:
    return args[0] if args else None


def match_join(room_id: str) -> Callable[[list[Any]], bool]:
    """``joinRoomSuccess`` for this room (the short "already joined" form ``{roomId}`` included)."""
    return lambda args: isinstance(_first(args), dict) and args[0].get("roomId") == room_id


def match_previous() -> None:
    """``previousMessagesLoaded`` carries no room or request id: the next one on this socket."""
    return None


def match_read(user_id: str, message_ids: list[str]) -> Callable[[list[Any]], bool]:
    """``messagesRead`` from *this* user for exactly these ids (it is broadcast to the room)."""
    ids = list(message_ids)
    return lambda args: isinstance(_first(args), dict) and args[0].get("userId") == user_id and args[0].get("messageIds") == ids


def match_reaction(message_id: str, emoji: str, user_id: str, add: bool) -> Callable[[list[Any]], bool]:
    """``messageReactionUpdate`` for this message whose set for ``emoji`` shows our add/remove."""

    def pred(args: list[Any]) -> bool:
        p = _first(args)
        if not isinstance(p, dict) or p.get("messageId") != message_id:
            return False
        users = (p.get("reactions") or {}).get(emoji) or ()
        return (user_id in users) if add else (user_id not in users)

    return pred


def match_content(content: str) -> Callable[[list[Any]], bool]:
    """The ``message`` broadcast echoing our own text: the server echoes no client id, so the
    (unique, trimmed) content is the correlation key."""
    return lambda args: isinstance(_first(args), dict) and args[0].get("content") == content


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
