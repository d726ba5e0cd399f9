"""The WSGI plumbing both variants' REST apps share: the response value, reason phrases, CORS headers.

Kept apart from ``rest.py`` (Java) so that the Node variant's app (``node/rest.py``) builds on the
same response type without importing the Java controllers.
"""

from __future__ import annotations

from typing import Any, Callable

CORS_HEADERS = [
    ("Access-Control-Allow-Credentials", "true"),
    ("Access-Control-Expose-Headers", "x-auth-token, x-session-id"),
]

Emit = Callable[[str, Any, str], None]  # (event, data, room)


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: Any = None, headers: list[tuple[str, str]] | None = None, *, empty: bool = False):
        self.status = status
        self.body = None if empty else body
        self.headers = headers or []


REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}
