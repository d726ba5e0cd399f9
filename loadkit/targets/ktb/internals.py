"""The python-socketio, python-engineio and gevent-websocket internals the reference KTB server
overrides or patches (``sockets.py``, ``node.py``, ``server.py``), checked once when a server is
built (``server.build``): if one moved, the server exits with one line naming the package version
(``loadkit.internals``), instead of a traceback per connection or an override nobody calls.
"""

from __future__ import annotations

from loadkit.internals import Internal, check

#: the versions the suite ran on (upper bounds of pyproject.toml's dependencies)
TESTED = {"python-socketio": ">=5.12,<5.19", "python-engineio": ">=4.9,<4.16", "gevent-websocket": ">=0.10.1,<0.11"}

_SIO = "socketio:Server"
_GWS = "geventwebsocket.websocket"
INTERNALS: dict[str, tuple[Internal, ...]] = {
    "python-socketio": (
        Internal(f"{_SIO}._handle_eio_message", "dropping undecodable packets (KtbSocketServer)", "own"),
        Internal(f"{_SIO}._handle_connect", "CONNECT handling as the Java/Node servers do it", "own"),
        Internal(f"{_SIO}._handle_event_internal", "acks as the Java/Node servers send them", "own"),
        Internal(f"{_SIO}._engineio_server_class", "the non-blocking engineio disconnect"),
        Internal(f"{_SIO}._send_packet", "CONNECT_ERROR and ack packets"),
        Internal(f"{_SIO}._trigger_event", "acks as the Java/Node servers send them"),
        Internal(f"{_SIO}._binary_packet", "dropping undecodable packets", "self"),
        Internal(f"{_SIO}.packet_class", "CONNECT_ERROR and ack packets", "self"),
        Internal("socketio.packet:Packet.data_is_binary", "the cheap binary check of KtbPacket"),
    ),
    "python-engineio": (
        Internal("engineio:Server.disconnect", "the non-blocking disconnect (TolerantEngineIOServer)"),
        Internal("engineio:Server.sockets", "the non-blocking disconnect, the shutdown", "self"),
        Internal("engineio:Server._async", "the tolerant websocket class", "self"),
        Internal("engineio.async_drivers.gevent:WebSocketWSGI.wait", "dropping undecodable Engine.IO packets"),
        Internal("engineio.async_drivers.gevent:WebSocketWSGI._sock", "dropping undecodable Engine.IO packets",
                 "self"),
    ),
    "gevent-websocket": (
        Internal(f"{_GWS}:WebSocket.read_frame", "the frame size limit (close 1009)", "own"),
        Internal(f"{_GWS}:WebSocket.validate_utf8", "one UTF-8 check per message", "own"),
        Internal(f"{_GWS}:Header.mask_payload", "whole-buffer unmasking", "own"),
        Internal(f"{_GWS}:Header.unmask_payload", "whole-buffer unmasking", "own"),
        Internal(f"{_GWS}:Header.decode_header", "the frame size limit"),
        Internal(f"{_GWS}:WebSocket.send_frame", "the frame size limit"),
        Internal(f"{_GWS}:WebSocket.raw_read", "the frame size limit"),
        Internal(f"{_GWS}:WebSocket.OPCODE_CLOSE", "the frame size limit"),
        Internal(f"{_GWS}:WebSocket.stream", "the frame size limit", "self"),
        Internal(f"{_GWS}:ProtocolError", "the frame size limit"),
        Internal(f"{_GWS}:WebSocketError", "the frame size limit"),
    ),
}


def check_all() -> None:
    """Every internal above is where the server expects it, or ``InternalsMoved`` (one line)."""
    for distribution, internals in INTERNALS.items():
        check(distribution, TESTED[distribution], internals)
