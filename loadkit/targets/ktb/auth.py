"""Passwords, JWTs, the one-session-per-user model and the chatMessage rate limiter.

Mirrors the Java ``JwtService``, ``SessionService`` and ``RateLimitService``: HS256 tokens carrying
``sub`` (email), ``sessionId`` and ``userId``; one 32-hex session per user that every login replaces;
a sliding 30-minute idle timeout; a fixed one-minute window per user for chatMessage. Passwords use a
salted SHA-256 instead of BCrypt on purpose: a load test logs in thousands of users and must not be
limited by the reference server's password hashing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any

import jwt

from .store import Session, Store, User

JWT_TTL_S = 24 * 3600
SESSION_TTL_MS = 30 * 60 * 1000
LEEWAY_S = 60


def hash_password(password: str, salt: str | None = None) -> tuple[str, str]:
    salt = salt or secrets.token_hex(8)
    return salt, hashlib.sha256((salt + password).encode()).hexdigest()


def check_password(password: str, salt: str | None, pwhash: str | None) -> bool:
    if not salt or not pwhash:
        return False
    return hmac.compare_digest(hash_password(password, salt)[1], pwhash)


class InvalidToken(Exception):
    """The JWT is malformed, badly signed, expired or lacks the sessionId/userId claims."""


class Auth:
    """Tokens and sessions on top of the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.secret = store.jwt_secret

    # ------------------------------------------------------------------ tokens
    def make_token(self, user: User, session_id: str) -> str:
        now = int(time.time())
        claims = {"sub": user.email, "iat": now, "exp": now + JWT_TTL_S, "sessionId": session_id, "userId": user.id}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def decode(self, token: str, verify_exp: bool = True) -> dict[str, Any]:
        """Claims of a valid token, else ``InvalidToken`` (Java ``extractUserId`` throwing)."""
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=["HS256"], leeway=LEEWAY_S,
                options={"verify_exp": verify_exp, "require": []},
            )
        except Exception as exc:  # any jwt error, or a non-str token
            raise InvalidToken(str(exc)) from None
        if not isinstance(claims, dict) or not claims.get("sessionId") or not claims.get("userId"):
            raise InvalidToken("missing sessionId/userId claim")
        if not isinstance(claims["sessionId"], str) or not isinstance(claims["userId"], str):
            raise InvalidToken("bad claim type")
        return claims

    # ------------------------------------------------------------------ sessions
    def create_session(self, user: User, user_agent: str | None = None, ip: str | None = None) -> Session:
        """Replace every earlier session of this user (Java ``removeAllUserSessions`` + insert)."""
        now = int(time.time() * 1000)
        s = Session(user.id, uuid.uuid4().hex, now, now, user_agent, ip)
        self.store.put_session(s)
        return s

    def validate_session(self, user_id: str | None, session_id: str | None) -> bool:
        """True if ``session_id`` is the user's live session; refreshes it (sliding 30 min)."""
        if not user_id or not session_id:
            return False
        s = self.store.sessions.get(user_id)
        if s is None or s.session_id != session_id:
            return False
        now = int(time.time() * 1000)
        if now - s.last_activity > SESSION_TTL_MS:
            self.store.delete_session(user_id)
            return False
        s.last_activity = now
        return True

    def remove_session(self, user_id: str, session_id: str) -> bool:
        s = self.store.sessions.get(user_id)
        if s is not None and s.session_id == session_id:
            self.store.delete_session(user_id)
            return True
        return False


class FixedWindowLimiter:
    """Fixed window that starts at the first request (Java ``RateLimitService``), per key.

    Java only resets when MongoDB's TTL monitor deletes the counter (up to ~60 s late); this one
    resets exactly when the window ends.
    """

    def __init__(self, max_requests: int, window_s: float) -> None:
        self.max = max_requests
        self.window_ms = int(window_s * 1000)
        self._state: dict[str, list[int]] = {}  # key -> [count, expires_at_ms]

    def hit(self, key: str, now_ms: int | None = None) -> tuple[bool, int, int, int]:
        """Count one request: (allowed, remaining, reset_epoch_s, retry_after_s)."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        st = self._state.get(key)
        if st is None or now >= st[1]:
            st = self._state[key] = [0, now + self.window_ms]
        reset_s = st[1] // 1000
        if st[0] >= self.max:
            return False, 0, reset_s, max(1, reset_s - now // 1000)
        st[0] += 1
        return True, self.max - st[0], reset_s, 0
