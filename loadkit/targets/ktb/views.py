"""JSON shapes exactly as the Java server serialises them (docs/ktb-servers.md Java §3 and §8).

The same object has several shapes depending on the code path that built it (live ``message`` vs
history, the RoomController vs RoomService mapper), so each shape has its own function here.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from .store import Message, Room, Store, User

RECENT_WINDOW_MS = 10 * 60 * 1000


class NotAString(ValueError):
    """A JSON object or array where the Java server expects a String: Jackson cannot deserialise it."""


def jackson_str(v: Any) -> str | None:
    """Jackson's String coercion: scalars become text, objects/arrays raise :class:`NotAString`."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    raise NotAString


def iso_instant(ms: int) -> str:
    """Java ``Instant.toString()`` for a millisecond instant (fraction dropped when zero)."""
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = ms % 1000
    return f"{base}.{frac:03d}Z" if frac else f"{base}Z"


def local_datetime_array(ms: int) -> list[int]:
    """Jackson's array form of a ``LocalDateTime`` (seconds/nanos omitted when zero)."""
    t = time.localtime(ms // 1000)
    out = [t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min]
    nanos = (ms % 1000) * 1_000_000
    if t.tm_sec or nanos:
        out.append(t.tm_sec)
        if nanos:
            out.append(nanos)
    return out


def user_response(u: User, *, profile: str = "empty") -> dict[str, Any]:
    """``UserResponse`` ``{id,name,email,profileImage}``.

    profile: "empty" = ``UserResponse.from`` ("" when null); "null" = null kept (REST, service
    mapper); "omit" = key left out when null (socket JSON is NON_NULL).
    """
    d: dict[str, Any] = {"id": u.id, "name": u.name, "email": u.email}
    if u.profile_image is not None:
        d["profileImage"] = u.profile_image
    elif profile == "empty":
        d["profileImage"] = ""
    elif profile == "null":
        d["profileImage"] = None
    return d


def auth_user(u: User) -> dict[str, Any]:
    """The ``user`` object of the login/register/verify-token REST answers (key ``_id``)."""
    return {"_id": u.id, "name": u.name, "email": u.email, "profileImage": u.profile_image}


def room_response(store: Store, room: Room, *, profile: str) -> dict[str, Any]:
    """``RoomResponse``; ``profile`` as in :func:`user_response` (controller mapper = "empty")."""
    users = store.users
    creator = users.get(room.creator)
    parts = [user_response(users[p], profile=profile) for p in room.participants if p in users]
    return {
        "_id": room.id,
        "name": room.name,
        "hasPassword": room.has_password,
        "creator": user_response(creator, profile=profile) if creator else None,
        "participants": parts,
        "participantsCount": len(room.participants),
        "createdAt": iso_instant(room.created_at),
        "recentMessageCount": store.count_recent(room.id, int(time.time() * 1000) - RECENT_WINDOW_MS),
    }


def live_message(m: Message, sender: User | None, file: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``message`` event built by ``ChatMessageHandler`` (no ``readers`` key)."""
    d: dict[str, Any] = {"_id": m.id, "room": m.room, "content": m.content}
    if sender is not None:
        d["sender"] = {"id": sender.id, "name": sender.name, "email": sender.email,
                       "profileImage": sender.profile_image or ""}
    d["type"] = m.type
    if file is not None:
        d["file"] = {
            "_id": file["_id"], "filename": file["filename"], "originalname": file["originalname"],
            "mimetype": file["mimetype"], "size": file["size"], "user": file["user"],
            "uploadDate": local_datetime_array(file["uploadDate"]),
        }
    d["timestamp"] = m.ts
    d["reactions"] = m.reactions or {}
    d["metadata"] = m.metadata or {}
    return d


def system_message(m: Message) -> dict[str, Any]:
    """A join/leave system ``message`` (``MessageResponseMapper``: readers present, no sender)."""
    return {"_id": m.id, "room": m.room, "content": m.content, "type": "system", "timestamp": m.ts,
            "reactions": m.reactions or {}, "readers": [], "metadata": m.metadata or {}}


def history_message(store: Store, m: Message, readers: list[tuple[str, int]]) -> dict[str, Any]:
    """A message inside ``joinRoomSuccess``/``previousMessagesLoaded`` (``MessageResponseMapper``)."""
    d: dict[str, Any] = {"_id": m.id, "room": m.room, "content": m.content}
    if m.sender is not None and m.type != "ai":
        u = store.users.get(m.sender)
        if u is not None:
            d["sender"] = user_response(u, profile="omit")
    d["type"] = m.type
    if m.file_id is not None:
        f = store.files.get(m.file_id)
        if f is not None:
            d["file"] = {k: f[k] for k in ("_id", "filename", "originalname", "mimetype", "size")}
    d["timestamp"] = m.ts
    d["reactions"] = m.reactions or {}
    d["readers"] = [{"userId": uid, "readAt": local_datetime_array(at)} for uid, at in readers]
    d["metadata"] = m.metadata or {}
    return d
