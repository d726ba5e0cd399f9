"""Locustfile for bench/bench_ktb_users.py: the same chat round trip done two ways.

- ``LoadkitChat``: loadkit's ``KtbChatUser`` (REST login, connect, join, then chatMessage →
  own echo, measured per round trip), with the other tasks weighted 0 by the bench.
- ``MinimalChat``: a minimal gevent + websocket-client loop (reference point, see the class).
- ``BuiltinChat``: Locust's built-in ``locust.contrib.socketio.SocketIOUser`` (python-socketio's
  threaded client) doing the same: connect with auth, joinRoom, then emit chatMessage and wait for
  its own ``message`` echo (matched by content).

Both count completed round trips in ``ROUND_TRIPS``; a sampler records them every
second to ``$BENCH_OUT`` (``[(t, count, process_cpu_seconds), ...]``) (JSON) when Locust quits. Room of user ``n`` = ``n // $BENCH_ROOM_SIZE``.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import time

import gevent
from gevent.event import Event
import websocket
from locust import User, events, task
from locust.contrib.socketio import SocketIOUser as BuiltinSocketIOUser

from loadkit.users.ktb import KtbChatUser

ROUND_TRIPS = [0]
SAMPLES: list[tuple[float, int]] = []
ROOM_SIZE = int(os.environ.get("BENCH_ROOM_SIZE", "1"))
_SEQ = itertools.count()


class LoadkitChat(KtbChatUser):
    pass


@events.request.add_listener
def _count(request_type, name, exception, **_kw):
    if request_type == "ktb" and name == "chatMessage" and exception is None:
        ROUND_TRIPS[0] += 1


class BuiltinChat(BuiltinSocketIOUser):
    options = {"reconnection": False}

    def on_start(self) -> None:
        n = next(_SEQ)
        self.room = f"bench-room-{n // ROOM_SIZE}"
        self.tag = f"b{n}-"
        self.seq = 0
        self.waiting: str | None = None
        self.got = Event()
        self.sio.on("message", self._on_message)
        self.sio.connect(self.host, auth={"token": f"t{n:024x}", "sessionId": "s"}, transports=["websocket"],
                         wait_timeout=30)
        joined = Event()
        self.sio.on("joinRoomSuccess", lambda *_: joined.set())
        self.sio.emit("joinRoom", self.room)
        joined.wait(30)

    def _on_message(self, msg) -> None:
        if isinstance(msg, dict) and msg.get("content") == self.waiting:
            self.got.set()

    @task
    def chat(self) -> None:
        self.seq += 1
        content = f"{self.tag}{self.seq}"
        self.waiting = content
        self.got.clear()
        self.sio.emit("chatMessage", {"room": self.room, "type": "text", "content": content})
        if self.got.wait(10):
            ROUND_TRIPS[0] += 1

    def on_stop(self) -> None:
        self.sio.disconnect()


class MinimalChat(User):
    """Reference point: the smallest honest gevent + websocket-client loop (hand-written ``42[...]``
    strings, one greenlet, no correlation machinery), firing one request event per round trip."""

    def on_start(self) -> None:
        n = next(_SEQ)
        self.room = f"bench-room-{n // ROOM_SIZE}"
        self.tag = f"m{n}-"
        self.seq = 0
        url = self.host.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.ws = websocket.WebSocket(enable_multithread=False, skip_utf8_validation=True,
                                      sockopt=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),))
        self.ws.connect(url)
        self.ws.recv()
        self.ws.send('40{"token":"t%024x","sessionId":"s"}' % n)
        self.ws.recv()
        self.ws.send('42["joinRoom","%s"]' % self.room)
        while "joinRoomSuccess" not in self.ws.recv():
            pass

    @task
    def chat(self) -> None:
        self.seq += 1
        content = f"{self.tag}{self.seq}"
        t0 = time.perf_counter()
        self.ws.send('42["chatMessage",{"room":"%s","type":"text","content":"%s"}]' % (self.room, content))
        needle = '"content":"%s"' % content
        while True:
            m = self.ws.recv()
            if m == "2":
                self.ws.send("3")
            elif needle in m:
                break
        self.environment.events.request.fire(request_type="min", name="chatMessage",
                                             response_time=(time.perf_counter() - t0) * 1000,
                                             response_length=len(m), exception=None, context={})
        ROUND_TRIPS[0] += 1

    def on_stop(self) -> None:
        self.ws.close()


def _sampler() -> None:
    while True:
        SAMPLES.append((time.monotonic(), ROUND_TRIPS[0], time.process_time()))
        gevent.sleep(1.0)


@events.test_start.add_listener
def _start(environment, **_kw):
    gevent.spawn(_sampler)


@events.quitting.add_listener
def _dump(environment, **_kw):
    SAMPLES.append((time.monotonic(), ROUND_TRIPS[0], time.process_time()))
    path = os.environ.get("BENCH_OUT")
    if path:
        with open(path, "w") as f:
            json.dump(SAMPLES, f)
