"""Assemble and run the KTB reference server on gevent (pywsgi + gevent-websocket).

``serve()`` is what ``loadkit serve ktb`` calls after monkey-patching: it builds the store, the REST
app and the Socket.IO server, binds one or two ports on 127.0.0.1 (REST and Socket.IO apart like
the Java deployment, or together like the Node one), prints a single ready line and runs until
SIGINT/SIGTERM, then commits the database and returns 0.
"""

from __future__ import annotations

import logging
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import gevent
from gevent import pywsgi

log = logging.getLogger("loadkit.ktb")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 5002
    rest_port: int = 5001
    single_port: bool = False
    db: str = ":memory:"
    rate_limit: int = 10000
    banned_words: str | None = None
    duplicate_login_delay: float = 10.0
    delay_ms: float = 0.0
    max_payload: int = 65536
    env_name: str | None = None
    variant: str = "java"  # "node": loadkit.targets.ktb.node (one port, Node backend behaviour)
    auth_cost_ms: float = 0.0  # node: time per password hash/compare (bcrypt), serialised
    db_ms: float = 2.0  # node: simulated MongoDB round trip inside leaveRoom (makes its race observable)
    faults: dict[str, float] = field(default_factory=dict)  # --fault: kind -> probability (targets/ktb/faults.py)
    fault_seed: int = 0

    @property
    def one_port(self) -> bool:
        return self.variant == "node" or self.single_port or self.rest_port == self.port


def limit_websocket_frames(max_bytes: int) -> None:
    """Make gevent-websocket refuse frames over ``max_bytes`` *before* reading them (close 1009).

    netty-socketio's decoder rejects frames over 64 KiB; gevent-websocket would otherwise buffer a
    frame of any announced length in memory.
    """
    from geventwebsocket import websocket as gws

    if getattr(gws.WebSocket, "_loadkit_limited", None) == max_bytes:
        return

    def read_frame(self: Any) -> tuple[Any, bytes]:
        header = gws.Header.decode_header(self.stream)
        if header.flags:
            raise gws.ProtocolError
        if not header.length:
            return header, b""
        if header.length > max_bytes:
            try:
                self.send_frame(struct.pack("!H", 1009) + b"Message too big", self.OPCODE_CLOSE)
            except Exception:
                pass
            raise gws.ProtocolError("frame too large")
        try:
            payload = self.raw_read(header.length)
        except Exception:
            payload = b""
        if len(payload) != header.length:
            raise gws.WebSocketError("Unexpected EOF reading frame payload")
        if header.mask:
            payload = header.unmask_payload(payload)
        return header, payload

    def unmask(self: Any, payload: bytes) -> bytes:
        # whole-buffer XOR instead of gevent-websocket's per-byte Python loop
        n = len(payload)
        if not n:
            return b""
        key = (bytes(self.mask) * (n // 4 + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")

    def validate_utf8(self: Any, payload: bytes) -> None:
        # gevent-websocket validates every frame and then every message in pure Python; the final
        # strict ``decode('utf-8')`` of the whole message already rejects bad UTF-8 (close 1007)
        return None

    gws.WebSocket.read_frame = read_frame
    gws.WebSocket.validate_utf8 = validate_utf8
    gws.Header.mask_payload = unmask
    gws.Header.unmask_payload = unmask
    gws.WebSocket._loadkit_limited = max_bytes


def _not_found(environ: dict, start_response: Callable) -> Iterable[bytes]:
    body = b'{"success":false,"message":"not found"}'
    start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class QuietErrorLog:
    """pywsgi error log that keeps one line per client error instead of a traceback storm."""

    def write(self, data: str) -> None:
        if data.strip():
            log.debug("pywsgi: %s", data.rstrip())

    def flush(self) -> None:
        pass


def build(cfg: ServerConfig) -> tuple[Any, list[pywsgi.WSGIServer], Any]:
    """Create (store, wsgi servers, socket server) without starting them.

    With ``cfg.faults`` the REST app and the Socket.IO handlers are wrapped by
    :mod:`loadkit.targets.ktb.faults` (the dice is ``servers[0]._loadkit_faults``); without, nothing
    of it is installed."""
    from .internals import check_all

    check_all()  # the python-socketio/engineio/gevent-websocket internals overridden here: one line if moved
    import socketio
    from geventwebsocket.handler import WebSocketHandler

    from .auth import Auth
    from .banned import DEFAULT_LIST, BannedWordChecker
    from .rest import RestApp
    from .socket_server import make_socket_server
    from .sockets import ChatSockets
    from .store import Store

    store = Store(cfg.db)
    if cfg.variant == "node":
        from .node.auth import NodeAuth
        from .node.rest import NodeRestApp
        from .node.sockets import NodeChatSockets, make_node_socket_server

        limit_websocket_frames(1_000_000)
        banned_count = 0
        node_auth = NodeAuth(store, cfg.auth_cost_ms / 1000.0)
        sio = make_node_socket_server()
        chat: Any = NodeChatSockets(sio, store, node_auth, duplicate_login_delay=cfg.duplicate_login_delay,
                        delay_ms=cfg.delay_ms, db_ms=cfg.db_ms)
    else:
        limit_websocket_frames(cfg.max_payload)
        banned = BannedWordChecker.from_file(cfg.banned_words or DEFAULT_LIST)
        banned_count = len(banned)
        auth = Auth(store)
        sio = make_socket_server(max_payload=cfg.max_payload)
        chat = ChatSockets(sio, store, auth, banned, rate_limit=cfg.rate_limit,
                    duplicate_login_delay=cfg.duplicate_login_delay, delay_ms=cfg.delay_ms)

    def emit(event: str, data: Any, room: str) -> None:
        sio.emit(event, data, to=room)

    if cfg.variant == "node":
        rest: Any = NodeRestApp(store, node_auth, emit, env_name=cfg.env_name or "production")
    else:
        rest = RestApp(store, auth, emit, env_name=cfg.env_name)

    class Handler(WebSocketHandler):
        """pywsgi handler with TCP_NODELAY: pywsgi may write a response in two segments, and with
        Nagle on, the second one waits for the client's delayed ACK (~40 ms per keep-alive request)."""

        def handle(self) -> Any:
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass
            return super().handle()

    dice = None
    if any(cfg.faults.values()):  # "--fault drop=0" installs nothing either
        from loadkit.targets.faults import FaultDice

        from .faults import SOCKET_KEY, install

        dice = FaultDice(cfg.faults, cfg.fault_seed)
        rest = install(sio, rest, dice, cfg.variant)

        class FaultHandler(Handler):
            """Hands the request's TCP socket to the fault layer (drop and stall act on it)."""

            def get_environ(self) -> Any:
                environ = super().get_environ()
                environ[SOCKET_KEY] = self.socket
                return environ

        Handler = FaultHandler  # type: ignore[misc]

    def make(port: int, app: Any) -> pywsgi.WSGIServer:
        return pywsgi.WSGIServer((cfg.host, port), app, handler_class=Handler, log=None,
                                 error_log=QuietErrorLog(), backlog=2048)

    if cfg.one_port:
        servers = [make(cfg.port, socketio.WSGIApp(sio, rest))]
    else:
        servers = [make(cfg.rest_port, rest), make(cfg.port, socketio.WSGIApp(sio, _not_found))]
    servers[0]._loadkit_banned = banned_count  # for the ready line
    servers[0]._loadkit_faults = dice  # for the ready and stop lines
    servers[0]._loadkit_delay = chat.delay  # for the stop line
    return store, servers, sio


def serve(cfg: ServerConfig, ready: Callable[[str], None] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    store, servers, sio = build(cfg)
    try:
        for s in servers:
            s.init_socket()
    except OSError as exc:
        store.close()
        print(f"loadkit serve ktb: cannot listen on {cfg.host}: {exc}", file=sys.stderr)
        return 1
    stop_event = gevent.event.Event()

    def on_signal() -> None:
        stop_event.set()

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)

    def flusher() -> None:
        while not stop_event.is_set():
            stop_event.wait(0.25)
            try:
                store.flush()
            except Exception:
                log.exception("database flush failed")

    for s in servers:
        s.start()
    flush_task = gevent.spawn(flusher)
    if cfg.one_port:
        where = f"REST + Socket.IO http://{cfg.host}:{cfg.port} (path /socket.io)"
    else:
        where = f"REST http://{cfg.host}:{cfg.rest_port}, Socket.IO http://{cfg.host}:{cfg.port} (path /socket.io)"
    if cfg.variant == "node":
        line = (f"loadkit ktb server ready (variant node): {where}; db={cfg.db} "
                f"duplicate-login-delay={cfg.duplicate_login_delay}s delay-ms={cfg.delay_ms:g} "
                f"auth-cost-ms={cfg.auth_cost_ms:g}")
    else:
        line = (f"loadkit ktb server ready (variant java): {where}; db={cfg.db} rate-limit={cfg.rate_limit}/min "
                f"banned-words={servers[0]._loadkit_banned} duplicate-login-delay={cfg.duplicate_login_delay}s "
                f"delay-ms={cfg.delay_ms:g}")
    dice = servers[0]._loadkit_faults
    if dice is not None:
        line += " faults=" + ",".join(f"{k}={p:g}" for k, p in cfg.faults.items()) + f" fault-seed={cfg.fault_seed}"
    (ready or (lambda text: print(text, flush=True)))(line)
    stop_event.wait()
    for s in servers:
        s.close()  # stop accepting; existing connections are cut below
    # close every Engine.IO session without waiting for queues to drain (a polling client that is
    # gone would never drain its queue); the disconnect handlers still run (= leave of every room)
    for sock in list(sio.eio.sockets.values()):
        try:
            sock.close(wait=False, abort=True)
        except Exception:
            log.debug("closing a session at shutdown failed", exc_info=True)
    for s in servers:
        try:
            s.stop(timeout=1)
        except Exception:
            pass
    flush_task.kill()
    store.close()
    delay = servers[0]._loadkit_delay
    print("loadkit ktb server stopped" + (f"; faults injected: {dice.summary()}" if dice is not None else "")
          + (f"; {delay.summary()}" if delay else ""), flush=True)
    return 0
