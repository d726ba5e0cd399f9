"""The Node server's authentication: JWT ``{user:{id}, sessionId}`` and one 64-hex session per user (§2.5)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import gevent.lock
import jwt

from loadkit.protocols import ktb_vocab as V

from ..socket_server import precise_sleep
from ..store import Session, Store, User

JWT_TTL_S = 24 * 3600
SESSION_TTL_MS = 24 * 3600 * 1000


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
