"""The Node.js variant of the KTB reference server (``loadkit serve ktb --variant node``).

It reproduces what a *client* of the upstream Node backend (``ktb-1st``: Express + socket.io 4.8 +
mongoose + Redis, one port) can observe, fact by fact from
/work/shared/spec/ktb-node-server-facts.md (section numbers below refer to it):

* REST and Socket.IO on one port; ``GET /health`` (``/api/health`` is a 404 JSON); JSON 401 bodies;
  ``x-auth-token`` + ``x-session-id`` (Bearer ignored); register logs in; 64-hex session ids (§1, §2);
* no Socket.IO acks ever (§4); ``leaveRoom`` runs concurrently with the socket's later events
  (see below);
* ``messagesRead`` to the other members only (§4.5); ``leaveRoom`` answers nothing to the leaver and
  is asynchronous: a ``joinRoom`` sent right after it overtakes it (§4.2); one room per user (§4.1);
* ISO timestamps, ``_id`` in senders and participants (§5); ``{type:"LOAD_ERROR"}`` load errors,
  ``limit`` ignored, the 300 ms fetch throttle that drops requests silently (§4.4);
* no rate limit, no banned words; chat's stale session is ``MESSAGE_ERROR`` (§4.3);
* duplicate login: the new handshake is held ``--duplicate-login-delay`` s (10), the old socket
  gets ``duplicate_login``, then ``session_ended`` and a server disconnect (§3.3); a clean client
  disconnect leaves the user a participant, any other drops it from the room (§6.1);
* Engine.IO ``pingTimeout`` 20000 and ``maxPayload`` 1000000 (§1).

Handlers of one socket run in order, except ``leaveRoom``, which awaits simulated database round
trips (``--db-latency-ms``) while the socket's next events run. The real server interleaves every
handler (echo order can differ from send order); here only the interleaving a client can trip over
(the leave/join race) is reproduced: concurrent handlers spinning out ``--delay-ms`` starve each other
by milliseconds, which would spoil that ground truth. A consequence: with ``--delay-ms``, an event
sent within the delay after a ``markMessagesAsRead`` waits for it (on the real server it would not).

Not reproduced (server-internal or crash bugs, documented in docs/ktb-server.md): Redis/Mongo,
ktb-2nd's crashes, AI features, file uploads, and the process exit on a ``null`` payload (the
event is ignored instead). Password hashing cost is optional (``--auth-cost-ms``).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import gevent
import gevent.lock
import jwt
import socketio
from socketio import packet as sio_packet

from loadkit.protocols import ktb_vocab as V

from . import jsonfast
from .auth import FixedWindowLimiter, check_password, hash_password
from .wsgi import CORS_HEADERS, REASONS, Response
from .socket_server import KtbSocketServer, RefuseConnection, precise_sleep
from .store import Message, Room, Session, Store, User

log = logging.getLogger("loadkit.ktb.node")

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
ROOM_PATH_RE = re.compile(r"^/api/rooms/([^/]+)(/join)?/?$")
JWT_TTL_S = 24 * 3600
SESSION_TTL_MS = 24 * 3600 * 1000
FETCH_GAP_S = 0.3  # a fetch within 300 ms after the previous one finished is dropped (§4.4)
PAGE = 30  # limit is ignored: always at most 30 (§4.4)
ROOMS_PER_MINUTE = 60  # GET /api/rooms limiter (§2.6)


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


# ------------------------------------------------------------------------------------ shapes
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


# -------------------------------------------------------------------------------------- auth
class TokenExpired(Exception):
    pass


class BadToken(Exception):
    pass


class NodeAuth:
    """JWT ``{user:{id}, sessionId, iat, exp}`` and one 64-hex session per user (§2.5).

    ``cost_s``: the time one password hash or compare takes (bcryptjs cost 10 runs on Node's one
    event loop: concurrent hashes queue behind each other, modelled by a semaphore).
    """

    def __init__(self, store: Store, cost_s: float = 0.0) -> None:
        self.store = store
        self.secret = store.jwt_secret
        self.cost_s = cost_s
        self._loop = gevent.lock.Semaphore()

    def hash_cost(self) -> None:
        if self.cost_s > 0:
            with self._loop:
                precise_sleep(self.cost_s)

    def make_token(self, user: User, session_id: str) -> str:
        now = int(time.time())
        return jwt.encode({"user": {"id": user.id}, "sessionId": session_id, "iat": now, "exp": now + JWT_TTL_S},
                          self.secret, algorithm="HS256")

    def user_id(self, token: Any) -> str:
        """The ``user.id`` claim of a valid token; ``TokenExpired`` / ``BadToken`` otherwise."""
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"])
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except Exception:
            raise BadToken() from None
        uid = (claims.get("user") or {}).get("id") if isinstance(claims.get("user"), dict) else None
        if not isinstance(uid, str) or not uid:
            raise BadToken()
        return uid

    def create_session(self, user: User, user_agent: str | None = None, ip: str | None = None) -> Session:
        """Deletes the user's previous session first: register, login and refresh each invalidate
        the previous session id at once."""
        now = int(time.time() * 1000)
        s = Session(user.id, secrets.token_hex(32), now, now, user_agent, ip)
        self.store.put_session(s)
        return s

    def validate(self, user_id: str | None, session_id: Any) -> tuple[str, str] | None:
        """None if valid (and slides the TTL), else ``(code, message)`` of ``validateSession``."""
        if not user_id or not session_id:
            return "INVALID_PARAMETERS", "유효하지 않은 세션 파라미터"
        s = self.store.sessions.get(user_id)
        if s is None or s.session_id != session_id:
            return "INVALID_SESSION", V.E_NODE_INVALID_SESSION
        now = int(time.time() * 1000)
        if now - s.last_activity > SESSION_TTL_MS:
            self.store.delete_session(user_id)
            return "SESSION_EXPIRED", V.E_NODE_SESSION_EXPIRED
        s.last_activity = now
        return None


# -------------------------------------------------------------------------------------- REST
class NodeRestApp:
    """Express routes of §2 as one WSGI callable (``/health`` and ``/api/**``)."""

    def __init__(self, store: Store, auth: NodeAuth, emit: Callable[[str, Any, str], None], *,
                 env_name: str | None = "production") -> None:
        self.store = store
        self.auth = auth
        self.emit = emit
        self.env_name = env_name
        self.rooms_limiter = FixedWindowLimiter(ROOMS_PER_MINUTE, 60)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            resp = self.handle(environ)
        except Exception as exc:  # Express's final error handler
            log.exception("REST handler error")
            resp = Response(500, {"success": False, "message": str(exc) or V.R_SERVER_ERROR})
        return self.respond(environ, start_response, resp)

    def respond(self, environ: dict, start_response: Callable, resp: Response) -> Iterable[bytes]:
        """Send ``resp`` with Express's headers (also used by ``--fault error``)."""
        headers = [("X-Powered-By", "Express")] + list(resp.headers) + CORS_HEADERS
        origin = environ.get("HTTP_ORIGIN")
        if origin:
            headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        payload = b"" if resp.body is None else jsonfast.dumps(resp.body).encode()
        if resp.body is not None:
            headers.append(("Content-Type", "application/json; charset=utf-8"))
        headers += [("Content-Length", str(len(payload))), ("Keep-Alive", "timeout=5")]
        start_response(f"{resp.status} {REASONS.get(resp.status, 'Status')}", headers)
        return [payload]

    @staticmethod
    def _body(environ: dict) -> dict[str, Any] | Response:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        if not raw.strip():
            return {}
        if length > 100 * 1024:
            return Response(413, {"success": False, "message": "request entity too large"})
        try:
            body = jsonfast.loads(raw)
        except ValueError:
            return Response(400, {"success": False, "message": "Unexpected token in JSON"})
        return body if isinstance(body, dict) else {}

    def handle(self, environ: dict) -> Response:
        from urllib.parse import parse_qs

        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if method == "OPTIONS":
            return Response(204, headers=[("Access-Control-Allow-Methods", "GET,POST,PUT,DELETE,OPTIONS")], empty=True)
        p = path.rstrip("/") or "/"
        if method == "GET" and p == "/health":
            return Response(200, {"status": "ok", "timestamp": iso(int(time.time() * 1000)), "env": self.env_name})
        if method == "GET" and p == "/api/auth":
            return Response(200, {"status": "active", "routes": {"/register": "POST - 새 사용자 등록",
                                                                 "/login": "POST - 로그인"}})
        if method == "POST" and p == "/api/auth/register":
            return self.register(environ)
        if method == "POST" and p == "/api/auth/login":
            return self.login(environ)
        if method == "GET" and p == "/api/rooms/health":
            return Response(200, {"success": True, "timestamp": iso(int(time.time() * 1000)),
                                  "services": {"database": {"connected": True, "latency": 0}}},
                            [("Cache-Control", "no-cache, no-store, must-revalidate")])
        limited: list[tuple[str, str]] = []
        if method == "GET" and p == "/api/rooms":  # the limiter runs before auth (§2.6)
            ip = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip() or environ.get("REMOTE_ADDR", "")
            allowed, remaining, reset_s, _ = self.rooms_limiter.hit(ip)
            limited = [("RateLimit-Policy", f"{ROOMS_PER_MINUTE};w=60"), ("RateLimit-Limit", str(ROOMS_PER_MINUTE)),
                       ("RateLimit-Remaining", str(remaining)),
                       ("RateLimit-Reset", str(max(0, reset_s - int(time.time()))))]
            if not allowed:
                return Response(429, {"success": False, "error": {
                    "message": "너무 많은 요청이 발생했습니다. 잠시 후 다시 시도해주세요.", "code": "TOO_MANY_REQUESTS"}},
                    limited)
        known = (p in ("/api/auth/logout", "/api/rooms") or ROOM_PATH_RE.match(p) is not None)
        if not known:
            return Response(404, {"success": False, "message": V.R_NOT_FOUND, "path": path})
        user, denied = self._authenticate(environ, query)
        if denied is not None:
            return denied
        assert user is not None
        if p == "/api/auth/logout" and method == "POST":
            self.store.delete_session(user.id)
            return Response(200, {"success": True, "message": "로그아웃되었습니다."})
        if p == "/api/rooms":
            if method == "GET":
                resp = self.list_rooms(query, user)
                resp.headers = limited + resp.headers
                return resp
            if method == "POST":
                return self.create_room(environ, user)
        m = ROOM_PATH_RE.match(p)
        if m:
            if m.group(2) and method == "POST":
                return self.join_room(environ, m.group(1), user)
            if not m.group(2) and method == "GET":
                return self.get_room(m.group(1))
        return Response(404, {"success": False, "message": V.R_NOT_FOUND, "path": path})

    def _authenticate(self, environ: dict, query: dict) -> tuple[User | None, Response | None]:
        """``middleware/auth.js``: token and session from headers (or query); JSON 401 bodies."""
        token = environ.get("HTTP_X_AUTH_TOKEN") or (query.get("token") or [""])[0]
        sid = environ.get("HTTP_X_SESSION_ID") or (query.get("sessionId") or [""])[0]
        if not token or not sid:
            return None, Response(401, {"success": False, "message": V.R_NO_TOKEN})
        try:
            uid = self.auth.user_id(token)
        except TokenExpired:
            return None, Response(401, {"success": False, "message": V.R_TOKEN_EXPIRED})
        except BadToken:
            return None, Response(401, {"success": False, "message": V.R_BAD_TOKEN})
        problem = self.auth.validate(uid, sid)
        if problem is not None:
            return None, Response(401, {"success": False, "code": problem[0], "message": problem[1]})
        user = self.store.users.get(uid)
        if user is None:
            return None, Response(401, {"success": False, "message": V.R_BAD_TOKEN})
        return user, None

    def register(self, environ: dict) -> Response:
        body = self._body(environ)
        if isinstance(body, Response):
            return body
        name, email, password = body.get("name"), body.get("email"), body.get("password")
        if not name or not email or not password:
            return Response(400, {"success": False, "message": V.R_ALL_FIELDS})
        if not isinstance(email, str) or not EMAIL_RE.match(email):
            return Response(400, {"success": False, "message": V.R_EMAIL_FORMAT})
        if not isinstance(password, str) or len(password) < 6:
            return Response(400, {"success": False, "message": V.R_PASSWORD_LEN})
        email_l = email.strip().lower()
        if email_l in self.store.users_by_email:
            return Response(409, {"success": False, "message": V.R_EMAIL_TAKEN})
        if not isinstance(name, str) or len(name.strip()) < 2:
            return Response(400, {"success": False, "message": "입력값이 올바르지 않습니다.",
                                  "errors": ["이름은 2자 이상이어야 합니다."]})
        self.auth.hash_cost()
        if email_l in self.store.users_by_email:  # a concurrent register won the unique index
            return Response(500, {"success": False, "message": "회원가입 처리 중 오류가 발생했습니다."})
        salt, pwhash = hash_password(password)
        user = self.store.add_user(name.strip(), email_l, salt, pwhash)
        session = self.auth.create_session(user, environ.get("HTTP_USER_AGENT"), environ.get("REMOTE_ADDR"))
        return Response(201, {"success": True, "message": V.R_REGISTERED,
                              "token": self.auth.make_token(user, session.session_id),
                              "sessionId": session.session_id, "user": rest_user(user)})

    def login(self, environ: dict) -> Response:
        body = self._body(environ)
        if isinstance(body, Response):
            return body
        email, password = body.get("email"), body.get("password")
        if not email or not password:
            return Response(400, {"success": False, "message": V.R_LOGIN_FIELDS})
        user = self.store.users_by_email.get(str(email).strip().lower())
        if user is None:
            return Response(401, {"success": False, "message": V.R_BAD_LOGIN})
        self.auth.hash_cost()
        if not check_password(str(password), user.salt, user.pwhash):
            return Response(401, {"success": False, "message": V.R_BAD_LOGIN})
        session = self.auth.create_session(user, environ.get("HTTP_USER_AGENT"), environ.get("REMOTE_ADDR"))
        token = self.auth.make_token(user, session.session_id)
        return Response(200, {"success": True, "token": token, "sessionId": session.session_id,
                              "user": dict(rest_user(user), profileImage=user.profile_image or "")},
                        [("Authorization", f"Bearer {token}"), ("x-session-id", session.session_id)])

    def list_rooms(self, query: dict, user: User) -> Response:
        def q(name: str, default: str) -> str:
            v = query.get(name)
            return v[0] if v else default

        try:
            page = max(0, int(q("page", "0")))
            page_size = min(50, max(1, int(q("pageSize", "10"))))
        except ValueError:
            page, page_size = 0, 10
        field = q("sortField", "createdAt")
        order = q("sortOrder", "desc")
        rooms = sorted(self.store.rooms.values(), key=(lambda r: (r.name, r.seq)) if field == "name"
                       else (lambda r: (r.created_at, r.seq)), reverse=order != "asc")
        search = q("search", "").lower()
        if search:
            rooms = [r for r in rooms if search in r.name.lower()]
        chunk = rooms[page * page_size:(page + 1) * page_size]
        data = []
        for r in chunk:
            d = room_doc(self.store, r)
            d.pop("__v")
            d["participantsCount"] = len(r.participants)
            d["isCreator"] = r.creator == user.id
            data.append(d)
        total = len(rooms)
        return Response(200, {"success": True, "data": data, "metadata": {
            "total": total, "page": page, "pageSize": page_size, "totalPages": -(-total // page_size),
            "hasMore": (page + 1) * page_size < total, "currentCount": len(data),
            "sort": {"field": field, "order": order}}}, [("Cache-Control", "private, max-age=10")])

    def create_room(self, environ: dict, user: User) -> Response:
        body = self._body(environ)
        if isinstance(body, Response):
            return body
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not name.strip():
            return Response(400, {"success": False, "message": V.R_ROOM_NAME_REQUIRED})
        salt = pwhash = None
        if password:
            self.auth.hash_cost()
            salt, pwhash = hash_password(str(password))
        room = self.store.add_room(name.strip(), user.id, salt, pwhash)
        doc = room_doc(self.store, room)
        self.emit("roomCreated", doc, "room-list")  # nobody ever joins room-list (§2.6)
        return Response(201, {"success": True, "data": doc})

    def get_room(self, room_id: str) -> Response:
        if not OBJECT_ID.match(room_id):
            return Response(500, {"success": False, "message": "채팅방 정보를 불러오는데 실패했습니다."})
        room = self.store.rooms.get(room_id)
        if room is None:
            return Response(404, {"success": False, "message": V.E_ROOM_NOT_FOUND})
        return Response(200, {"success": True, "data": room_doc(self.store, room)})

    def join_room(self, environ: dict, room_id: str, user: User) -> Response:
        body = self._body(environ)
        if isinstance(body, Response):
            return body
        room = self.store.rooms.get(room_id)
        if room is None:
            return Response(404, {"success": False, "message": V.E_ROOM_NOT_FOUND})
        if room.has_password:
            self.auth.hash_cost()
            if not check_password(str(body.get("password") or ""), room.salt, room.pwhash):
                return Response(401, {"success": False, "message": V.R_BAD_PASSWORD})
        self.store.add_participant(room, user.id)
        doc = room_doc(self.store, room)
        self.emit("roomUpdate", doc, room.id)
        return Response(200, {"success": True, "data": doc})


# ------------------------------------------------------------------------------------ sockets
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
        self.delay_s = delay_ms / 1000.0
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
        if self.delay_s:
            precise_sleep(self.delay_s)

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
    from .socket_server import KtbPacket, _OneLineErrors, _tolerant_websocket_class

    sio = NodeSocketServer(
        async_mode="gevent", serializer=KtbPacket, json=jsonfast, async_handlers=False,
        cors_allowed_origins="*", ping_interval=25, ping_timeout=20, max_http_buffer_size=1_000_000,
        logger=False, engineio_logger=False, transports=["polling", "websocket"],
    )
    sio.eio._async = dict(sio.eio._async, websocket=_tolerant_websocket_class())
    sio.eio.logger.addFilter(_OneLineErrors())
    return sio
