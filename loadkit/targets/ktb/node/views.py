"""The JSON shapes the Node server sends (§5): users, live and history messages, rooms, ISO times."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from ..store import Message, Room, Store, User

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")


def iso(ms: int) -> str:
    """``Date.prototype.toISOString()``: UTC, always milliseconds and ``Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_before(v: Any) -> int | None:
    """``new Date(before)`` for an ISO string or epoch ms; None when absent; ValueError if unparsable."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ValueError("bad date")
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str):
        try:
            return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            if v.strip().lstrip("-").isdigit():
                return int(v)
    raise ValueError("bad date")


def cast_error(value: Any, model: str) -> str:
    """The mongoose text for a malformed ObjectId (seen as ``joinRoomError``/``error`` messages)."""
    return f'Cast to ObjectId failed for value "{value}" (type {type(value).__name__ if not isinstance(value, str) else "string"}) at path "_id" for model "{model}"'


def socket_user(u: User) -> dict[str, Any]:
    return {"_id": u.id, "name": u.name, "email": u.email, "profileImage": u.profile_image or ""}


def rest_user(u: User) -> dict[str, Any]:
    return {"_id": u.id, "name": u.name, "email": u.email}


def live_message(m: Message, sender: User | None) -> dict[str, Any]:
    """A live ``message`` (§5): ``_id`` and ``id``, ISO times, no ``__v``/``updatedAt``."""
    d: dict[str, Any] = {"_id": m.id, "id": m.id, "room": m.room, "content": m.content}
    if sender is not None:
        d["sender"] = socket_user(sender)
    t = iso(m.ts)
    d.update({"type": m.type, "mentions": [], "timestamp": t, "reactions": m.reactions or {},
              "metadata": m.metadata or {}, "readers": [], "createdAt": t})
    return d


def history_message(store: Store, m: Message, readers: list[tuple[str, int]]) -> dict[str, Any]:
    """A message inside ``joinRoomSuccess``/``previousMessagesLoaded`` (§5): no ``id``, with
    ``isDeleted``, ``updatedAt``, ``__v`` and ``readers:[{userId, readAt, _id}]``."""
    d: dict[str, Any] = {"_id": m.id, "room": m.room, "content": m.content}
    if m.sender is not None:
        u = store.users.get(m.sender)
        if u is not None:
            d["sender"] = socket_user(u)
    t = iso(m.ts)
    d.update({"type": m.type, "mentions": [], "timestamp": t, "reactions": m.reactions or {},
              "metadata": m.metadata or {}, "isDeleted": False,
              "readers": [{"userId": uid, "readAt": iso(at), "_id": store.ids.new()} for uid, at in readers],
              "createdAt": t, "updatedAt": t, "__v": 0})
    return d


def room_doc(store: Store, room: Room) -> dict[str, Any]:
    users = store.users
    creator = users.get(room.creator)
    return {"_id": room.id, "name": room.name,
            "creator": rest_user(creator) if creator else None, "hasPassword": room.has_password,
            "participants": [rest_user(users[p]) for p in room.participants if p in users],
            "createdAt": iso(room.created_at), "__v": 0}
