"""Client CPU per chldo frame when tokens arrive spread out (one frame per recv), interleaved A/B.

    python bench/bench_chldo_frames.py [--connections 300] [--seconds 8] [--repeat 3] [--trees A,B]
    python bench/bench_chldo_frames.py --target blaster --think 0 --connections 2000   # saturated
    python bench/bench_chldo_frames.py --micro 2000 [--opcodes] [--trees A,B]          # no event loop

Why next to bench_chldo_server.py (which prints the same "client CPU per frame" once, beside the
server's timing accuracy): on a shared 2-core VM one run's figure swings by ±20 %, so a change
needs the code trees measured in turns against the same target. One target runs pinned to CPU 1
for the whole benchmark; each measurement is a fresh process pinned to CPU 0 with
``PYTHONPATH=<tree>`` (it imports that tree's ``loadkit``) that opens the connections, lets them
run turn after turn with a think time, and after a warm-up counts ``time.process_time()`` and the
frames its sessions classified over ``--seconds``: CPU µs per frame (issue #14 item 7's goal:
>= 60k frames/s per client core, i.e. <= 16.7 µs). Printed with it: the frames per ``recv``
(counted by ``perf``, when it is there) and the target's CPU share.

How to read the figures: the CPU per frame depends on how many frames a read carries and on how
busy the client is. An idle client pays a wakeup (``epoll_wait``, a context switch) every frame or
two, so at 300 connections (client ~15 % busy) a frame costs about twice what it costs when the
core is saturated; and a target that falls behind sends bursts (several frames per read), which
makes the client look cheaper. The capacity of one client core is the saturated figure, at ~1
frame per read: ``--target blaster`` with ``--think 0`` and enough connections (every connection
gets a frame every ``--token-ms``).

Targets: ``serve`` = ``loadkit serve chldo`` (first token 300 ms, then 20 ms/token, every frame its
own write; one process manages ~20-30k such frames/s, and on a shared core falls behind before
that); ``blaster`` = :func:`blaster` below, a minimal frame sender (~100k frames/s on one core).

``--micro TURNS`` runs the client's per-frame path alone (socketpair, the io callback called
directly): deterministic bytecodes per frame with ``--opcodes``, CPU per frame without. ``--opcodes``
without ``--micro`` traces the live run (slowed down so much that reads carry several frames).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from opcount import opcode_tracer, print_top

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def measure(url: str, connections: int, seconds: float, warm: float, think: float, opcodes: bool,
            target_pid: int) -> None:
    """Runs inside the measuring process (``--measure``); prints one RESULT line."""
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from loadkit.clients.chldo import ChldoClient
    from loadkit.protocols.chldo import build_sendmsg

    clients: list = []
    stop = [False]
    counting = [False]
    counts: collections.Counter = collections.Counter()

    tracer = opcode_tracer(counts, lambda: counting[0])

    if opcodes:  # from the start: greenlet keeps a tracing flag per greenlet, the hub's included
        sys.settrace(tracer)

    def visitor(i: int) -> None:
        client = ChldoClient(url, connect_timeout=30)
        client.connect()
        clients.append(client)
        req = build_sendmsg(api_key="demo-key", room_uid=f"f{i}", user_id=f"u{i}", msg=f"frames {i % 7}")
        while not stop[0]:
            turn = client.sendmsg(req, timeout=30)
            if turn.error is not None:
                print(f"turn failed: {turn.error!r}", file=sys.stderr)
                if not client.connected:
                    client.connect()
            gevent.sleep(think)
        client.close()

    greenlets = []
    for i in range(connections):
        greenlets.append(gevent.spawn(visitor, i))
        gevent.sleep(0.002)
    gevent.sleep(warm)
    frames0 = sum(c.session.frames for c in clients)
    cpu0, t0, target0 = time.process_time(), time.perf_counter(), proc_cpu_seconds(target_pid)
    reads = RecvCounter() if not opcodes else None  # is it one frame per read?
    counting[0] = True
    gevent.sleep(seconds)
    counting[0] = False
    n_reads = reads.stop() if reads is not None else None
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    target = proc_cpu_seconds(target_pid) - target0
    frames = sum(c.session.frames for c in clients) - frames0
    stop[0] = True
    n = max(1, frames)
    if opcodes:
        print(f"{frames} frames, {sum(counts.values()) / n:.0f} bytecodes per frame")
        print_top(counts, n, 30)
    else:
        print(f"RESULT {frames} {cpu / n * 1e6:.2f} {frames / wall:.0f} {100 * cpu / wall:.0f} {100 * target / wall:.0f} {n_reads or 'n/a'}")
    sys.stdout.flush()
    os._exit(0)


class RecvCounter:
    """Counts this process's ``recv`` system calls from construction to :meth:`stop` (``perf stat``
    on the syscall tracepoint, in another process: no cost here). ``stop()`` is None without perf
    or its permission. Why: the client's CPU per frame depends on how many frames one read carries
    (a target that falls behind sends bursts), so a figure means "one frame per read" only next to
    the frames-per-recv it was measured at."""

    def __init__(self) -> None:
        perf = shutil.which("perf")
        self.proc = None if perf is None else subprocess.Popen(
            [perf, "stat", "-x,", "-e", "syscalls:sys_enter_recvfrom", "-p", str(os.getpid())],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            out = self.proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        first = next((x.split(",")[0] for x in out.splitlines() if "recvfrom" in x), "")
        return int(first) if first.isdigit() else None


def turn_frames(turn: int, tokens: int) -> list[bytes]:
    """One turn's frames as ``loadkit serve chldo`` sends them (START, 6 info, tokens, think, END)."""
    import json

    from loadkit.protocols.wsframe import OP_TEXT, encode_frame

    base = {"connection_id": "Uv2+1Iu4CH+DqDc=", "stream_uid": f"CecIEACdfxR9dMaU8SXN{turn:09d}", "room_uid": "r1"}
    frames = [dict(status="START", **base, msg="", is_stream=True, return_voice=0, msgtype="info")]
    frames += [dict(status=s, **base, msg="메시지를 전달 받았습니다.", is_stream=True, msgtype="info")
               for s in ("received", "history", "history", "memory", "memory", "think")]
    for i in range(tokens):
        tok = f" tok{i}"
        frames.append(dict(status="stream", **base, sent_uid=f"Lelyt4GnTlU0DSxs{i // 10:012d}",
                           event="on_chat_model_stream", data={"chunk": {"content": tok}}, msg=tok,
                           is_stream=True, msgtype="stream"))
    frames.append(dict(status="think", **base, msg="생각이 끝났습니다.", is_stream=True, msgtype="info"))
    frames.append(dict(status="END", **base, msg="", is_stream=True, return_voice=0, msgtype="info"))
    return [encode_frame(OP_TEXT, json.dumps(f, ensure_ascii=False, separators=(",", ":")).encode()) for f in frames]


def blaster(port: int, tokens: int, token_ms: float) -> None:
    """A minimal chldo target for this benchmark (``--target blaster``): one process, one epoll loop,
    frames prebuilt. Each request gets the frames of :func:`turn_frames` (START, 6 info, ``tokens``
    tokens, think, END), every one its own ``send()``, one per ``token_ms`` per connection; the
    connections are spread over ``token_ms`` 1-ms slots so the frames of all connections arrive
    spread in time (one frame per client read). Why: ``loadkit serve chldo`` (asyncio + websockets,
    a timer per token) tops out at ~30k frames/s on one core, below what one client core can
    absorb, so it cannot show the client's capacity; this sends ~100k frames/s from one core.
    Not a reference server: no validation, no pings; it measures the client only."""
    import base64
    import hashlib
    import select
    import socket

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    nslots = max(1, int(token_ms))
    slots: list[list[list]] = [[] for _ in range(nslots)]
    conns: dict[int, list] = {}  # fd -> [sock, buf, upgraded, frames, next index, turns]
    templates = turn_frames(0, tokens)
    uid0 = b"CecIEACdfxR9dMaU8SXN000000000"
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    tick = time.monotonic()
    n_tick = 0
    while True:
        timeout = tick + 0.001 - time.monotonic()
        for fd, _ev in ep.poll(max(0.0, timeout)):
            if fd == lsock.fileno():
                while True:
                    try:
                        sock, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn = [sock, b"", False, None, 0, 0]
                    conns[sock.fileno()] = conn
                    slots[sock.fileno() % nslots].append(conn)
                    ep.register(sock.fileno(), select.EPOLLIN)
                continue
            conn = conns[fd]
            sock = conn[0]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                slots[fd % nslots].remove(conn)
                sock.close()
                continue
            buf = conn[1] + data
            if not conn[2]:
                head, sep, buf = buf.partition(b"\r\n\r\n")
                if not sep:
                    conn[1] = head
                    continue
                key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:"))
                accept = base64.b64encode(hashlib.sha1(key + guid).digest())
                sock.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                conn[2] = True
            while len(buf) >= 2:  # client frames (masked): a text frame is a request
                length, head = buf[1] & 0x7F, 6
                if length == 126:
                    length, head = int.from_bytes(buf[2:4], "big"), 8
                elif length == 127:
                    length, head = int.from_bytes(buf[2:10], "big"), 14
                if len(buf) < head + length:
                    break
                op, buf = buf[0] & 0x0F, buf[head + length:]
                if op == 0x1:
                    conn[5] += 1
                    uid = b"CecIEACdfxR9dMaU8SX%010d" % ((fd * 1000003 + conn[5]) % 10**10)
                    conn[3] = [f.replace(uid0, uid) for f in templates]
                    conn[4] = 0
                    try:
                        sock.send(conn[3][0])  # START leaves at receipt
                    except OSError:
                        break
                    conn[4] = 1
                elif op == 0x8:
                    try:
                        sock.send(b"\x88\x02\x03\xe8")
                    except OSError:
                        break
            conn[1] = buf
        now = time.monotonic()
        if now - tick > 0.005:  # descheduled (a shared machine): skip the missed slots rather than
            tick = now - 0.001  # send them in a burst, which would put two frames in one client read
        while tick + 0.001 <= now:  # every due 1-ms slot: one frame to each streaming connection in it
            tick += 0.001
            n_tick += 1
            for conn in slots[n_tick % nslots]:
                frames = conn[3]
                if frames is not None:
                    i = conn[4]
                    try:
                        conn[0].send(frames[i])
                    except BlockingIOError:
                        continue  # the client is behind: this frame goes in the next round
                    except OSError:
                        continue
                    if i + 1 == len(frames):
                        conn[3] = None
                    else:
                        conn[4] = i + 1


def micro(turns: int, tokens: int, opcodes: bool) -> None:
    """The client's per-frame path alone, without the event loop: one frame written to a socketpair,
    then the io watcher's callback called directly (what the hub does when the socket is readable),
    ``turns`` turns of ``tokens`` tokens. Prints CPU us per frame (including the one raw send on the
    other end) or the bytecodes per frame."""
    from gevent import monkey

    monkey.patch_all()
    import socket

    from loadkit.clients.chldo import ChldoClient
    from loadkit.clients.schedulers import _Result

    ours, theirs = socket.socketpair()

    class Ws:
        sock = ours

        def shutdown(self) -> None:
            pass

    client = ChldoClient("ws://micro")
    client.ws = Ws()  # type: ignore[assignment]
    client._start_reading(client.ws)  # type: ignore[arg-type]
    send = theirs._sock.send  # the raw OS socket: no Python code on the sending side
    callback = client._on_readable
    all_frames = [turn_frames(t, tokens) for t in range(turns)]
    counts: collections.Counter = collections.Counter()

    tracer = opcode_tracer(counts)

    n = 0
    cpu0 = time.process_time()
    for frames in all_frames:
        turn = client.session.begin(time.perf_counter())
        client._turn = _Result()
        if opcodes:
            sys.settrace(tracer)
        for f in frames:
            send(f)
            callback()
        sys.settrace(None)
        if not turn.ok or turn.chunks != tokens:
            raise SystemExit(f"turn not classified as expected: ok={turn.ok} chunks={turn.chunks} {turn.error!r}")
        n += len(frames)
    cpu = time.process_time() - cpu0
    if opcodes:
        print(f"micro: {n} frames, {sum(counts.values()) / n:.1f} bytecodes per frame")
        print_top(counts, n, 20)
    else:
        print(f"RESULT {n} {cpu / n * 1e6:.3f}")
    sys.stdout.flush()
    os._exit(0)


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_micro(args: argparse.Namespace) -> int:
    """--micro: the trees take turns, each run a fresh process pinned to CPU 0."""
    trees = [Path(t).resolve() for t in args.trees.split(",") if t] or [ROOT]
    results: dict[Path, list[float]] = {t: [] for t in trees}
    for i in range(1 if args.opcodes else max(1, args.repeat)):
        for tree in trees:
            argv = ["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "--micro-run",
                    str(args.micro), "--answer-tokens", str(args.answer_tokens)] + (["--opcodes"] if args.opcodes else [])
            res = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=str(tree),
                                 env=dict(os.environ, PYTHONPATH=str(tree)))
            if args.opcodes:
                print(f"== {tree}\n{res.stdout.strip() or res.stderr[-2000:]}")
                continue
            line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{tree}: no result\n{res.stderr[-2000:]}")
                continue
            results[tree].append(float(line.split()[2]))
            print(f"run {i + 1} {tree}: {results[tree][-1]:.2f} CPU us per frame (micro)", flush=True)
    for tree, values in results.items():
        if values:
            print(f"  {tree}: median {statistics.median(values):.2f} us/frame (micro; runs: "
                  f"{', '.join(f'{v:.2f}' for v in values)}), load average {os.getloadavg()[0]:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured window per run")
    ap.add_argument("--warm", type=float, default=3.0, help="seconds after the ramp before measuring")
    ap.add_argument("--think", type=float, default=1.0, help="seconds between a turn's end and the next send")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--answer-tokens", type=int, default=40)
    ap.add_argument("--token-ms", type=float, default=20.0)
    ap.add_argument("--trees", default="", help="comma-separated code trees to compare (each run imports that "
                    "tree's loadkit); default: this script's own tree")
    ap.add_argument("--opcodes", action="store_true", help="bytecodes per frame instead (one run per tree)")
    ap.add_argument("--target", choices=("serve", "blaster"), default="serve",
                    help="serve: loadkit serve chldo (first token 300 ms); blaster: this script's minimal "
                    "frame sender (for the client's capacity: use --think 0 and ~1500 connections)")
    ap.add_argument("--micro", type=int, metavar="TURNS", help="the per-frame path alone, no event loop: "
                    "TURNS turns through a socketpair per run, CPU us and bytecodes per frame (see micro())")
    ap.add_argument("--blaster", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--micro-run", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--target-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.micro_run:
        micro(args.micro_run, args.answer_tokens, args.opcodes)
        return 0
    if args.micro:
        return run_micro(args)
    if args.blaster:
        blaster(args.blaster, args.answer_tokens, args.token_ms)
        return 0
    if args.measure:
        measure(args.measure, args.connections, args.seconds, args.warm, args.think, args.opcodes, args.target_pid)
        return 0
    if (os.cpu_count() or 1) < 2:
        print("needs two CPUs (target on CPU 1, client on CPU 0)", file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT))
    from loadkit.procs import ManagedProcess, free_port, loadkit_argv

    port = free_port()
    if args.target == "blaster":
        target_argv = [sys.executable, str(Path(__file__).resolve()), "--blaster", str(port)]
    else:
        target_argv = loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "300",
                                   "--ping-interval", "0")
    server = ManagedProcess(
        ["taskset", "-c", "1"] + target_argv + ["--token-ms", str(args.token_ms), "--answer-tokens",
                                                str(args.answer_tokens)],
        log_path="/tmp/bench_chldo_frames_target.log", wait_port=("127.0.0.1", port),
    ).start()
    url = f"ws://127.0.0.1:{port}"
    trees = [Path(t).resolve() for t in args.trees.split(",") if t] or [ROOT]
    results: dict[Path, list[float]] = {t: [] for t in trees}
    try:
        for i in range(1 if args.opcodes else max(1, args.repeat)):
            for tree in trees:
                argv = ["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "--measure", url,
                        "--connections", str(args.connections), "--seconds", str(args.seconds),
                        "--warm", str(args.warm), "--think", str(args.think), "--target-pid", str(server.proc.pid)] + (["--opcodes"] if args.opcodes else [])
                env = dict(os.environ, PYTHONPATH=str(tree))
                res = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=str(tree))
                if args.opcodes:
                    print(f"== {tree}\n{res.stdout.strip() or res.stderr[-2000:]}")
                    continue
                line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    print(f"{tree}: no result\n{res.stderr[-2000:]}")
                    continue
                frames, us, rate, share, target_share, n_reads = line.split()[1:]
                per_read = f"{int(frames) / int(n_reads):.2f}" if n_reads.isdigit() and int(n_reads) else "n/a"
                results[tree].append(float(us))
                print(f"run {i + 1} {tree}: {float(us):5.1f} client CPU us/frame ({frames} frames, {rate} frames/s, "
                      f"{per_read} frames per recv, client {share}% of CPU 0, target {target_share}% of CPU 1)", flush=True)
    finally:
        server.stop()
    if not args.opcodes:
        print(f"{args.connections} connections, load average {os.getloadavg()[0]:.2f}:")
        for tree, values in results.items():
            if values:
                med = statistics.median(values)
                print(f"  {tree}: median {med:5.1f} us/frame = {1e6 / med:,.0f} frames/s per client core "
                      f"(runs: {', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
