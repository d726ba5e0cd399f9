"""The Node server's Express routes (§2): ``/health`` and ``/api/**`` as one WSGI callable."""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Callable, Iterable

from loadkit.protocols import ktb_vocab as V

from .. import jsonfast
from ..auth import FixedWindowLimiter, check_password, hash_password
from ..store import Store, User
from ..wsgi import CORS_HEADERS, REASONS, Response
from .auth import BadToken, NodeAuth, TokenExpired
from .views import OBJECT_ID, iso, rest_user, room_doc

log = logging.getLogger("loadkit.ktb.node")

EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
ROOM_PATH_RE = re.compile(r"^/api/rooms/([^/]+)(/join)?/?$")
ROOMS_PER_MINUTE = 60  # GET /api/rooms limiter (§2.6)


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
