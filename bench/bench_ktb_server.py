"""Benchmark the KTB reference server (``loadkit serve ktb``): round trips/s and idle memory.

Run by hand, e.g.::

    python bench/bench_ktb_server.py rt --clients 50 --room-size 1 --duration 10 --procs 2
    python bench/bench_ktb_server.py rt --clients 50 --room-size 10 --duration 10 --procs 2
    python bench/bench_ktb_server.py idle --connections 5000

``rt``: N closed-loop clients (each sends one chatMessage and waits for its own ``message`` echo
before the next) spread over ``--procs`` generator processes. Each generator is gevent + raw
sockets: websocket-client only does the handshake, frames are precomputed and parsed by hand, so a
generator process costs far less CPU per round trip than the server. The server is pinned to one
core when possible (``--server-cpu``). Prints round trips/s, the server's CPU use over the
measurement window and the rate normalised to one fully used server core.

``idle``: opens N authenticated Socket.IO websocket connections (users are registered and logged in
first) and prints the server's RSS before and after, and per connection.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import time



from loadkit.procs import ManagedProcess, free_port, loadkit_argv

MASK_KEY = b"\x01\x02\x03\x04"


def ws_frame(text: str) -> bytes:
    """A masked client text frame (precomputed once, sent many times)."""
    data = text.encode()
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ MASK_KEY[i & 3] for i, b in enumerate(data))
    return header + MASK_KEY + masked


class RawWs:
    """Minimal websocket reader on a raw socket (server frames are unmasked)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def recv_msg(self) -> str | None:
        while True:
            buf = self.buf
            if len(buf) >= 2:
                b1 = buf[1] & 0x7F
                pos = 2
                if b1 == 126:
                    if len(buf) >= 4:
                        b1 = struct.unpack_from("!H", buf, 2)[0]
                        pos = 4
                    else:
                        b1 = -1
                elif b1 == 127:
                    if len(buf) >= 10:
                        b1 = struct.unpack_from("!Q", buf, 2)[0]
                        pos = 10
                    else:
                        b1 = -1
                if b1 >= 0 and len(buf) >= pos + b1:
                    opcode = buf[0] & 0x0F
                    payload = buf[pos:pos + b1]
                    self.buf = buf[pos + b1:]
                    if opcode == 8:
                        return None
                    if opcode in (1, 2, 0):
                        return payload.decode("utf-8", "replace")
                    continue
            chunk = self.sock.recv(262144)
            if not chunk:
                return None
            self.buf += chunk


def connect_socketio(base: str, token: str, session_id: str) -> RawWs:
    import websocket

    url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    ws = websocket.create_connection(url, header=["User-Agent: loadkit-bench"], timeout=30, enable_multithread=False)
    raw = RawWs(ws.sock)
    opening = raw.recv_msg()
    assert opening and opening[0] == "0", opening
    ws.sock.sendall(ws_frame("40" + json.dumps({"token": token, "sessionId": session_id})))
    while True:
        m = raw.recv_msg()
        if m is None:
            raise RuntimeError("closed during connect")
        if m.startswith("40"):
            return raw
        if m.startswith("44"):
            raise RuntimeError(f"connect refused: {m}")


def setup_users(rest: str, n: int, tag: str) -> list[dict]:
    import requests

    s = requests.Session()
    out = []
    for i in range(n):
        email = f"bench-{tag}-{i}@bench.io"
        s.post(f"{rest}/api/auth/register", json={"name": f"bench{i}", "email": email, "password": "secret1"})
        r = s.post(f"{rest}/api/auth/login", json={"email": email, "password": "secret1"})
        r.raise_for_status()
        j = r.json()
        out.append({"token": j["token"], "sessionId": j["sessionId"], "userId": j["user"]["_id"]})
    return out


def create_rooms(rest: str, owner: dict, count: int) -> list[str]:
    import requests

    h = {"x-auth-token": owner["token"], "x-session-id": owner["sessionId"]}
    return [requests.post(f"{rest}/api/rooms", json={"name": f"bench room {i}"}, headers=h).json()["data"]["_id"]
            for i in range(count)]


# ---------------------------------------------------------------------------------------------- rt
def generator(sock_url: str, clients: list[tuple[dict, str]], start_at: float, duration: float, q) -> None:
    """One generator process: closed-loop clients multiplexed with ``selectors`` (no threads).

    Reports (round trips, summed round-trip seconds, errors) through ``q``.
    """
    import selectors

    conns = []
    for user, room in clients:
        raw = connect_socketio(sock_url, user["token"], user["sessionId"])
        raw.sock.sendall(ws_frame("42" + json.dumps(["joinRoom", room])))
        while True:
            m = raw.recv_msg()
            if m is None or m.startswith('42["joinRoomSuccess"') or m.startswith('42["joinRoomError"'):
                break
        conns.append((raw, user, room))
    sel = selectors.DefaultSelector()
    pong = ws_frame("3")
    state = []
    for i, (raw, user, room) in enumerate(conns):
        raw.sock.setblocking(False)
        frame = ws_frame("42" + json.dumps(["chatMessage", {"room": room, "type": "text", "content": "bench hello"}]))
        mine = f'"sender":{{"id":"{user["userId"]}"'
        st = {"raw": raw, "frame": frame, "mine": mine, "t0": 0.0}
        state.append(st)
        sel.register(raw.sock, selectors.EVENT_READ, st)
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    end = start_at + duration
    perf = time.perf_counter
    n = 0
    lat = 0.0
    errors = 0
    for st in state:
        st["t0"] = perf()
        st["raw"].sock.sendall(st["frame"])
    while time.time() < end:
        for key, _ in sel.select(timeout=0.5):
            st = key.data
            raw = st["raw"]
            try:
                chunk = raw.sock.recv(262144)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(raw.sock)
                errors += 1
                continue
            raw.buf += chunk
            while True:
                buf = raw.buf
                if len(buf) < 2:
                    break
                ln = buf[1] & 0x7F
                pos = 2
                if ln == 126:
                    if len(buf) < 4:
                        break
                    ln = struct.unpack_from("!H", buf, 2)[0]
                    pos = 4
                elif ln == 127:
                    if len(buf) < 10:
                        break
                    ln = struct.unpack_from("!Q", buf, 2)[0]
                    pos = 10
                if len(buf) < pos + ln:
                    break
                payload = buf[pos:pos + ln]
                raw.buf = buf[pos + ln:]
                if payload == b"2":
                    raw.sock.setblocking(True)
                    raw.sock.sendall(pong)
                    raw.sock.setblocking(False)
                    continue
                if payload.startswith(b'42["message"') and st["mine"].encode() in payload:
                    now = perf()
                    lat += now - st["t0"]
                    n += 1
                elif payload.startswith(b'42["error"'):
                    errors += 1
                    now = perf()
                else:
                    continue
                if time.time() < end:
                    st["t0"] = now
                    raw.sock.setblocking(True)
                    raw.sock.sendall(st["frame"])
                    raw.sock.setblocking(False)
    q.put((n, lat, errors))
    for raw, _, _ in conns:
        try:
            raw.sock.close()
        except OSError:
            pass


def bench_rt(args: argparse.Namespace) -> None:
    import psutil

    port = free_port()
    rest = sock = f"http://127.0.0.1:{port}"
    argv = loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(port))
    with ManagedProcess(argv, wait_port=("127.0.0.1", port), log_path="/tmp/bench_ktb_server.log") as server:
        sp = psutil.Process(server.proc.pid)
        if args.server_cpu is not None:
            try:
                sp.cpu_affinity([args.server_cpu])
            except (AttributeError, OSError):
                pass
        users = setup_users(rest, args.clients, f"rt{args.room_size}-{port}")
        n_rooms = max(1, args.clients // args.room_size)
        rooms = create_rooms(rest, users[0], n_rooms)
        assignment = [(u, rooms[i // args.room_size % n_rooms]) for i, u in enumerate(users)]
        q = mp.get_context("spawn").Queue()
        start_at = time.time() + 3.0 + 0.05 * args.clients
        procs = []
        for k in range(args.procs):
            part = assignment[k::args.procs]
            p = mp.get_context("spawn").Process(target=generator, args=(sock, part, start_at, args.duration, q))
            p.start()
            procs.append(p)
        time.sleep(max(0.0, start_at - time.time()))
        c0 = sp.cpu_times()
        t0 = time.time()
        results = [q.get(timeout=args.duration + 120) for _ in procs]
        t1 = time.time()
        c1 = sp.cpu_times()
        for p in procs:
            p.join(10)
        rtt = sum(r[0] for r in results)
        lat = sum(r[1] for r in results)
        errs = sum(r[2] for r in results)
        cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0)
        rate = rtt / args.duration
        print(f"rooms of {args.room_size}: {args.clients} clients, {args.procs} generator procs, {args.duration:.0f}s")
        print(f"  chatMessage round trips: {rtt}  ({rate:,.0f}/s), errors {errs}")
        print(f"  mean round trip: {1000 * lat / max(rtt, 1):.2f} ms")
        print(f"  message deliveries: {rate * args.room_size:,.0f}/s")
        print(f"  server CPU: {100 * cpu:.0f}% of one core -> {rate / max(cpu, 1e-9):,.0f} round trips/s per full core")
        print(f"  server RSS: {sp.memory_info().rss / 2**20:.1f} MiB; host load avg {os.getloadavg()[0]:.2f}")


# ---------------------------------------------------------------------------------------------- idle
def idle_worker(sock_url: str, users: list[dict], hold: float, q) -> None:
    """Open one authenticated websocket per user, then hold them idle (answering pings)."""
    import selectors

    conns = []
    fails = 0
    for u in users:
        try:
            conns.append(connect_socketio(sock_url, u["token"], u["sessionId"]))
        except Exception:
            fails += 1
    q.put(("up", len(conns), fails))
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    pong = ws_frame("3")
    end = time.time() + hold
    while time.time() < end:
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            try:
                chunk = c.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(c.sock)
                continue
            if b"\x81\x012" in chunk:  # an Engine.IO ping frame
                c.sock.sendall(pong)
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass
    q.put(("done", 0, 0))


def bench_idle(args: argparse.Namespace) -> None:
    import psutil

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = loadkit_argv("serve", "ktb", "--port", str(port), "--rest-port", str(port))
    with ManagedProcess(argv, wait_port=("127.0.0.1", port), log_path="/tmp/bench_ktb_idle.log") as server:
        sp = psutil.Process(server.proc.pid)
        t = time.time()
        users = setup_users(base, args.connections, f"idle-{port}")
        print(f"registered+logged in {len(users)} users in {time.time() - t:.1f}s")
        rss0 = sp.memory_info().rss
        q = mp.get_context("spawn").Queue()
        procs = []
        per = (len(users) + args.procs - 1) // args.procs
        t = time.time()
        for k in range(args.procs):
            p = mp.get_context("spawn").Process(target=idle_worker, args=(base, users[k * per:(k + 1) * per], args.hold, q))
            p.start()
            procs.append(p)
        up = fails = 0
        for _ in procs:
            kind, n, f = q.get(timeout=600)
            up += n
            fails += f
        took = time.time() - t
        time.sleep(2)
        rss1 = sp.memory_info().rss
        print(f"idle connections: {up} up ({fails} failed) in {took:.1f}s")
        print(f"  server RSS: {rss0 / 2**20:.1f} MiB before, {rss1 / 2**20:.1f} MiB with {up} idle sockets"
              f" -> {(rss1 - rss0) / max(up, 1) / 1024:.1f} KiB per connection")
        for _ in procs:
            q.get(timeout=args.hold + 60)
        for p in procs:
            p.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    rt = sub.add_parser("rt", help="chatMessage round trips/s")
    rt.add_argument("--clients", type=int, default=50)
    rt.add_argument("--room-size", type=int, default=1)
    rt.add_argument("--duration", type=float, default=10.0)
    rt.add_argument("--procs", type=int, default=2, help="generator processes")
    rt.add_argument("--server-cpu", type=int, default=None, help="pin the server to this CPU")
    idle = sub.add_parser("idle", help="RSS with many idle connections")
    idle.add_argument("--connections", type=int, default=5000)
    idle.add_argument("--procs", type=int, default=2)
    idle.add_argument("--hold", type=float, default=5.0)
    args = ap.parse_args()
    import signal

    # a SIGTERM (e.g. from `timeout`) must still stop the server we started: unwind like an error
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.mode == "rt":
        bench_rt(args)
    else:
        bench_idle(args)


if __name__ == "__main__":
    sys.exit(main())
