"""The REST side of ``KtbChatUser``: Locust's HTTP session (``RestSession``), the server-variant probe
before the first task (``decide_variant``), and the user's REST calls (``KtbRestCalls``: register
and log in, the group's room, whether the user is still listed in a room). Every call is reported
under its own request name (docs/ktb-users.md); the answers are parsed by the pure
:mod:`loadkit.protocols.ktb_answers`, failures worded by ``ktb.rest_failure_text``.
"""

from __future__ import annotations

import time
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust.contrib.fasthttp import FastHttpSession

from loadkit.protocols import ktb, ktb_answers
from loadkit.protocols import ktb_variants as variants
from loadkit.users import ktb_state as state
from loadkit.users.ktb_state import COUNTERS


class RestSession(FastHttpSession):
    """Locust's FastHttpSession, and a REST call still waiting when the user is stopped (the end of
    the run: a login the server never answers, within a long ``--ktb-rest-timeout``) is counted as
    unfinished under its own row (``POST /api/auth/login``), like the Socket.IO requests: never
    dropped (issue #15 item 2)."""

    measure: Any = None

    def request(self, method: str, url: str, name: str | None = None, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return super().request(method, url, name=name, **kwargs)
        except gevent.GreenletExit:
            if self.measure is not None:
                self.measure.unfinished(name or url, (time.perf_counter() - t0) * 1000.0, request_type=method)
            raise


def decide_variant(host: str, socket_url: str | None, forced: str, timeout: float, verify: bool) -> tuple[str, str]:
    """``--ktb-server``, or (auto) what the server shows before the test: one URL or two, and
    ``GET /health`` vs ``GET /api/health`` (rules: ``ktb_variants.detect_variant``)."""
    if forced in variants.RULES:
        return forced, f"--ktb-server {forced}"
    import requests  # here, not at the top: imported before locust it breaks gevent's ssl patch
    def probe(path: str) -> tuple[int | None, str | None]:
        try:
            r = requests.get(host.rstrip("/") + path, timeout=timeout, verify=verify, allow_redirects=False)
        except requests.RequestException:
            return None, None
        return r.status_code, r.headers.get("X-Powered-By")

    if variants.separate_socket_url(host, socket_url):
        return variants.detect_variant(two_urls=True, health=None, api_health=None)
    api_health, _ = probe("/api/health")
    health, powered = probe("/health")
    return variants.detect_variant(two_urls=False, health=health, api_health=api_health, powered_by=powered)


class KtbRestCalls:
    """``KtbChatUser``'s REST calls (a mixin: ``self`` is the user, with its ``rest`` session,
    ``host``, ``timeout``/``rest_timeout``, credentials and room)."""

    def _rest_headers(self) -> dict[str, str]:
        return {"x-auth-token": self.token or "", "x-session-id": self.session_id or ""}

    def _rest_failure(self, r: Any) -> str:
        return ktb.rest_failure_text(r.status_code or 0, _text(r), getattr(r, "error", None), self.rest_timeout)

    def login(self) -> None:
        """Register (201, or 409 = exists) then log in; sets token, sessionId and user id.

        Node's register already logs in (201 with a token and a sessionId): then no login call. A
        register that got no answer (timed out, reset) may still have created the account on the
        server: it is reported, and the login is tried anyway.
        """
        body = {"name": self.display_name, "email": self.email, "password": self.password}
        creds = None
        with self.rest.post("/api/auth/register", json=body, name="/api/auth/register", catch_response=True) as r:
            if r.status_code in (200, 201):
                try:  # an HTML page or a wrong-typed `user` is the server's failure, not a crash
                    data, uid = ktb_answers.register_answer(r.status_code, _text(r))
                except ValueError as exc:
                    r.failure(f"HTTP {r.status_code}: {exc}")
                    raise ktb.AuthFailed(str(r.status_code), "register failed") from None
                r.success()
                creds = variants.auth_from_register(r.status_code, data)
            elif r.status_code == 409:
                r.success()
            else:
                r.failure(self._rest_failure(r))
                if r.status_code:  # the server answered: no account was made
                    raise ktb.AuthFailed(str(r.status_code), "register failed")
        if creds is not None:
            self.token, self.session_id = creds
            self._keep_secret()
            self.user_id = uid
            if self.user_id:
                return
        with self.rest.post(
            "/api/auth/login", json={"email": self.email, "password": self.password}, name="/api/auth/login", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(self._rest_failure(r))
                raise ktb.AuthFailed(str(r.status_code), "login failed")
            try:  # `"user": "bob"`, a number as token, an HTML page: the login failed, the user lives
                self.token, self.session_id, self.user_id = ktb_answers.login_answer(_text(r))
            except ValueError as exc:
                r.failure(f"HTTP 200: {exc}")
                raise ktb.AuthFailed("200", "login failed") from None
            self._keep_secret()

    def _keep_secret(self) -> None:
        """The literal secrets no failure text of this user may show, whatever a server echoes:
        its password, and its current token and session id (patterns such as JWTs and keyed
        values are masked anyway, see loadkit/redact.py)."""
        self.measure.secrets[:] = [s for s in (self.password, self.token, self.session_id) if s]

    def room_for_me(self) -> str:
        """The room of this user's group; the group's first user creates it over REST."""
        if self.fixed_room:
            return self.fixed_room
        group = self.user_no // self.room_size
        key = self._room_key()
        slot = state.ROOMS.get(key)
        if slot is None or (slot.ready() and not slot.successful()):
            slot = state.ROOMS[key] = AsyncResult()
            try:
                slot.set(self._create_room(group))
            except Exception as exc:  # noqa: BLE001 - waiting members must see it too
                slot.set_exception(exc)
                raise
        return slot.get(timeout=self.timeout * 3)

    def _room_key(self) -> tuple:
        # per target: one process may load several servers
        return (self.host, self.room_size, self.user_no // self.room_size)

    def _forget_room(self, room_id: str | None) -> None:
        """The server no longer knows our group's room (it restarted with an in-memory store, or
        the room was deleted): the next ``room_for_me`` of the group creates it again."""
        slot = state.ROOMS.get(self._room_key())
        if slot is not None and slot.ready() and slot.successful() and slot.get() == room_id:
            del state.ROOMS[self._room_key()]
            COUNTERS.bump("rooms_recreated")

    def _create_room(self, group: int) -> str:
        name = f"lk {self.run_id} {state.PID} room {group}"
        with self.rest.post("/api/rooms", json={"name": name}, headers=self._rest_headers(), name="/api/rooms", catch_response=True) as r:
            if r.status_code not in (200, 201):
                r.failure(self._rest_failure(r))
                raise ktb.ServerError(str(r.status_code), "room creation failed")
            try:
                room = ktb_answers.room_answer(_text(r))
            except ValueError as exc:
                r.failure(f"HTTP {r.status_code}: {exc}")
                raise ktb.ServerError(str(r.status_code), "room creation failed") from None
            return room

    def _listed(self, room: str) -> bool | None:
        """Is this user a participant of ``room`` according to ``GET /api/rooms/:id`` (None: unknown)?"""
        with self.rest.get(f"/api/rooms/{room}", headers=self._rest_headers(), name="/api/rooms/[id]",
                           catch_response=True) as r:
            listed = variants.user_listed(_json(r), self.user_id or "") if r.status_code == 200 else None
            if listed is None:
                r.failure(self._rest_failure(r))
            else:
                r.success()
        return listed

    def _await_left_via_rest(self, room: str) -> bool:
        """Poll ``GET /api/rooms/:id`` until this user is no longer listed (at most --ktb-timeout)."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._listed(room) is False:
                return True
            if time.monotonic() >= deadline:
                COUNTERS.bump("leave_unconfirmed")
                return False
            gevent.sleep(0.1)

def _text(resp: Any) -> str:
    try:
        return resp.text or ""
    except Exception:  # noqa: BLE001 - no body at all (no response)
        return ""


def _json(resp: Any) -> dict:
    try:
        data = resp.json()
    except Exception:  # noqa: BLE001 - an empty or HTML body is a failure, not a crash
        return {}
    return data if isinstance(data, dict) else {}
