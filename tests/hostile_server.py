"""A deliberately misbehaving WebSocket server for the hostile-server tests (one behaviour per run).

    python tests/hostile_server.py PORT MODE

Modes:
  drip        accept, read the upgrade request, then send a valid 101 answer one byte per second
  open:JSON   complete the upgrade, send the Engine.IO OPEN packet ``0JSON`` as a text frame, then
              answer nothing more
  echo-error  complete the upgrade, then answer every text frame with a chldo error frame that
              echoes the whole request (api_key included), as a careless server would
Prints ``ready`` when it listens. Serves until killed; each connection in its own thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import sys
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _upgrade_answer(request: bytes) -> bytes:
    key = b""
    for line in request.split(b"\r\n"):
        if line.lower().startswith(b"sec-websocket-key:"):
            key = line.split(b":", 1)[1].strip()
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def _text_frame(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, len(data)]) + data


def _frame(text: str) -> bytes:
    data = text.encode()
    if len(data) < 126:
        return bytes([0x81, len(data)]) + data
    return bytes([0x81, 126]) + len(data).to_bytes(2, "big") + data


def _read_frame(conn: socket.socket) -> bytes | None:
    """One client frame's payload (unmasked), or None when the peer closed."""
    def exactly(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = exactly(2)
    if head is None:
        return None
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(exactly(2) or b"\0\0", "big")
    elif n == 127:
        n = int.from_bytes(exactly(8) or bytes(8), "big")
    mask = exactly(4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = exactly(n) if n else b""
    if mask is None or payload is None:
        return None
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _serve(conn: socket.socket, mode: str) -> None:
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        answer = _upgrade_answer(request)
        if mode == "drip":
            for i in range(len(answer)):
                conn.sendall(answer[i:i + 1])
                time.sleep(1.0)
            return
        conn.sendall(answer)
        if mode.startswith("open:"):
            conn.sendall(_text_frame("0" + mode[5:]))
        if mode == "echo-error":
            while (request := _read_frame(conn)) is not None:
                error = json.dumps({"status": "connected", "msg": f"bad request: {request.decode()}", "msgtype": "error"})
                conn.sendall(_frame(error))
            return
        while conn.recv(4096):
            pass


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    srv = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
