"""The Java variant's Socket.IO handlers: handshake auth and the six client events (docs/ktb-servers.md Java §4–§7).

The server they are registered on (python-socketio adapted to netty-socketio's behaviour) is
``socket_server.py``; this module holds only what the Java server does with each event.

Handlers run inline in each connection's reader greenlet (``async_handlers=False``), so one socket's
events are processed in order, as on netty's event loop, and no greenlet is spawned per event.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import gevent

from .auth import Auth, FixedWindowLimiter, InvalidToken
from .banned import BannedWordChecker
from .socket_server import DROP, AppliedDelay, KtbSocketServer, RefuseConnection
from .store import Room, Store, User
from .views import NotAString, history_message, jackson_str, live_message, system_message, user_response

log = logging.getLogger("loadkit.ktb.socket")

# error texts (docs/ktb-servers.md Java §5): the vocabulary shared with the load users
from loadkit.protocols.ktb_vocab import (  # noqa: E402
    E_BANNED, E_CONNECT, E_FILE_ACCESS, E_FILE_DATA, E_ID_NULL, E_LEAVE, E_MSG_NOT_FOUND, E_NO_DATA,
    E_NO_ROOM_INFO, E_RATE, E_REACTION, E_REACTION_TYPE, E_READ, E_ROOM_ACCESS, E_ROOM_NOT_FOUND, E_SESSION,
    SESSION_ENDED_DUP,
)

# event -> (error event, code, message) sent when a handler fails unexpectedly (Java's catch blocks)
FALLBACK_ERRORS: dict[str, tuple[str, str | None, str]] = {
    "joinRoom": ("joinRoomError", None, "채팅방 입장에 실패했습니다."),
    "chatMessage": ("error", "MESSAGE_ERROR", "메시지 전송 중 오류가 발생했습니다."),
    "fetchPreviousMessages": ("error", "LOAD_ERROR", "이전 메시지를 불러오는 중 오류가 발생했습니다."),
    "markMessagesAsRead": ("error", None, "읽음 상태 업데이트 중 오류가 발생했습니다."),
    "messageReaction": ("error", None, "리액션 처리 중 오류가 발생했습니다."),
}


@dataclass(slots=True)
class SocketUser:
    id: str
    name: str
    session_id: str
    sid: str


def _str_arg(v: Any) -> Any:
    """Jackson String coercion for a handler argument; ``DROP`` when it cannot deserialise."""
    try:
        return jackson_str(v)
    except NotAString:
        return DROP


def _long_arg(v: Any) -> Any:
    """Jackson Integer/Long coercion (numbers, numeric strings); ``DROP`` otherwise."""
    if v is None:
        return None
    if isinstance(v, bool):
        return DROP
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v == v and abs(v) < 9.3e18 else DROP
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            return int(s)
        except ValueError:
            return DROP
    return DROP


class ChatSockets:
    """Registers the KTB event handlers on a ``KtbSocketServer`` and holds the per-socket state."""

    def __init__(
        self, sio: KtbSocketServer, store: Store, auth: Auth, banned: BannedWordChecker, *,
        rate_limit: int = 10000, duplicate_login_delay: float = 10.0, delay_ms: float = 0.0,
    ) -> None:
        self.sio = sio
        self.store = store
        self.auth = auth
        self.banned = banned
        self.limiter = FixedWindowLimiter(rate_limit, 60)
        self.duplicate_login_delay = duplicate_login_delay
        self.delay = AppliedDelay(delay_ms / 1000.0) if delay_ms > 0 else None
        self.sock_users: dict[str, SocketUser] = {}  # sid -> user ("user" attribute of the Java client)
        self.connected_users: dict[str, str] = {}  # userId -> latest sid (ConnectedUsers)
        self.user_rooms: dict[str, dict[str, None]] = {}  # userId -> ordered room ids (UserRooms)
        handlers: dict[str, Callable[..., Any]] = {
            "connect": self.on_connect,
            "disconnect": self.on_disconnect,
            "joinRoom": self.on_join_room,
            "leaveRoom": self.on_leave_room,
            "chatMessage": self.on_chat_message,
            "fetchPreviousMessages": self.on_fetch_previous,
            "markMessagesAsRead": self.on_mark_read,
            "messageReaction": self.on_reaction,
        }
        for event, fn in handlers.items():
            sio.on(event, self._guarded(event, fn) if event in FALLBACK_ERRORS else fn)

    def _guarded(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Java's catch-all per handler: an unexpected exception becomes the handler's error event."""
        name, code, message = FALLBACK_ERRORS[event]

        def handler(sid: str, *args: Any) -> Any:
            try:
                return fn(sid, *args)
            except Exception as exc:
                log.exception("%s handler failed", event)
                payload = {"code": code, "message": str(exc) or message} if code else {"message": message}
                self.sio.emit(name, payload, to=sid)
                return None

        return handler

    # ------------------------------------------------------------------ helpers
    def _emit(self, event: str, data: Any, to: str) -> None:
        self.sio.emit(event, data, to=to)

    def _error(self, sid: str, code: str | None, message: str, **extra: Any) -> None:
        payload: dict[str, Any] = {"code": code, "message": message} if code else {"message": message}
        payload.update(extra)
        self.sio.emit("error", payload, to=sid)

    def _participants(self, room: Room) -> list[dict[str, Any]]:
        users = self.store.users
        return [user_response(users[p]) for p in room.participants if p in users]

    # ------------------------------------------------------------------ connect / disconnect
    def on_connect(self, sid: str, environ: dict, auth: Any = None) -> Any:
        try:
            return self._authenticate(sid, environ)
        except RefuseConnection:
            raise
        except Exception as exc:  # Java: any other exception in the auth listener → {"message": text}
            log.exception("connect handler failed")
            raise RefuseConnection({"message": str(exc)} if str(exc) else "Internal error") from None

    def _authenticate(self, sid: str, environ: dict) -> Any:
        raw = self.sio.raw_auth
        if raw is None:
            return True  # no auth payload at all: Java's listener is not called, socket stays anonymous
        if not isinstance(raw, dict):
            raise RefuseConnection({"message": f"class {type(raw).__name__} cannot be cast to class java.util.Map"})
        token, session_id = raw.get("token"), raw.get("sessionId")
        if token is None or session_id is None:
            raise RefuseConnection("Authentication error")
        token, session_id = str(token) if not isinstance(token, str) else token, \
            str(session_id) if not isinstance(session_id, str) else session_id
        try:
            claims = self.auth.decode(token)
        except InvalidToken:
            raise RefuseConnection({"message": "Invalid token"}) from None
        user_id = claims["userId"]
        if not self.auth.validate_session(user_id, session_id):
            raise RefuseConnection({"message": "Invalid session"})
        user = self.store.users.get(user_id)
        if user is None:
            raise RefuseConnection({"message": "User not found"})
        self._on_authenticated(sid, environ, user, session_id)
        return True

    def _on_authenticated(self, sid: str, environ: dict, user: User, session_id: str) -> None:
        """``ConnectionLoginHandler.onConnect``: duplicate-login notice, restore rooms, join user rooms."""
        old_sid = self.connected_users.get(user.id)
        if old_sid is not None and old_sid != sid and old_sid in self.sock_users:
            ua = environ.get("HTTP_USER_AGENT")
            if ua is None:
                # Java builds the notice with Map.of(...), which throws on a null User-Agent: the old
                # socket hears nothing and the new one is left without a user.
                self.sio.emit_soon("error", {"message": E_CONNECT}, sid)
                return
            addr = f"/{environ.get('REMOTE_ADDR', '')}:{environ.get('REMOTE_PORT', '')}"
            self.sio.emit_soon("duplicate_login", {"type": "new_login_attempt", "deviceInfo": ua,
                                                   "ipAddress": addr, "timestamp": int(time.time() * 1000)}, old_sid)
            gevent.spawn_later(self.duplicate_login_delay, self._session_ended, old_sid)
        self.sock_users[sid] = SocketUser(user.id, user.name, session_id, sid)
        for room_id in list(self.user_rooms.get(user.id, ())):
            self._join(sid, room_id)
        self.connected_users[user.id] = sid
        self.sio.enter_room(sid, f"user:{user.id}")
        self.sio.enter_room(sid, "room-list")

    def _session_ended(self, old_sid: str) -> None:
        self._emit("session_ended", {"reason": "duplicate_login", "message": SESSION_ENDED_DUP}, old_sid)

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        su = self.sock_users.pop(sid, None)
        if su is None:
            return
        for room_id in list(self.user_rooms.get(su.id, ())):
            try:
                self._leave(sid, su, room_id)
            except Exception:
                log.exception("leave on disconnect failed")
        if self.connected_users.get(su.id) == sid:
            del self.connected_users[su.id]

    # ------------------------------------------------------------------ joinRoom / leaveRoom
    def on_join_room(self, sid: str, *args: Any) -> Any:
        room_id = _str_arg(args[0]) if args else None
        if room_id is DROP:
            return DROP
        if self.delay:
            self.delay()
        su = self.sock_users.get(sid)
        if su is None:
            self.sio.emit("joinRoomError", {"message": "Unauthorized"}, to=sid)
            return None
        if su.id not in self.store.users:
            self.sio.emit("joinRoomError", {"message": "User not found"}, to=sid)
            return None
        if room_id is None:
            self.sio.emit("joinRoomError", {"message": E_ID_NULL}, to=sid)
            return None
        if room_id not in self.store.rooms:
            self.sio.emit("joinRoomError", {"message": E_ROOM_NOT_FOUND}, to=sid)
            return None
        self._join(sid, room_id)
        return None

    def _join(self, sid: str, room_id: str) -> None:
        su = self.sock_users[sid]
        rooms_of_user = self.user_rooms.setdefault(su.id, {})
        if room_id in rooms_of_user:
            self.sio.enter_room(sid, room_id)
            self.sio.emit_soon("joinRoomSuccess", {"roomId": room_id}, sid)
            return
        store = self.store
        room = store.rooms.get(room_id)
        user = store.users.get(su.id)
        if room is None or user is None:
            self.sio.emit_soon("joinRoomError", {"message": E_ROOM_NOT_FOUND}, sid)
            return
        store.add_participant(room, su.id)
        self.sio.enter_room(sid, room_id)
        rooms_of_user[room_id] = None
        sys_msg = store.add_message(room, f"{user.name}님이 입장하였습니다.", None, "system")
        messages, has_more = store.messages_before(room_id, None, 30)
        readers = store.readers_of(m.id for m in messages)
        history = [history_message(store, m, readers.get(m.id, [])) for m in messages]
        store.mark_read([m.id for m in messages], su.id)
        self.sio.emit_soon("joinRoomSuccess", {"roomId": room_id, "participants": self._participants(room),
                                               "messages": history, "hasMore": has_more, "activeStreams": []}, sid)
        self.sio.emit_soon("message", system_message(sys_msg), room_id)
        self.sio.emit_soon("participantsUpdate", self._participants(room), room_id)

    def on_leave_room(self, sid: str, *args: Any) -> Any:
        room_id = _str_arg(args[0]) if args else None
        if room_id is DROP:
            return DROP
        su = self.sock_users.get(sid)
        if su is None:
            self._error(sid, None, "Unauthorized")
            return None
        try:
            self._leave(sid, su, room_id)
        except Exception:
            log.exception("leaveRoom failed")
            self._error(sid, None, E_LEAVE)
        return None

    def _leave(self, sid: str, su: SocketUser, room_id: str | None) -> None:
        rooms_of_user = self.user_rooms.get(su.id)
        if room_id is None or not rooms_of_user or room_id not in rooms_of_user:
            return
        store = self.store
        room = store.rooms.get(room_id)
        user = store.users.get(su.id)
        if room is None or user is None:
            return
        store.remove_participant(room, su.id)
        self.sio.leave_room(sid, room_id)
        del rooms_of_user[room_id]
        sys_msg = store.add_message(room, f"{user.name}님이 퇴장하였습니다.", None, "system")
        self._emit("message", system_message(sys_msg), room_id)
        participants = self._participants(room)
        if participants:
            self._emit("participantsUpdate", participants, room_id)
        self._emit("userLeft", {"userId": user.id, "userName": user.name}, room_id)

    # ------------------------------------------------------------------ chatMessage (hot path)
    def on_chat_message(self, sid: str, *args: Any) -> Any:
        data = args[0] if args else None
        if data is not None and not isinstance(data, dict):
            return DROP
        if self.delay:
            self.delay()
        if data is None:
            self._error(sid, "MESSAGE_ERROR", E_NO_DATA)
            return None
        room_id, mtype, content, msg = (_str_arg(data.get(k)) for k in ("room", "type", "content", "msg"))
        file_data = data.get("fileData")
        if DROP in (room_id, mtype, content, msg) or (file_data is not None and not isinstance(file_data, dict)):
            return DROP
        su = self.sock_users.get(sid)
        if su is None or not self.auth.validate_session(su.id, su.session_id):
            self._error(sid, "SESSION_EXPIRED", E_SESSION)
            return None
        allowed, _, _, retry_after = self.limiter.hit(su.id)
        if not allowed:
            self._error(sid, "RATE_LIMIT_EXCEEDED", E_RATE, retryAfter=retry_after)
            return None
        store = self.store
        user = store.users.get(su.id)
        if user is None:
            self._error(sid, "MESSAGE_ERROR", "User not found")
            return None
        if room_id is None or not room_id.strip():
            self._error(sid, "MESSAGE_ERROR", E_NO_ROOM_INFO)
            return None
        room = store.rooms.get(room_id)
        if room is None or su.id not in room.participants:
            self._error(sid, "MESSAGE_ERROR", E_ROOM_ACCESS)
            return None
        text = content if content and content.strip() else (msg or "")
        text = text.strip()
        if self.banned.contains_banned(text):
            self._error(sid, "MESSAGE_REJECTED", E_BANNED)
            return None
        if mtype is None or mtype == "text":
            if not text:
                return None  # blank text: silently ignored
            m = store.add_message(room, text, user.id, "text")
            self._emit("message", live_message(m, user), room_id)
            return None
        if mtype != "file":
            self._error(sid, "MESSAGE_ERROR", f"Unsupported message type: {mtype}")
            return None
        fid = file_data.get("_id") if file_data else None
        if fid is None:
            self._error(sid, "MESSAGE_ERROR", E_FILE_DATA)
            return None
        if not isinstance(fid, str):
            self._error(sid, "MESSAGE_ERROR",
                        f"class {type(fid).__name__} cannot be cast to class java.lang.String")
            return None
        f = store.files.get(fid)
        if f is None or f["user"] != user.id:
            self._error(sid, "MESSAGE_ERROR", E_FILE_ACCESS)
            return None
        meta = {"fileType": f["mimetype"], "fileSize": f["size"], "originalName": f["originalname"]}
        m = store.add_message(room, text, user.id, "file", file_id=fid, metadata=meta)
        self._emit("message", live_message(m, user, f), room_id)
        return None

    # ------------------------------------------------------------------ history
    def on_fetch_previous(self, sid: str, *args: Any) -> Any:
        data = args[0] if args else None
        if data is not None and not isinstance(data, dict):
            return DROP
        su = self.sock_users.get(sid)
        if su is None or data is None:
            return DROP  # Java NPEs outside its try block: nothing is emitted, no ack
        room_id, limit, before = _str_arg(data.get("roomId")), _long_arg(data.get("limit")), _long_arg(data.get("before"))
        if DROP in (room_id, limit, before):
            return DROP
        if room_id is None:
            self._error(sid, "LOAD_ERROR", E_ID_NULL)
            return None
        store = self.store
        room = store.rooms.get(room_id)
        if room is None or su.id not in room.participants:
            self._error(sid, "LOAD_ERROR", E_ROOM_ACCESS)
            return None
        if limit is None or limit <= 0:
            limit = 30
        messages, has_more = store.messages_before(room_id, before if before and before > 0 else None, limit)
        readers = store.readers_of(m.id for m in messages)
        history = [history_message(store, m, readers.get(m.id, [])) for m in messages]
        store.mark_read([m.id for m in messages], su.id)
        self.sio.emit("messageLoadStart", to=sid)
        self.sio.emit("previousMessagesLoaded", {"messages": history, "hasMore": has_more}, to=sid)
        return None

    # ------------------------------------------------------------------ read receipts
    def on_mark_read(self, sid: str, *args: Any) -> Any:
        data = args[0] if args else None
        if data is not None and not isinstance(data, dict):
            return DROP
        ids = data.get("messageIds") if data else None
        if ids is not None and not isinstance(ids, list):
            return DROP
        ids_s = [_str_arg(i) for i in ids] if ids else []
        if DROP in ids_s:
            return DROP
        if self.delay:
            self.delay()
        su = self.sock_users.get(sid)
        if su is None:
            self._error(sid, None, E_READ)
            return None
        if not ids_s:
            return None
        store = self.store
        if ids_s[0] is None:
            self._error(sid, None, E_READ)
            return None
        first = store.get_message(ids_s[0])
        if first is None:
            self._error(sid, None, "Invalid room")
            return None
        if su.id not in store.users:
            self._error(sid, None, "User not found")
            return None
        room = store.rooms.get(first.room)
        if room is None or su.id not in room.participants:
            self._error(sid, None, "Room access denied")
            return None
        found = store.existing_message_ids([i for i in ids_s if i is not None])
        store.mark_read(found, su.id)
        self._emit("messagesRead", {"userId": su.id, "messageIds": ids_s}, room.id)
        return None

    # ------------------------------------------------------------------ reactions
    def on_reaction(self, sid: str, *args: Any) -> Any:
        data = args[0] if args else None
        if data is not None and not isinstance(data, dict):
            return DROP
        fields = [_str_arg(data.get(k)) for k in ("messageId", "type", "reaction", "emoji")] if data else [None] * 4
        if DROP in fields:
            return DROP
        message_id, rtype, reaction, emoji = fields
        su = self.sock_users.get(sid)
        if su is None or data is None or message_id is None:
            self._error(sid, None, E_REACTION)
            return None
        store = self.store
        m = store.get_message(message_id)
        if m is None:
            self._error(sid, None, E_MSG_NOT_FOUND)
            return None
        if rtype not in ("add", "remove"):
            self._error(sid, None, E_REACTION_TYPE)
            return None
        key = reaction if reaction is not None else emoji
        if key is None:
            self._error(sid, None, E_REACTION)  # Java: null map key fails to serialise
            return None
        reactions = m.reactions or {}
        users = reactions.get(key, [])
        if rtype == "add":
            if su.id not in users:
                reactions[key] = users + [su.id]
        else:
            if su.id in users:
                users = [u for u in users if u != su.id]
                if users:
                    reactions[key] = users
                else:
                    reactions.pop(key, None)
        m.reactions = reactions
        store.set_reactions(m)
        self._emit("messageReactionUpdate", {"messageId": m.id, "reactions": reactions}, m.room)
        return None
