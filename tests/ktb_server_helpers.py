"""Helpers for the KTB reference-server tests: start it, make users, record Socket.IO events."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests
import socketio

from loadkit.procs import free_port, loadkit_argv

_counter = itertools.count()


@dataclass
class Ktb:
    rest: str
    sock: str
    proc: Any

    def register(self, name: str | None = None, password: str = "secret1") -> dict:
        n = next(_counter)
        email = f"user{n}-{time.time_ns()}@test.io"
        r = requests.post(f"{self.rest}/api/auth/register", json={"name": name or f"user{n}", "email": email,
                                                                  "password": password})
        assert r.status_code == 201, r.text
        return {"email": email, "password": password, "name": name or f"user{n}", "id": r.json()["user"]["_id"]}

    def login(self, user: dict) -> dict:
        r = requests.post(f"{self.rest}/api/auth/login", json={"email": user["email"], "password": user["password"]})
        assert r.status_code == 200, r.text
        j = r.json()
        return dict(user, token=j["token"], sessionId=j["sessionId"])

    def new_user(self, name: str | None = None) -> dict:
        return self.login(self.register(name))

    @staticmethod
    def headers(user: dict) -> dict:
        return {"x-auth-token": user["token"], "x-session-id": user["sessionId"]}

    def create_room(self, user: dict, name: str = "test room", password: str | None = None) -> dict:
        body: dict[str, Any] = {"name": name}
        if password is not None:
            body["password"] = password
        r = requests.post(f"{self.rest}/api/rooms", json=body, headers=self.headers(user))
        assert r.status_code == 201, r.text
        return r.json()["data"]

    def peer(self, user: dict | None, **kw: Any) -> "Peer":
        auth = None if user is None else {"token": user["token"], "sessionId": user["sessionId"]}
        return Peer(self.sock, auth, **kw)


def start_ktb(spawn: Callable, *extra: str, single: bool = False, name: str = "ktb") -> Ktb:
    port = free_port()
    rest_port = port if single else free_port()
    argv = loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(rest_port), *extra)
    proc = spawn(argv, port=rest_port, name=name)
    from loadkit.procs import wait_for_port

    wait_for_port("127.0.0.1", port, proc=proc.proc)
    return Ktb(f"http://127.0.0.1:{rest_port}", f"http://127.0.0.1:{port}", proc)


class Peer:
    """A python-socketio ``Client`` that records every event it receives, in order."""

    def __init__(self, url: str, auth: dict | None, *, transports: tuple[str, ...] = ("websocket",),
                 user_agent: str | None = "pytest-ktb", connect: bool = True) -> None:
        self.url = url
        self.auth = auth
        self.transports = list(transports)
        self.headers = {"User-Agent": user_agent} if user_agent else {}
        self.log: list[tuple[str, tuple]] = []
        self.cond = threading.Condition()
        self.connect_error: Any = None
        self.client = socketio.Client(reconnection=False)
        self.client.on("*", self._on_any)
        self.client.on("connect_error", self._on_connect_error)
        if connect:
            self.connect()

    def connect(self) -> None:
        self.client.connect(self.url, auth=self.auth, transports=self.transports, headers=self.headers,
                            wait_timeout=10)

    def _on_any(self, event: str, *args: Any) -> None:
        with self.cond:
            self.log.append((event, args))
            self.cond.notify_all()

    def _on_connect_error(self, *args: Any) -> None:
        with self.cond:
            self.connect_error = args[0] if args else None
            self.cond.notify_all()

    def emit(self, event: str, *args: Any) -> None:
        self.client.emit(event, args if len(args) != 1 else args[0]) if args else self.client.emit(event)

    def wait(self, event: str, pred: Callable[[tuple], bool] | None = None, timeout: float = 5.0) -> tuple:
        """Pop and return the args of the first recorded ``event`` matching ``pred``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, (ev, args) in enumerate(self.log):
                    if ev == event and (pred is None or pred(args)):
                        del self.log[i]
                        return args
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {event!r} within {timeout}s; got {[e for e, _ in self.log]}")
                self.cond.wait(left)

    def wait1(self, event: str, pred: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        args = self.wait(event, (lambda a: pred(a[0] if a else None)) if pred else None, timeout)
        return args[0] if args else None

    def events(self) -> list[str]:
        with self.cond:
            return [e for e, _ in self.log]

    def quiet(self, event: str, within: float = 0.4) -> bool:
        """True when no ``event`` arrives within ``within`` seconds (for "nothing is sent" checks)."""
        try:
            self.wait(event, timeout=within)
        except AssertionError:
            return True
        return False

    def clear(self) -> None:
        with self.cond:
            self.log.clear()

    def close(self) -> None:
        try:
            self.client.disconnect()
        except Exception:
            pass
