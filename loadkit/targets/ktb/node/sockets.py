"""The Node server's socket.io layer: the server (never an ack) and the ``sockets/chat.js`` handlers (§3, §4).

Handlers of one socket run in order, except ``leaveRoom``, which awaits simulated database round
trips (``--db-latency-ms``) while the socket's next events run (the package docstring says why).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import gevent
import socketio
from socketio import packet as sio_packet

from loadkit.protocols import ktb_vocab as V

from .. import jsonfast
from ..socket_server import AppliedDelay, KtbSocketServer, RefuseConnection
from ..store import Room, Store
from .auth import BadToken, NodeAuth, TokenExpired
from .views import OBJECT_ID, cast_error, history_message, live_message, parse_before, socket_user

log = logging.getLogger("loadkit.ktb.node")

FETCH_GAP_S = 0.3  # a fetch within 300 ms after the previous one finished is dropped (§4.4)
PAGE = 30  # limit is ignored: always at most 30 (§4.4)


class NodeSocketServer(KtbSocketServer):
    """socket.io 4.8 as the Node backend uses it: never an ack, CONNECT_ERROR ``{message}``."""

    def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        if namespace not in (None, "", "/"):
            self._send_packet(eio_sid, self.packet_class(sio_packet.CONNECT_ERROR, data={"message": "Invalid namespace"},
                                                         namespace=namespace))
            return
        if self.manager.sid_from_eio_sid(eio_sid, "/") is not None:
            return
        socketio.Server._handle_connect(self, eio_sid, namespace, data)

    def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):  # noqa: D401
        server._trigger_event(data[0], namespace, sid, *data[1:])  # no handler ever calls the ack (§4)


@dataclass(slots=True)
class NodeSocket:
    user_id: str
    name: str
    session_id: str
    sid: str


class NodeChatSockets:
    """The socket handlers of ``sockets/chat.js`` (ktb-1st), as observed by clients."""

    def __init__(self, sio: NodeSocketServer, store: Store, auth: NodeAuth, *, duplicate_login_delay: float = 10.0,
                 delay_ms: float = 0.0, db_ms: float = 2.0) -> None:
        self.sio = sio
        self.store = store
        self.auth = auth
        self.duplicate_login_delay = duplicate_login_delay
        self.delay = AppliedDelay(delay_ms / 1000.0) if delay_ms > 0 else None
        self.db_s = db_ms / 1000.0
        self.socks: dict[str, NodeSocket] = {}
        self.connected_users: dict[str, str] = {}  # userId -> socket id
        self.user_rooms: dict[str, str] = {}  # userId -> the ONE room (§4.1)
        self.fetch_state: dict[tuple[str, str], list] = {}  # (room, user) -> [loading, finished_at]
        handlers: dict[str, Callable[..., Any]] = {
            "connect": self.on_connect, "disconnect": self.on_disconnect, "joinRoom": self.on_join_room,
            "leaveRoom": self.on_leave_room, "chatMessage": self.on_chat_message,
            "fetchPreviousMessages": self.on_fetch_previous, "markMessagesAsRead": self.on_mark_read,
            "messageReaction": self.on_reaction, "force_login": self.on_force_login,
        }
        for event, fn in handlers.items():
            sio.on(event, self._guard(event, fn))
        # leaveRoom runs beside the socket's next events, as Node's async handlers do: it awaits the
        # database between its steps, and a joinRoom sent right after it overtakes it (§4.2)
        sio.on("leaveRoom", self._concurrent(self._guard("leaveRoom", self.on_leave_room)))

    def _guard(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def handler(sid: str, *args: Any) -> Any:
            try:
                return fn(sid, *args)
            except RefuseConnection:
                raise
            except Exception:
                # the real server's handlers catch and answer their own error events; anything
                # else here would be an unhandled rejection (which may end the Node process)
                log.exception("%s handler failed", event)
                return None

        return handler

    @staticmethod
    def _concurrent(handler: Callable[..., Any]) -> Callable[..., Any]:
        def spawn(sid: str, *args: Any) -> None:
            gevent.spawn(handler, sid, *args)

        return spawn

    def _db(self) -> None:
        """One MongoDB round trip: the handler yields, and other events of the same socket run."""
        gevent.sleep(self.db_s)

    def _delay(self) -> None:
        if self.delay:
            self.delay()

    def _emit(self, event: str, data: Any, to: str, skip_sid: str | None = None) -> None:
        self.sio.emit(event, data, to=to, skip_sid=skip_sid)

    def _participants(self, room: Room) -> list[dict[str, Any]]:
        users = self.store.users
        return [socket_user(users[p]) for p in room.participants if p in users]

    # ------------------------------------------------------------------ connect / disconnect
    def on_connect(self, sid: str, environ: dict, auth: Any = None) -> Any:
        """``io.use`` auth (§3.1): presence, JWT, the duplicate-login hold, session, user."""
        if not isinstance(auth, dict) or not auth.get("token") or not auth.get("sessionId"):
            raise RefuseConnection({"message": "Authentication error"})
        try:
            uid = self.auth.user_id(auth["token"])
        except TokenExpired:
            raise RefuseConnection({"message": "Token expired"}) from None
        except BadToken:
            raise RefuseConnection({"message": "Invalid token"}) from None
        old = self.connected_users.get(uid)
        if old is not None and old in self.socks:
            self._evict(old, environ)
        problem = self.auth.validate(uid, auth["sessionId"])
        if problem is not None:
            raise RefuseConnection({"message": problem[1]})
        user = self.store.users.get(uid)
        if user is None:
            raise RefuseConnection({"message": "User not found"})
        self.socks[sid] = NodeSocket(uid, user.name, str(auth["sessionId"]), sid)
        self.connected_users[uid] = sid
        return True

    def _evict(self, old_sid: str, environ: dict) -> None:
        """§3.3: notice to the old socket, hold this handshake, then end and disconnect the old one."""
        notice: dict[str, Any] = {"type": "new_login_attempt"}
        ua = environ.get("HTTP_USER_AGENT")
        if ua is not None:
            notice["deviceInfo"] = ua
        notice.update({"ipAddress": environ.get("REMOTE_ADDR", ""), "timestamp": int(time.time() * 1000)})
        self._emit(V.DUPLICATE_LOGIN, notice, old_sid)
        gevent.sleep(self.duplicate_login_delay)
        if old_sid in self.socks:
            self._emit(V.SESSION_ENDED, {"reason": "duplicate_login", "message": V.SESSION_ENDED_DUP}, old_sid)
            self.sio.disconnect(old_sid)

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        s = self.socks.pop(sid, None)
        if s is None:
            return
        if self.connected_users.get(s.user_id) == sid:
            del self.connected_users[s.user_id]
        room_id = self.user_rooms.pop(s.user_id, None)
        for key in [k for k in self.fetch_state if k[1] == s.user_id]:
            del self.fetch_state[key]
        if reason == self.sio.reason.CLIENT_DISCONNECT or room_id is None:
            return  # a clean client disconnect: the room hears nothing, the user stays a participant
        room = self.store.rooms.get(room_id)
        if room is None:
            return
        m = self.store.add_message(room, V.disconnect_text(s.name), None, "system")
        self.store.remove_participant(room, s.user_id)
        self._emit(V.MESSAGE, live_message(m, None), room_id)
        self._emit(V.PARTICIPANTS_UPDATE, self._participants(room), room_id)

    def on_force_login(self, sid: str, *args: Any) -> None:
        data = args[0] if args else None
        s = self.socks.get(sid)
        if not isinstance(data, dict) or s is None:
            return
        try:
            uid = self.auth.user_id(data.get("token"))
        except (TokenExpired, BadToken):
            self._emit(V.ERROR, {"message": V.E_FORCE_LOGIN}, sid)
            return
        if uid == s.user_id:
            self._emit(V.SESSION_ENDED, {"reason": "force_logout", "message": V.SESSION_ENDED_DUP}, sid)
            self.sio.disconnect(sid)

    # ------------------------------------------------------------------ joinRoom / leaveRoom
    def on_join_room(self, sid: str, *args: Any) -> None:
        s = self.socks.get(sid)
        if s is None:
            return
        self._delay()
        room_id = args[0] if args else None
        current = self.user_rooms.get(s.user_id)
        if current is not None and current == room_id:
            # "already in room": the short form, and the socket is NOT re-added to the room
            self._emit(V.JOIN_ROOM_SUCCESS, {"roomId": room_id}, sid)
            return
        if current is not None:  # switching rooms: leave the old one before any DB work
            self.sio.leave_room(sid, current)
            del self.user_rooms[s.user_id]
            self._emit(V.USER_LEFT, {"userId": s.user_id, "name": s.name}, current, skip_sid=sid)
        if not isinstance(room_id, str) or not OBJECT_ID.match(room_id):
            self._emit(V.JOIN_ROOM_ERROR, {"message": cast_error(room_id, "Room")}, sid)
            return
        store = self.store
        room = store.rooms.get(room_id)
        user = store.users.get(s.user_id)
        if room is None or user is None:
            self._emit(V.JOIN_ROOM_ERROR, {"message": V.E_ROOM_NOT_FOUND}, sid)
            return
        store.add_participant(room, user.id)
        self.sio.enter_room(sid, room_id)
        self.user_rooms[user.id] = room_id
        sys_msg = store.add_message(room, V.join_text(user.name), None, "system")
        messages, has_more = store.messages_before(room_id, None, PAGE)
        readers = store.readers_of(m.id for m in messages)
        history = [history_message(store, m, readers.get(m.id, [])) for m in messages]
        store.mark_read([m.id for m in messages], user.id)
        self._emit(V.JOIN_ROOM_SUCCESS, {
            "roomId": room_id, "participants": self._participants(room), "messages": history, "hasMore": has_more,
            "oldestTimestamp": history[0]["timestamp"] if history else None, "activeStreams": []}, sid)
        self._emit(V.MESSAGE, live_message(sys_msg, None), room_id)
        self._emit(V.PARTICIPANTS_UPDATE, self._participants(room), room_id)

    def on_leave_room(self, sid: str, *args: Any) -> None:
        """§4.2: nothing to the leaver; the room gets the system message and participantsUpdate.
        Asynchronous: a ``joinRoom`` sent right after this can run before it completes."""
        s = self.socks.get(sid)
        room_id = args[0] if args else None
        if s is None or self.user_rooms.get(s.user_id) != room_id:
            return
        try:
            self._db()  # participant check
            room = self.store.rooms.get(room_id)
            if room is None or s.user_id not in room.participants:
                return
            self.sio.leave_room(sid, room_id)
            if self.user_rooms.get(s.user_id) == room_id:
                del self.user_rooms[s.user_id]
            self._db()  # save the system message
            m = self.store.add_message(room, V.leave_text(s.name), None, "system")
            self._db()  # $pull
            self.store.remove_participant(room, s.user_id)
            self._emit(V.MESSAGE, live_message(m, None), room_id)
            self._emit(V.PARTICIPANTS_UPDATE, self._participants(room), room_id)
        except Exception:
            log.exception("leaveRoom failed")
            self._emit(V.ERROR, {"message": V.E_LEAVE}, sid)

    # ------------------------------------------------------------------ chatMessage
    def on_chat_message(self, sid: str, *args: Any) -> None:
        s = self.socks.get(sid)
        if s is None:
            return
        self._delay()
        data = args[0] if args else None

        def fail(text: str) -> None:
            self._emit(V.ERROR, {"code": V.MESSAGE_ERROR, "message": text}, sid)

        if data is None:
            return fail(V.E_NO_DATA)
        room_id = data.get("room") if isinstance(data, dict) else None
        if not room_id:
            return fail(V.E_NO_ROOM_INFO)
        if not isinstance(room_id, str) or not OBJECT_ID.match(room_id):
            return fail(cast_error(room_id, "Room"))
        room = self.store.rooms.get(room_id)
        if room is None or s.user_id not in room.participants:
            return fail(V.E_ROOM_ACCESS)
        if self.auth.validate(s.user_id, s.session_id) is not None:
            return fail(V.E_SESSION)
        mtype = data.get("type")
        if mtype == "file":
            return fail(V.E_FILE_DATA)  # uploads are not part of this reference server
        if mtype != "text":
            return fail(V.E_UNSUPPORTED_TYPE)
        text = data.get("content") or data.get("msg") or ""
        text = text.strip() if isinstance(text, str) else str(text).strip()
        if not text:
            return None  # empty text: dropped silently (§4.3)
        if len(text) > 10000:
            return fail(V.E_TOO_LONG)
        user = self.store.users.get(s.user_id)
        if user is None:
            return fail(V.E_SESSION)
        m = self.store.add_message(room, text, user.id, "text")
        self._emit(V.MESSAGE, live_message(m, user), room_id)  # io.to: the sender included
        return None

    # ------------------------------------------------------------------ history
    def on_fetch_previous(self, sid: str, *args: Any) -> None:
        s = self.socks.get(sid)
        data = args[0] if args else None
        if s is None or not isinstance(data, dict):
            return
        room_id = data.get("roomId")

        def fail(text: str) -> None:
            self._emit(V.ERROR, {"type": V.LOAD_ERROR, "message": text}, sid)

        room = self.store.rooms.get(room_id) if isinstance(room_id, str) else None
        if room is None or s.user_id not in room.participants:
            return fail(V.E_ROOM_ACCESS)
        key = (room_id, s.user_id)
        st = self.fetch_state.get(key)
        now = time.monotonic()
        if st is not None and (st[0] or now - st[1] < FETCH_GAP_S):
            return None  # throttled: dropped without any answer (§4.4)
        st = self.fetch_state[key] = [True, now]
        try:
            self._emit(V.MESSAGE_LOAD_START, None, sid)
            try:
                before = parse_before(data.get("before"))
            except ValueError:
                return fail(V.E_LOAD_RETRIES)
            messages, has_more = self.store.messages_before(room_id, before, PAGE)  # limit ignored
            readers = self.store.readers_of(m.id for m in messages)
            history = [history_message(self.store, m, readers.get(m.id, [])) for m in messages]
            self.store.mark_read([m.id for m in messages], s.user_id)
            self._emit(V.PREVIOUS_LOADED, {"messages": history, "hasMore": has_more,
                                           "oldestTimestamp": history[0]["timestamp"] if history else None}, sid)
        finally:
            st[0], st[1] = False, time.monotonic()
        return None

    # ------------------------------------------------------------------ read receipts
    def on_mark_read(self, sid: str, *args: Any) -> None:
        s = self.socks.get(sid)
        data = args[0] if args else None
        if s is None or not isinstance(data, dict):
            return
        self._delay()
        ids = data.get("messageIds")
        if not isinstance(ids, list) or not ids:
            return
        if not all(isinstance(i, str) and OBJECT_ID.match(i) for i in ids):
            self._emit(V.ERROR, {"message": V.E_READ}, sid)
            return
        room_id = data.get("roomId")
        found = self.store.existing_message_ids(ids)
        self.store.mark_read(found, s.user_id)
        if room_id:
            # socket.to(roomId): the room minus the sender, on every call, even from a non-member
            self._emit(V.MESSAGES_READ, {"userId": s.user_id, "messageIds": ids}, str(room_id), skip_sid=sid)

    # ------------------------------------------------------------------ reactions
    def on_reaction(self, sid: str, *args: Any) -> None:
        s = self.socks.get(sid)
        data = args[0] if args else None
        if s is None or not isinstance(data, dict):
            return
        mid, reaction, rtype = data.get("messageId"), data.get("reaction"), data.get("type")
        if not isinstance(mid, str) or not OBJECT_ID.match(mid):
            self._emit(V.ERROR, {"message": cast_error(mid, "Message")}, sid)
            return
        m = self.store.get_message(mid)
        if m is None:
            self._emit(V.ERROR, {"message": V.E_MSG_NOT_FOUND}, sid)
            return
        if not isinstance(reaction, str):
            self._emit(V.ERROR, {"message": V.E_MAP_KEY}, sid)
            return
        reactions = m.reactions or {}
        users = reactions.get(reaction, [])
        if rtype == "add" and s.user_id not in users:
            reactions[reaction] = users + [s.user_id]
        elif rtype == "remove" and s.user_id in users:
            rest = [u for u in users if u != s.user_id]
            if rest:
                reactions[reaction] = rest
            else:
                reactions.pop(reaction, None)
        m.reactions = reactions
        self.store.set_reactions(m)
        self._emit(V.REACTION_UPDATE, {"messageId": m.id, "reactions": reactions}, m.room)


def make_node_socket_server() -> NodeSocketServer:
    """socket.io 4.8 defaults (§1): pingInterval 25 s, pingTimeout 20 s, maxPayload 1e6."""
    from ..socket_server import KtbPacket, _OneLineErrors, _tolerant_websocket_class

    sio = NodeSocketServer(
        async_mode="gevent", serializer=KtbPacket, json=jsonfast, async_handlers=False,
        cors_allowed_origins="*", ping_interval=25, ping_timeout=20, max_http_buffer_size=1_000_000,
        logger=False, engineio_logger=False, transports=["polling", "websocket"],
    )
    sio.eio._async = dict(sio.eio._async, websocket=_tolerant_websocket_class())
    sio.eio.logger.addFilter(_OneLineErrors())
    return sio
