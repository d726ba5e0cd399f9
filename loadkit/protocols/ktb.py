"""KTB Chat rules a load client needs, with no I/O: which event answers which emit, which ``error``
belongs to which emit, and how failures (Socket.IO events and REST calls) are classified.

Sources: docs/ktb-servers.md (Java §5, §6, §7; Node §4, §5, §7) and docs/ktb-users.md. The servers'
texts come from :mod:`loadkit.protocols.ktb_vocab`;
what differs per variant is in :mod:`loadkit.protocols.ktb_variants`. Whether an event answers
*this* request, with the check of the fields a user reads, and the REST answers' parsing are in
:mod:`loadkit.protocols.ktb_answers`; message nonces in :mod:`loadkit.protocols.ktb_nonce`.
"""

from __future__ import annotations

import json
import socket
from typing import Any, Callable

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

