"""A tiny python-socketio server for the Socket.IO client tests (run as a subprocess).

    python tests/sio_test_server.py PORT [CERTFILE KEYFILE]   (the latter: TLS)

- CONNECT needs ``auth == {"token": "good"}``; anything else gets CONNECT_ERROR
  ``{"message": "Invalid token"}``; ``auth == {"token": "string"}`` gets the string form.
- ``echo`` → ``echoed`` with the same args; ``ask`` → ack with the args reversed.
- ``joinRoom roomId`` → ``joinRoomSuccess {roomId}`` or, for ``"missing"``, ``joinRoomError``.
- ``later {delay, event, data}`` → ``event data`` after ``delay`` s (timeouts, late answers).
- ``bin`` → ``binary {"blob": <bytes>, "n": len}`` echo of a bytes argument.
- ``kick`` → server disconnects this client. Namespace ``/admin`` answers ``whoami`` with ``admin``.
- ``leaveAdmin`` (on ``/admin``) → the server disconnects this client's ``/admin`` namespace only.
- ``disconnects`` → ``disconnects [reason, ...]``: why each earlier client went away, as the server saw it.
Pings every 1 s so pong handling is exercised.
"""

from __future__ import annotations

import sys

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402
import socketio  # noqa: E402
from gevent import pywsgi  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402

sio = socketio.Server(async_mode="gevent", ping_interval=1, ping_timeout=2, cors_allowed_origins="*")


@sio.event
def connect(sid, environ, auth):
    if auth == {"token": "string"}:
        raise socketio.exceptions.ConnectionRefusedError("Authentication error")
    if auth != {"token": "good"}:
        raise socketio.exceptions.ConnectionRefusedError({"message": "Invalid token"})


@sio.on("echo")
def echo(sid, *args):
    sio.emit("echoed", list(args) if len(args) != 1 else args[0], to=sid)


@sio.on("ask")
def ask(sid, *args):
    return tuple(reversed(args))


@sio.on("joinRoom")
def join_room(sid, room_id):
    if room_id == "missing":
        sio.emit("joinRoomError", {"message": "채팅방을 찾을 수 없습니다."}, to=sid)
    else:
        sio.enter_room(sid, room_id)
        sio.emit("joinRoomSuccess", {"roomId": room_id}, to=sid)


@sio.on("later")
def later(sid, spec):
    def fire():
        gevent.sleep(spec.get("delay", 0))
        sio.emit(spec["event"], spec.get("data"), to=sid)

    gevent.spawn(fire)


@sio.on("bin")
def binary(sid, blob):
    sio.emit("binary", {"blob": blob, "n": len(blob)}, to=sid)


@sio.on("kick")
def kick(sid, *args):
    sio.disconnect(sid)


@sio.on("whoami", namespace="/admin")
def whoami(sid, *args):
    sio.emit("whoami", "admin", to=sid, namespace="/admin")


DISCONNECTS: list[str] = []  # why each client went away, as the server saw it


@sio.event
def disconnect(sid, reason=None):
    DISCONNECTS.append(str(reason))


@sio.on("disconnects")
def disconnects(sid, *args):
    sio.emit("disconnects", DISCONNECTS, to=sid)


@sio.on("leaveAdmin", namespace="/admin")
def leave_admin(sid, *args):
    sio.disconnect(sid, namespace="/admin")  # only /admin goes; "/" stays connected


@sio.on("connect", namespace="/admin")
def admin_connect(sid, environ, auth):
    return True


if __name__ == "__main__":
    port = int(sys.argv[1])
    tls = {"certfile": sys.argv[2], "keyfile": sys.argv[3]} if len(sys.argv) > 3 else {}
    app = socketio.WSGIApp(sio)
    pywsgi.WSGIServer(("127.0.0.1", port), app, handler_class=WebSocketHandler, log=None, **tls).serve_forever()
