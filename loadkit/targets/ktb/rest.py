"""The REST half of the KTB server as a plain WSGI app (Spring controllers + Spring Security).

Routing is a handful of fixed paths, so a tiny dispatcher here is faster and clearer than pulling in
a web framework. Every status code, body and Korean message follows docs/ktb-servers.md Java §2–§3
(the table: docs/ktb-server.md "REST (Java)"), including Spring Security's quirks: an auth failure
is 401 with an *empty* body, and a bad token is rejected even on the public ``/api/auth/**`` paths.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from . import jsonfast
from .auth import Auth, FixedWindowLimiter, InvalidToken, check_password, hash_password
from .store import Store, User
from .uploads import ALLOWED_UPLOADS, MAX_UPLOAD, iso_local, multipart_file
from .views import NotAString, auth_user, iso_instant, jackson_str, room_response
from .wsgi import CORS_HEADERS, REASONS, Emit, Response

log = logging.getLogger("loadkit.ktb.rest")

EMAIL_RE = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
ROOM_PATH_RE = re.compile(r"^/api/rooms/([^/]+)(/join)?/?$")
PUBLIC_PREFIXES = ("/api/auth", "/api/v3/api-docs", "/api/swagger-ui", "/api/docs")
PUBLIC_EXACT = ("/api/health", "/api/swagger-ui.html")

MSG_NOT_FOUND = "요청하신 리소스를 찾을 수 없습니다."
MSG_INTERNAL = "서버 내부 오류가 발생했습니다."
MSG_ROOM_NOT_FOUND = "채팅방을 찾을 수 없습니다."
MSG_TOKEN_OR_SESSION = "토큰 또는 세션 ID가 필요합니다."
MSG_EXPIRED_SESSION = "만료된 세션입니다."
MSG_USER_NOT_FOUND = "사용자를 찾을 수 없습니다."


class BadBody(Exception):
    """The request body is not the JSON object the controller expects (Spring: 500 via handler)."""


def _unauthorized(description: str | None = None) -> Response:
    if description is None:
        www = "Bearer"
    else:  # header values must be latin-1 (pywsgi refuses others): keep the description ASCII
        description = description.encode("ascii", "replace").decode("ascii")
        www = ('Bearer error="invalid_token", error_description="%s", '
               'error_uri="https://tools.ietf.org/html/rfc6750#section-3.1"' % description.replace('"', "'"))
    return Response(401, headers=[("WWW-Authenticate", www)], empty=True)


def _as_str(v: Any) -> str | None:
    """Jackson's String coercion; an object or array is a body the controller cannot read."""
    try:
        return jackson_str(v)
    except NotAString:
        raise BadBody("cannot deserialize value as String") from None


class RestApp:
    """WSGI callable for ``/api/**``; ``emit`` sends Socket.IO events for REST side effects."""

    def __init__(self, store: Store, auth: Auth, emit: Emit, *, env_name: str | None = None) -> None:
        self.store = store
        self.auth = auth
        self.emit = emit
        self.env_name = env_name
        self.rooms_limiter = FixedWindowLimiter(10000, 30)

    # ------------------------------------------------------------------ WSGI plumbing
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            resp = self.handle(environ)
        except Exception:  # last resort: never a traceback page, never a dead connection
            log.exception("REST handler error")
            resp = Response(500, {"success": False, "message": MSG_INTERNAL, "code": "INTERNAL_SERVER_ERROR",
                                  "path": environ.get("PATH_INFO", "")})
        return self.respond(environ, start_response, resp)

    def respond(self, environ: dict, start_response: Callable, resp: Response) -> Iterable[bytes]:
        """Send ``resp`` with this server's headers (also used by ``--fault error``)."""
        headers = list(resp.headers) + CORS_HEADERS
        origin = environ.get("HTTP_ORIGIN")
        if origin:
            headers.append(("Access-Control-Allow-Origin", origin))
            headers.append(("Vary", "Origin"))
        if resp.body is None:
            payload = b""
        else:
            payload = jsonfast.dumps(resp.body).encode()
            headers.append(("Content-Type", "application/json"))
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{resp.status} {REASONS.get(resp.status, 'Status')}", headers)
        return [payload]

    def handle(self, environ: dict) -> Response:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if method == "OPTIONS":
            return self._preflight(environ)
        if path != "/api" and not path.startswith("/api/"):
            return Response(404, {"success": False, "path": path, "message": MSG_NOT_FOUND})

        # --- Spring Security: the bearer filter runs on every /api/** request carrying a token
        token = self._resolve_token(environ, query)
        principal: dict[str, Any] | None = None
        if token is not None:
            try:
                claims = self.auth.decode(token)
            except InvalidToken as exc:
                return _unauthorized(f"An error occurred while attempting to decode the Jwt: {exc}")
            if not self.auth.validate_session(claims["userId"], claims["sessionId"]):
                return _unauthorized("session is invalid or expired")
            principal = claims
        public = path in PUBLIC_EXACT or any(path == p or path.startswith(p + "/") for p in PUBLIC_PREFIXES)
        if not public and principal is None:
            return _unauthorized()

        try:
            return self._route(method, path, environ, query, principal)
        except BadBody:
            return Response(500, {"success": False, "message": MSG_INTERNAL, "code": "INTERNAL_SERVER_ERROR",
                                  "path": path})

    def _preflight(self, environ: dict) -> Response:
        return Response(200, headers=[
            ("Access-Control-Allow-Methods", "GET,POST,PUT,DELETE,OPTIONS"),
            ("Access-Control-Allow-Headers", "Content-Type, Authorization, x-auth-token, x-session-id, Cache-Control, Pragma"),
            ("Access-Control-Max-Age", "3600"),
        ], empty=True)

    @staticmethod
    def _resolve_token(environ: dict, query: dict[str, list[str]]) -> str | None:
        """``CustomBearerTokenResolver``: x-auth-token, then ``token`` parameter, then Bearer."""
        tok = environ.get("HTTP_X_AUTH_TOKEN")
        if tok:
            return tok
        if query.get("token") and query["token"][0]:
            return query["token"][0]
        authz = environ.get("HTTP_AUTHORIZATION", "")
        if authz[:7].lower() == "bearer " and authz[7:].strip():
            return authz[7:].strip()
        return None

    @staticmethod
    def _session_header(environ: dict, query: dict[str, list[str]]) -> str | None:
        sid = environ.get("HTTP_X_SESSION_ID")
        if sid:
            return sid
        if query.get("sessionId") and query["sessionId"][0]:
            return query["sessionId"][0]
        return None

    @staticmethod
    def _json_body(environ: dict, *, required: bool = True) -> dict[str, Any]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        if not raw.strip():
            if required:
                raise BadBody("Required request body is missing")
            return {}
        try:
            body = jsonfast.loads(raw)
        except ValueError:
            raise BadBody("JSON parse error") from None
        if not isinstance(body, dict):
            raise BadBody("expected a JSON object")
        return body

    # ------------------------------------------------------------------ routing
    def _route(self, method: str, path: str, environ: dict, query: dict, principal: dict | None) -> Response:
        p = path.rstrip("/") or "/"
        routes: dict[tuple[str, str], Callable[..., Response]] = {
            ("GET", "/api/health"): self.health,
            ("GET", "/api/auth"): self.auth_info,
            ("POST", "/api/auth/register"): self.register,
            ("POST", "/api/auth/login"): self.login,
            ("POST", "/api/auth/logout"): self.logout,
            ("POST", "/api/auth/verify-token"): self.verify_token,
            ("POST", "/api/auth/refresh-token"): self.refresh_token,
            ("GET", "/api/rooms"): self.list_rooms,
            ("POST", "/api/rooms"): self.create_room,
            ("GET", "/api/rooms/health"): self.rooms_health,
            ("GET", "/api"): self.api_info,
            ("POST", "/api/files/upload"): self.upload_file,
        }
        handler = routes.get((method, p))
        if handler is not None:
            return handler(environ, query, principal)
        m = ROOM_PATH_RE.match(path)
        if m and m.group(1) != "health":
            if m.group(2) and method == "POST":
                return self.join_room(environ, m.group(1), principal)
            if not m.group(2) and method == "GET":
                return self.get_room(m.group(1))
            return self._method_not_allowed(path)
        if any(k[1] == p for k in routes):
            return self._method_not_allowed(path)
        return Response(404, {"success": False, "path": path, "message": MSG_NOT_FOUND})

    @staticmethod
    def _method_not_allowed(path: str) -> Response:
        return Response(405, {"success": False, "path": path, "message": "서버 에러가 발생했습니다."})

    # ------------------------------------------------------------------ misc endpoints
    def health(self, environ: dict, query: dict, principal: dict | None) -> Response:
        return Response(200, {"status": "ok", "timestamp": iso_instant(int(time.time() * 1000)), "env": self.env_name})

    def auth_info(self, environ: dict, query: dict, principal: dict | None) -> Response:
        return Response(200, {"status": "active", "routes": {
            "/register": "POST - 새 사용자 등록", "/login": "POST - 사용자 로그인", "/logout": "POST - 로그아웃",
            "/verify-token": "POST - 토큰 검증", "/refresh-token": "POST - 토큰 갱신"}})

    def api_info(self, environ: dict, query: dict, principal: dict | None) -> Response:
        return Response(200, {"name": "Chat App API", "version": "1.0.0", "endpoints": {
            "auth": "/api/auth", "users": "/api/users", "rooms": "/api/rooms", "files": "/api/files",
            "message": "/api/message"}})

    def rooms_health(self, environ: dict, query: dict, principal: dict | None) -> Response:
        headers = [("Cache-Control", "no-cache, must-revalidate"), ("Pragma", "no-cache"), ("Expires", "0")]
        now = iso_instant(int(time.time() * 1000))
        if len(self.store.rooms) >= 2:  # Java's unbounded single-result queries throw once ≥2 rooms exist
            return Response(503, {"success": False, "timestamp": now, "services": {}}, headers)
        body: dict[str, Any] = {"success": True, "timestamp": now,
                                "services": {"database": {"connected": True, "latency": 0}}}
        if self.store.rooms:
            body["lastActivity"] = iso_instant(next(iter(self.store.rooms.values())).created_at)
        return Response(200, body, headers)

    # ------------------------------------------------------------------ auth endpoints
    def register(self, environ: dict, query: dict, principal: dict | None) -> Response:
        body = self._json_body(environ)
        name, email, password = (_as_str(body.get(k)) for k in ("name", "email", "password"))
        errors = []
        if name is None or len(name.strip()) < 2:
            errors.append({"field": "name", "message": "이름은 2자 이상이어야 합니다."})
        if email is None or not EMAIL_RE.match(email):
            errors.append({"field": "email", "message": "올바른 이메일 형식이 아닙니다."})
        if password is None or not password.strip() or len(password) < 6:
            errors.append({"field": "password", "message": "비밀번호는 6자 이상이어야 합니다."})
        if errors:
            return Response(400, {"success": False, "message": "입력값이 올바르지 않습니다.", "errors": errors,
                                  "code": "VALIDATION_ERROR"})
        assert name is not None and email is not None and password is not None
        email_l = email.lower()
        if email_l in self.store.users_by_email:
            return Response(409, {"success": False, "message": "이미 등록된 이메일입니다."})
        salt, pwhash = hash_password(password)
        user = self.store.add_user(name.strip(), email_l, salt, pwhash)
        return Response(201, {"success": True, "token": None, "sessionId": None, "user": auth_user(user),
                              "message": "회원가입이 완료되었습니다."})

    def login(self, environ: dict, query: dict, principal: dict | None) -> Response:
        body = self._json_body(environ)
        email, password = _as_str(body.get("email")), _as_str(body.get("password"))
        errors = []
        if email is None or not email.strip():
            errors.append({"field": "email", "message": "이메일을 입력해주세요."})
        elif not EMAIL_RE.match(email):
            errors.append({"field": "email", "message": "올바른 이메일 형식이 아닙니다."})
        if password is None or not password.strip():
            errors.append({"field": "password", "message": "비밀번호를 입력해주세요."})
        if errors:
            return Response(400, {"success": False, "message": "입력값이 올바르지 않습니다.", "errors": errors,
                                  "code": "VALIDATION_ERROR"})
        assert email is not None and password is not None
        user = self.store.users_by_email.get(email.lower())
        if user is None or not check_password(password, user.salt, user.pwhash):
            return Response(401, {"success": False, "message": "이메일 또는 비밀번호가 올바르지 않습니다."})
        session = self.auth.create_session(user, environ.get("HTTP_USER_AGENT"), environ.get("REMOTE_ADDR"))
        token = self.auth.make_token(user, session.session_id)
        return Response(
            200,
            {"success": True, "token": token, "sessionId": session.session_id, "user": auth_user(user), "message": None},
            [("Authorization", f"Bearer {token}"), ("x-session-id", session.session_id)],
        )

    def logout(self, environ: dict, query: dict, principal: dict | None) -> Response:
        session_id = self._session_header(environ, query)
        if not session_id:
            return Response(400, {"success": False, "message": "x-session-id 헤더가 필요합니다."})
        if principal is not None:
            user_id = principal["userId"]
            self.auth.remove_session(user_id, session_id)
            self.emit("session_ended", {"reason": "logout", "message": "로그아웃되었습니다."}, f"user:{user_id}")
        return Response(200, {"success": True, "message": "로그아웃이 완료되었습니다."})

    def _token_and_session(self, environ: dict, query: dict) -> tuple[str | None, str | None]:
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if not token:
            authz = environ.get("HTTP_AUTHORIZATION", "")
            token = authz[7:].strip() if authz[:7].lower() == "bearer " else None
        return token or None, self._session_header(environ, query)

    def verify_token(self, environ: dict, query: dict, principal: dict | None) -> Response:
        token, session_id = self._token_and_session(environ, query)
        if not token or not session_id:
            return Response(400, {"success": False, "message": MSG_TOKEN_OR_SESSION, "user": None})
        try:
            claims = self.auth.decode(token)
        except InvalidToken:
            return Response(401, {"success": False, "message": "유효하지 않은 토큰입니다.", "user": None})
        user = self.store.users.get(claims["userId"])
        if user is None:
            return Response(401, {"success": False, "message": MSG_USER_NOT_FOUND, "user": None})
        if not self.auth.validate_session(user.id, session_id):
            return Response(401, {"success": False, "message": MSG_EXPIRED_SESSION, "user": None})
        return Response(200, {"success": True, "message": "토큰이 유효합니다.", "user": auth_user(user)})

    def refresh_token(self, environ: dict, query: dict, principal: dict | None) -> Response:
        token, session_id = self._token_and_session(environ, query)
        if not token or not session_id:
            return Response(400, {"success": False, "message": MSG_TOKEN_OR_SESSION, "token": None, "sessionId": None})
        try:
            claims = self.auth.decode(token, verify_exp=False)
        except InvalidToken:
            return Response(401, {"success": False, "message": "토큰 갱신 중 오류가 발생했습니다.", "token": None,
                                  "sessionId": None})
        user = self.store.users.get(claims["userId"])
        if user is None:
            return Response(401, {"success": False, "message": MSG_USER_NOT_FOUND, "token": None, "sessionId": None})
        if not self.auth.validate_session(user.id, session_id):
            return Response(401, {"success": False, "message": MSG_EXPIRED_SESSION, "token": None, "sessionId": None})
        self.auth.remove_session(user.id, session_id)
        session = self.auth.create_session(user, environ.get("HTTP_USER_AGENT"), environ.get("REMOTE_ADDR"))
        return Response(200, {"success": True, "message": "토큰이 갱신되었습니다.",
                              "token": self.auth.make_token(user, session.session_id), "sessionId": session.session_id})

    # ------------------------------------------------------------------ files
    def upload_file(self, environ: dict, query: dict, principal: dict | None) -> Response:
        """``POST /api/files/upload`` (multipart field ``file``): only the metadata is kept.

        It exists so that ``chatMessage`` with ``type:"file"`` can be exercised; the bytes are read
        and counted, not stored.
        """
        def fail(reason: str) -> Response:
            return Response(500, {"success": False, "message": "파일 업로드 중 오류가 발생했습니다.", "error": reason})

        user = self._principal_user(principal)
        if user is None:
            return fail("user not found")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length <= 0 or length > MAX_UPLOAD:
            return fail("missing or too large request body")
        part = multipart_file(environ.get("CONTENT_TYPE", ""), environ["wsgi.input"].read(length))
        if part is None:
            return fail("Required request part 'file' is not present")
        filename, mimetype, size = part
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        allowed = ALLOWED_UPLOADS.get(mimetype)
        if allowed is None or ext not in allowed[0]:
            return fail("지원하지 않는 파일 형식입니다.")
        if size > allowed[1]:
            return fail("파일 크기가 너무 큽니다.")
        import os as _os

        stored = f"{int(time.time() * 1000)}_{_os.urandom(8).hex()}.{ext}"
        f = self.store.add_file(stored, filename, mimetype, size, user.id)
        return Response(200, {"success": True, "message": "파일 업로드 성공", "file": {
            "_id": f["_id"], "filename": stored, "originalname": filename, "mimetype": mimetype, "size": size,
            "uploadDate": iso_local(f["uploadDate"])}})

    # ------------------------------------------------------------------ rooms
    def _principal_user(self, principal: dict | None) -> User | None:
        return self.store.users.get(principal["userId"]) if principal else None

    def list_rooms(self, environ: dict, query: dict, principal: dict | None) -> Response:
        ip = (environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[0].strip() or environ.get("HTTP_X_REAL_IP")
              or environ.get("REMOTE_ADDR", ""))
        allowed, remaining, reset_s, retry_after = self.rooms_limiter.hit("ip:" + ip)
        rl_headers = [("X-RateLimit-Limit", "10000"), ("X-RateLimit-Remaining", str(remaining)),
                      ("X-RateLimit-Reset", str(reset_s)), ("X-RateLimit-Window", "30")]
        if not allowed:
            return Response(429, {"success": False, "message": "너무 많은 요청이 발생했습니다. 잠시 후 다시 시도해주세요.",
                                  "meta": {"code": "TOO_MANY_REQUESTS", "maxRequests": 10000, "windowMs": 30000,
                                           "retryAfter": retry_after}},
                            rl_headers + [("Retry-After", str(retry_after))])

        def q(name: str, default: str) -> str:
            v = query.get(name)
            return v[0] if v else default

        try:
            page = max(0, int(q("page", "0")))
            page_size = min(50, max(1, int(q("pageSize", "10"))))
        except ValueError:
            raise BadBody("Failed to convert value of type 'java.lang.String' to required type 'int'") from None
        sort_field = q("sortField", "createdAt")
        if sort_field not in ("createdAt", "name", "participantsCount"):
            sort_field = "createdAt"
        sort_order = q("sortOrder", "desc")
        if sort_order not in ("asc", "desc"):
            sort_order = "desc"
        search = q("search", "").lower()

        rooms = list(self.store.rooms.values())
        if search:
            rooms = [r for r in rooms if search in r.name.lower()]
        if sort_field == "name":
            key = lambda r: (r.name, r.seq)  # noqa: E731
        elif sort_field == "participantsCount":
            key = lambda r: (len(r.participants), r.seq)  # noqa: E731
        else:
            key = lambda r: (r.created_at, r.seq)  # noqa: E731
        rooms.sort(key=key, reverse=(sort_order == "desc"))
        total = len(rooms)
        chunk = rooms[page * page_size:(page + 1) * page_size]
        data = [room_response(self.store, r, profile="null") for r in chunk]
        meta = {"total": total, "page": page, "pageSize": page_size,
                "totalPages": math.ceil(total / page_size) if page_size else 0,
                "hasMore": (page + 1) * page_size < total, "currentCount": len(data),
                "sort": {"field": sort_field, "order": sort_order}}
        headers = rl_headers + [("Cache-Control", "max-age=10"),
                                ("Last-Modified", iso_instant(int(time.time() * 1000)))]
        return Response(200, {"success": True, "data": data, "metadata": meta}, headers)

    def create_room(self, environ: dict, query: dict, principal: dict | None) -> Response:
        body = self._json_body(environ)
        name, password = _as_str(body.get("name")), _as_str(body.get("password"))
        errors = []
        if name is None or not name.strip():
            errors.append({"field": "name", "message": "must not be blank"})
        if name is not None and not (2 <= len(name) <= 100):
            errors.append({"field": "name", "message": "size must be between 2 and 100"})
        if password is not None and not (4 <= len(password) <= 100):
            errors.append({"field": "password", "message": "size must be between 4 and 100"})
        if errors:
            return Response(400, {"success": False, "errors": errors, "code": "VALIDATION_ERROR", "path": "/api/rooms"})
        assert name is not None
        user = self._principal_user(principal)
        if user is None:
            return Response(500, {"success": False, "message": "채팅방 생성에 실패했습니다."})
        salt = pwhash = None
        if password:
            salt, pwhash = hash_password(password)
        room = self.store.add_room(name.strip(), user.id, salt, pwhash)
        self.emit("roomCreated", room_response(self.store, room, profile="omit"), "room-list")
        return Response(201, {"success": True, "data": room_response(self.store, room, profile="empty")})

    def get_room(self, room_id: str) -> Response:
        room = self.store.rooms.get(room_id)
        if room is None:
            return Response(404, {"success": False, "message": MSG_ROOM_NOT_FOUND})
        return Response(200, {"success": True, "data": room_response(self.store, room, profile="empty")})

    def join_room(self, environ: dict, room_id: str, principal: dict | None) -> Response:
        body = self._json_body(environ)
        password = _as_str(body.get("password"))
        room = self.store.rooms.get(room_id)
        if room is None:
            return Response(404, {"success": False, "message": MSG_ROOM_NOT_FOUND})
        if room.has_password and (password is None or not check_password(password, room.salt, room.pwhash)):
            return Response(401, {"success": False, "message": "비밀번호가 일치하지 않습니다."})
        user = self._principal_user(principal)
        if user is None:
            return Response(400, {"success": False, "message": "User not found"})
        self.store.add_participant(room, user.id)
        self.emit("roomUpdated", room_response(self.store, room, profile="omit"), room.id)
        return Response(200, {"success": True, "data": room_response(self.store, room, profile="empty")})
