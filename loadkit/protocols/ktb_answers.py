"""KTB Chat answers a load client reads, with no I/O: whether an event answers *this* request (the
matchers given to ``SocketIOClient.request``), with the check of every field the user then reads,
and the parsing of the REST answers (login, register, room creation).

A wrong type is a ``ValueError`` naming the field: the client turns a matcher's into ``BadAnswer``
for that request alone, the user turns a REST parser's into the failure of that REST call; never a
TypeError in a task later. Which events answer which emit, and how failures are classified, is in
:mod:`loadkit.protocols.ktb`; sources: docs/ktb-servers.md and docs/ktb-users.md.
"""

from __future__ import annotations

import json
from typing import Any, Callable

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
