"""``loadkit serve ktb --fault drop=P,error=P,stall=P --fault-seed N``: faults in both KTB variants.

Why: a team rehearsing its load test wants to see what its figures, SLO gates and alerts show when
the chat server drops connections, fails requests or stops answering — with the failures the real
server would produce, so the rehearsal classifies them as the real thing would be classified.

The syntax, validation and seeded dice are the shared ones of :mod:`loadkit.targets.faults`
(``--fault`` of ``loadkit serve chldo`` too); this module says which requests draw and what each
kind does. One draw per request, in the order the server receives them, from one generator per
server process: the same seed and the same sequence of requests give the same faults.

Requests that draw: every REST call except ``OPTIONS`` and the health checks (``/api/health``,
``/health``, ``/api/rooms/health``: load balancers and loadkit's variant detection use them), the
Socket.IO CONNECT (the handshake after the WebSocket upgrade) and the six client events
(``joinRoom``, ``leaveRoom``, ``chatMessage``, ``fetchPreviousMessages``, ``markMessagesAsRead``,
``messageReaction``). Engine.IO pings and polling requests never draw.

=========  ============================================================================================
drop       REST: the TCP connection is closed without an answer. Socket.IO: the TCP connection of
           the session is shut down (no close frame, no DISCONNECT packet): the server's own
           disconnect handling runs as for a network drop
error      REST: HTTP 500 with the variant's JSON error body for that route. Socket.IO: the error
           event the variant sends when that handler fails (``joinRoomError``/``error`` with its
           fallback text), or CONNECT_ERROR for the handshake
stall      nothing is ever answered: REST holds the request until the client closes the connection
           (at most :data:`STALL_MAX_S`, then closes it unanswered); Socket.IO ignores the event (no
           answer event, no ack) or the CONNECT (no ack)
=========  ============================================================================================

Nothing here runs without ``--fault`` (or with only zero rates): :func:`install` is not called, and
the server's normal path has no fault check at all. With faults, a request pays one draw (well
under a microsecond) and the socket in its WSGI environ.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
from typing import Any, Callable, Iterable

import gevent

from loadkit.protocols import ktb_vocab as V
from loadkit.targets.faults import FaultDice

log = logging.getLogger("loadkit.ktb.faults")

KINDS = ("drop", "error", "stall")
SOCKET_KEY = "loadkit.socket"  # environ key: the request's TCP socket (set only when faults are on)
EXEMPT_PATHS = frozenset({"/api/health", "/health", "/api/rooms/health"})
STALL_MAX_S = 300.0  # a stalled REST request is held at most this long (bounded memory, no leak)
EVENTS = V.CLIENT_EVENTS

# --------------------------------------------------------------------- the servers' error shapes
_ROOM = re.compile(r"^/api/rooms/[^/]+$")
_ROOM_JOIN = re.compile(r"^/api/rooms/[^/]+/join$")

#: (method, path or pattern) -> 500 body, per variant (docs/ktb-servers.md Java §2–§3, Node §2)
_JAVA_REST: list[tuple[str, Any, dict[str, Any]]] = [
    ("POST", "/api/auth/register", {"success": False, "message": "회원가입 처리 중 오류가 발생했습니다."}),
    ("POST", "/api/auth/login", {"success": False, "message": "로그인 처리 중 오류가 발생했습니다."}),
    ("POST", "/api/auth/logout", {"success": False, "message": "로그아웃 처리 중 오류가 발생했습니다."}),
    ("GET", "/api/rooms", {"success": False, "message": "채팅방 목록을 불러오는데 실패했습니다."}),
    ("POST", "/api/rooms", {"success": False, "message": "채팅방 생성에 실패했습니다."}),
    ("GET", _ROOM, {"success": False, "message": "채팅방 정보를 불러오는데 실패했습니다."}),
    ("POST", _ROOM_JOIN, {"success": False, "message": "채팅방 참여에 실패했습니다."}),
    ("POST", "/api/files/upload", {"success": False, "message": "파일 업로드 중 오류가 발생했습니다.",
                                   "error": "injected server fault (loadkit --fault error)"}),
]
_NODE_REST: list[tuple[str, Any, dict[str, Any]]] = [
    ("POST", "/api/auth/register", {"success": False, "message": "회원가입 처리 중 오류가 발생했습니다."}),
    ("POST", "/api/auth/login", {"success": False, "message": "로그인 처리 중 오류가 발생했습니다.",
                                 "code": "UNKNOWN_ERROR"}),
    ("GET", "/api/rooms", {"success": False, "error": {"message": "채팅방 목록을 불러오는데 실패했습니다.",
                                                       "code": "ROOMS_FETCH_ERROR"}}),
    ("POST", "/api/rooms", {"success": False, "message": V.R_SERVER_ERROR,
                            "error": "injected server fault (loadkit --fault error)"}),
    ("GET", _ROOM, {"success": False, "message": "채팅방 정보를 불러오는데 실패했습니다."}),
]


def rest_error_body(variant: str, method: str, path: str) -> dict[str, Any]:
    """The JSON body of the variant's HTTP 500 for this route (its generic one for other routes)."""
    p = path.rstrip("/") or "/"
    for m, where, body in (_NODE_REST if variant == "node" else _JAVA_REST):
        if m == method and (where == p if isinstance(where, str) else where.match(p)):
            return dict(body)
    if variant == "node":  # Express's final error handler
        return {"success": False, "message": V.R_SERVER_ERROR}
    # Spring's GlobalExceptionHandler for any other RuntimeException
    return {"success": False, "message": "서버 내부 오류가 발생했습니다.", "code": "INTERNAL_SERVER_ERROR", "path": path}


#: event -> (error event, payload) the variant sends when the handler fails unexpectedly
SOCKET_ERRORS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "java": {  # docs/ktb-servers.md Java §5: each handler's catch block (code-less ones carry no code)
        V.JOIN_ROOM: (V.JOIN_ROOM_ERROR, {"message": V.E_JOIN_FAILED}),
        V.LEAVE_ROOM: (V.ERROR, {"message": V.E_LEAVE}),
        V.CHAT_MESSAGE: (V.ERROR, {"code": V.MESSAGE_ERROR, "message": "메시지 전송 중 오류가 발생했습니다."}),
        V.FETCH_PREVIOUS: (V.ERROR, {"code": V.LOAD_ERROR, "message": V.E_LOAD_FAILED}),
        V.MARK_READ: (V.ERROR, {"message": V.E_READ}),
        V.MESSAGE_REACTION: (V.ERROR, {"message": V.E_REACTION}),
    },
    "node": {  # docs/ktb-servers.md Node §4: fallbacks; a failed load ends in LOAD_ERROR "max retries" ({type}, not {code})
        V.JOIN_ROOM: (V.JOIN_ROOM_ERROR, {"message": V.E_JOIN_FAILED}),
        V.LEAVE_ROOM: (V.ERROR, {"message": V.E_LEAVE}),
        V.CHAT_MESSAGE: (V.ERROR, {"code": V.MESSAGE_ERROR, "message": "메시지 전송 중 오류가 발생했습니다."}),
        V.FETCH_PREVIOUS: (V.ERROR, {"type": V.LOAD_ERROR, "message": V.E_LOAD_RETRIES}),
        V.MARK_READ: (V.ERROR, {"message": V.E_READ}),
        V.MESSAGE_REACTION: (V.ERROR, {"message": V.E_REACTION}),
    },
}

#: CONNECT_ERROR data when the handshake fails unexpectedly: netty-socketio's fallback for an
#: exception without a message (a bare string), socket.io's ``io.use`` catch-all (docs/ktb-servers.md Node §3)
CONNECT_ERRORS: dict[str, Any] = {"java": "Internal error", "node": {"message": "Authentication failed"}}


# ---------------------------------------------------------------------------------------- REST
class _Dropped(ConnectionResetError):
    """Raised out of the WSGI app: pywsgi treats ECONNRESET as a gone client and closes the
    connection silently, without writing anything."""

    def __init__(self, kind: str) -> None:
        super().__init__(errno.ECONNRESET, f"loadkit --fault {kind}")


def _read_body(environ: dict) -> None:
    try:
        environ["wsgi.input"].read()
    except Exception:  # noqa: BLE001 - a client that went away meanwhile
        pass


def _wait_for_close(sock: Any, limit_s: float) -> None:
    """Block (cooperatively) until the peer closes ``sock`` or ``limit_s`` passes."""
    with gevent.Timeout(limit_s, False):
        while True:
            try:
                data = sock.recv(1, socket.MSG_PEEK)
            except OSError:
                return
            if not data:
                return
            gevent.sleep(1.0)  # the client sent more (a pipelined request): still no answer


class RestFaults:
    """WSGI middleware around the variant's REST app: one draw per REST call."""

    def __init__(self, app: Any, dice: FaultDice, variant: str) -> None:
        self.app = app
        self.dice = dice
        self.variant = variant

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        if method == "OPTIONS" or (path.rstrip("/") or "/") in EXEMPT_PATHS:
            return self.app(environ, start_response)
        kind = self.dice.draw()
        if kind is None:
            return self.app(environ, start_response)
        from .wsgi import Response

        if kind == "error":
            return self.app.respond(environ, start_response, Response(500, rest_error_body(self.variant, method, path)))
        _read_body(environ)
        if kind == "stall":
            sock = environ.get(SOCKET_KEY)
            if sock is None:
                gevent.sleep(STALL_MAX_S)
            else:
                _wait_for_close(sock, STALL_MAX_S)
        raise _Dropped(kind)


# ----------------------------------------------------------------------------------- Socket.IO
def drop_transport(sio: Any, eio_sid: str | None) -> None:
    """Cut the session's TCP connection like a network failure: no close frame, no DISCONNECT.

    A WebSocket session's socket is shut down; engineio sees the end of the stream and runs the
    server's disconnect handling (Java: a full leave; Node: "연결이 끊어졌습니다."). A polling session
    (no socket of its own) is aborted instead."""
    if eio_sid is None:
        return
    environ = getattr(sio, "environ", {}).get(eio_sid) or {}
    sock = environ.get(SOCKET_KEY) if "wsgi.websocket" in environ else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
            return
        except OSError:
            pass
    try:
        sio.eio.disconnect(eio_sid)
    except Exception:  # noqa: BLE001 - already gone
        log.debug("aborting session %s failed", eio_sid, exc_info=True)


def install_socket_faults(sio: Any, dice: FaultDice, variant: str) -> None:
    """Wrap the CONNECT handling and the six event handlers of ``sio`` with the dice."""
    from socketio import packet as sio_packet

    from .socket_server import DROP

    errors = SOCKET_ERRORS[variant]
    handlers = sio.handlers["/"]

    def wrap(event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        error_event, payload = errors[event]

        def handler(sid: str, *args: Any) -> Any:
            kind = dice.draw()
            if kind is None:
                return fn(sid, *args)
            if kind == "error":
                if variant == "node" and event == V.FETCH_PREVIOUS:
                    sio.emit(V.MESSAGE_LOAD_START, to=sid)  # Node starts the load, then it fails
                sio.emit(error_event, dict(payload), to=sid)
                return None  # Java: the handler caught its error, the automatic ack still follows
            if kind == "drop":
                drop_transport(sio, sio.manager.eio_sid_from_sid(sid, "/"))
            return DROP  # stall / drop: no answer and no ack

        return handler

    for event in EVENTS:
        if event in handlers:
            handlers[event] = wrap(event, handlers[event])

    handle_connect = sio._handle_connect
    refusal = CONNECT_ERRORS[variant]

    def faulty_connect(eio_sid: str, namespace: str | None, data: Any) -> None:
        kind = dice.draw()
        if kind is None:
            return handle_connect(eio_sid, namespace, data)
        if kind == "error":
            sio._send_packet(eio_sid, sio.packet_class(sio_packet.CONNECT_ERROR, data=refusal,
                                                       namespace=namespace or "/"))
        elif kind == "drop":
            drop_transport(sio, eio_sid)
        return None  # stall: neither CONNECT nor CONNECT_ERROR

    sio._handle_connect = faulty_connect  # instance attribute: only this server draws


def install(sio: Any, rest: Any, dice: FaultDice, variant: str) -> Any:
    """Put the faults on the Socket.IO server; returns the REST app to serve (wrapped)."""
    install_socket_faults(sio, dice, variant)
    return RestFaults(rest, dice, variant)
