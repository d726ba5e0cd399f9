"""The Socket.IO half of the KTB server: handshake auth and the six client events (docs/ktb-servers.md Java §4–§7).

Built on python-socketio's ``socketio.Server`` (Engine.IO 4 / Socket.IO 5, websocket and polling).
``KtbSocketServer`` adds what netty-socketio does differently from python-socketio:

* undecodable Engine.IO / Socket.IO packets and handler errors are logged and dropped, the
  connection stays usable (netty-socketio's ``exceptionCaught`` path) — no traceback spam, no ack;
* ``40`` (no auth) and ``40{}`` (empty auth) are told apart, as the Java auth listener does;
* CONNECT_ERROR data is sent verbatim (a bare string or ``{"message": ...}``);
* events a handler emits while the connection is being accepted are delivered right after the
  CONNECT ack (socket.io-client buffers them that way against Java).

Handlers run inline in each connection's reader greenlet (``async_handlers=False``), so one socket's
events are processed in order, as on netty's event loop, and no greenlet is spawned per event.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import engineio
import gevent
import socketio
from socketio import packet as sio_packet

from . import jsonfast
from .auth import Auth, FixedWindowLimiter, InvalidToken
from .banned import BannedWordChecker
from .store import Room, Store, User
from .views import NotAString, history_message, jackson_str, live_message, system_message, user_response

log = logging.getLogger("loadkit.ktb.socket")

DROP = object()  # handler result: the payload did not deserialise → no answer, no ack (Java drops it)

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


class RefuseConnection(socketio.exceptions.ConnectionRefusedError):
    """CONNECT_ERROR whose data is sent as given (python-socketio would wrap a string in a dict)."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.error_args = data


class _OneLineErrors(logging.Filter):
    """Turn engineio's logged tracebacks (bad polling bodies etc.) into one-line warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class TolerantEngineIOServer(engineio.Server):
    """engineio server whose server-side disconnect never blocks.

    ``engineio.Server.disconnect`` waits until the session's send queue is drained; for a polling
    client that sent an unknown packet type and is not polling any more that wait never ends, and
    the POST that triggered it hangs for ever.
    """

    def disconnect(self, sid: str | None = None) -> None:
        targets = [sid] if sid is not None else list(self.sockets)
        for s in targets:
            sock = self.sockets.get(s)
            if sock is not None:
                sock.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(s, None)


class KtbPacket(sio_packet.Packet):
    """Socket.IO packet that skips the recursive "contains bytes?" scan of every outgoing payload.

    This server never emits binary data, and the stock scan (``functools.reduce`` over every
    nested value) was one of the largest costs of a chat broadcast.
    """

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        return isinstance(data, (bytes, bytearray))


class KtbSocketServer(socketio.Server):
    """``socketio.Server`` with netty-socketio's tolerance of bad packets (see module doc)."""

    def _engineio_server_class(self) -> type:
        return TolerantEngineIOServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_auth: Any = None
        self._after_connect: list[tuple[str, Any, str]] | None = None

    def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            super()._handle_eio_message(eio_sid, data)
        except Exception as exc:
            self._binary_packet.pop(eio_sid, None)
            log.debug("dropped undecodable or failing packet from %s: %r (%s)", eio_sid, str(data)[:80], exc)

    def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        if namespace not in (None, "", "/"):
            self._send_packet(eio_sid, self.packet_class(sio_packet.CONNECT_ERROR, data="Invalid namespace",
                                                         namespace=namespace))
            return
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            return  # a second CONNECT on a connected namespace: ignore
        self.raw_auth = data
        self._after_connect = []
        try:
            super()._handle_connect(eio_sid, namespace, data)
        finally:
            pending, self._after_connect = self._after_connect, None
        for event, payload, to in pending:
            self.emit(event, payload, to=to)

    def emit_soon(self, event: str, data: Any, to: str) -> None:
        """Emit now, or right after the CONNECT ack when called while accepting a connection."""
        if self._after_connect is not None:
            self._after_connect.append((event, data, to))
        else:
            self.emit(event, data, to=to)

    def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):  # noqa: D401
        r = server._trigger_event(data[0], namespace, sid, *data[1:])
        if r is DROP:
            return
        if r is not self.not_handled and id is not None:
            server._send_packet(eio_sid, self.packet_class(sio_packet.ACK, namespace=namespace, id=id, data=[]))


@dataclass(slots=True)
class SocketUser:
    id: str
    name: str
    session_id: str
    sid: str


def _precise_sleep(seconds: float) -> None:
    """Cooperative sleep accurate to well under a millisecond.

    ``gevent.sleep`` alone overshoots by up to ~1 ms (epoll's millisecond timeout granularity); as
    ``--delay-ms`` is a ground truth for latency measurement, the last 2 ms are spent yielding
    (``sleep(0)`` lets every other greenlet run) until the deadline.
    """
    deadline = time.perf_counter() + seconds
    if seconds > 0.003:
        gevent.sleep(seconds - 0.002)
    while time.perf_counter() < deadline:
        gevent.sleep(0)


class AppliedDelay:
    """``--delay-ms`` as the server really applied it, for the ground-truth tests and the user.

    A delay is exact only to the scheduler: on a loaded machine the handler wakes late (the median
    overshoot was 0.75 ms with the test suite running beside it). Each applied delay is counted in
    10 µs buckets (a bounded table, not a list: a server may run for hours), and the server's stop
    line gives their median, so a test compares the client's figure with what the server did.
    """

    __slots__ = ("seconds", "buckets")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.buckets: dict[int, int] = {}

    def __call__(self) -> None:
        t0 = time.perf_counter()
        _precise_sleep(self.seconds)
        key = round((time.perf_counter() - t0) * 100_000)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def summary(self) -> str:
        """``delay-ms 50 applied 312 times: median 50.71 ms, max 53.20 ms`` (or ``... applied 0 times``)."""
        n = sum(self.buckets.values())
        head = f"delay-ms {self.seconds * 1000:g} applied {n} times"
        if not n:
            return head
        seen, median = 0, 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen * 2 >= n:
                median = key
                break
        return f"{head}: median {median / 100:.2f} ms, max {max(self.buckets) / 100:.2f} ms"


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


def _tolerant_websocket_class() -> type:
    """engineio's gevent websocket wrapper, minus the crash on undecodable Engine.IO packets.

    engineio decodes each websocket message outside any ``try``: an empty text frame, a frame that
    does not start with a packet-type digit, or bad base64 after ``b`` would kill the reader and
    leave the session half-dead until the ping timeout. Such frames are dropped here instead, the
    way netty-socketio logs and drops a packet it cannot decode.
    """
    import base64
    import binascii

    from engineio.async_drivers.gevent import WebSocketWSGI

    class TolerantWebSocketWSGI(WebSocketWSGI):
        def wait(self) -> Any:
            while True:
                msg = self._sock.receive()
                if msg is None or not isinstance(msg, str):
                    return msg
                if msg and msg[0] in "0123456":
                    return msg
                if msg[:1] == "b":
                    try:
                        base64.b64decode(msg[1:])
                        return msg
                    except (binascii.Error, ValueError):
                        pass
                log.debug("dropped undecodable Engine.IO packet %r", msg[:80])

    return TolerantWebSocketWSGI


def make_socket_server(*, max_payload: int = 65536) -> KtbSocketServer:
    """A gevent ``KtbSocketServer`` configured like the Java netty-socketio server."""
    sio = KtbSocketServer(
        async_mode="gevent",
        serializer=KtbPacket,
        json=jsonfast,
        async_handlers=False,
        cors_allowed_origins="*",
        ping_interval=25,
        ping_timeout=60,
        max_http_buffer_size=max_payload,
        logger=False,
        engineio_logger=False,
        transports=["polling", "websocket"],
    )
    sio.eio._async = dict(sio.eio._async, websocket=_tolerant_websocket_class())
    sio.eio.logger.addFilter(_OneLineErrors())
    return sio
