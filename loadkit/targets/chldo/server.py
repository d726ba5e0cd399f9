"""The chldo reference server: asyncio + the ``websockets`` library, one task per sendmsg stream.

Why asyncio/websockets: a well-kept RFC 6455 implementation with size limits, close reasons and
keep-alive pings built in, and an event loop whose timers let a stream follow *absolute* deadlines
(first token at receipt + first_token_ms, token *i* at first token + i × token_ms), so delays never
drift however many thousands of connections share the loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import string
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import quote

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from loadkit.protocols.chldo import (
    ERR_CREDIT,
    MIN_CREDIT,
    MSG_HISTORY_REPLAYED,
    MSG_HISTORY_SEARCH,
    MSG_MEMORY_FOUND,
    MSG_MEMORY_SEARCH,
    MSG_RECEIVED,
    MSG_THINK_END,
    MSG_THINK_START,
    format_credit,
)
from loadkit.targets.chldo.config import ServerConfig
from loadkit.targets.chldo.fakellm import Answer, FakeLLM
from loadkit.targets.chldo.validation import Invalid, SendMsg, parse_request

LLM_FAILURE_TEXT = "Error code: 503 - {'status': 'failure', 'message': 'simulated LLM failure (loadkit)'}"
FAULT_ERROR_TEXT = "Error code: 500 - {'status': 'failure', 'message': 'injected server fault (loadkit --fault error)'}"
ERR_TOO_MANY_STREAMS = "too many concurrent sendmsg streams on this connection"
VOICE_BASE = "https://voice.chldo.invalid/room_uid_voice"
_ALNUM = string.ascii_letters + string.digits
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class Stats:
    connections: int = 0
    open_connections: int = 0
    turns: int = 0
    frames: int = 0
    rejected: int = 0


class ChldoServer:
    """Holds the config, the fake LLM and counters; ``handler`` serves one WebSocket connection."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.llms = {split: FakeLLM(cfg.answer_tokens, split) for split in (True, False)}
        self.stats = Stats()
        self._rng = random.Random()
        self._secret = os.urandom(16)
        self._failure_n = 0
        from loadkit.targets.faults import FaultDice

        self.faults = FaultDice(cfg.faults, cfg.fault_seed)
        #: --max-concurrent: turns beyond N wait here; a turn's first-token delay starts when it is served
        self._slots = asyncio.Semaphore(cfg.max_concurrent) if cfg.max_concurrent > 0 else None

    # ---- ids -------------------------------------------------------------------------------------
    def _uid(self, n: int) -> str:
        return "".join(self._rng.choices(_ALNUM, k=n))

    def _connection_id(self) -> str:
        return base64.b64encode(self._rng.randbytes(11)).decode()

    def _next_is_failure(self) -> bool:
        """Exactly ``rate`` of all turns fail, spread evenly and deterministically (no RNG)."""
        rate = self.cfg.llm_failure_rate
        if rate <= 0:
            return False
        n = self._failure_n
        self._failure_n = n + 1
        return int((n + 1) * rate) > int(n * rate)

    def _voice_url(self, room_uid: str, sent_uid: str) -> str:
        expires = int(time.time()) + 3600
        path = f"{VOICE_BASE}/{quote(room_uid, safe='')}/{sent_uid}.mp3"
        sig = hmac.new(self._secret, f"{path}{expires}".encode(), hashlib.sha256).digest()
        sig_text = base64.b64encode(sig * 8).decode().replace("+", "-").replace("=", "_").replace("/", "~")
        return f"{path}?Expires={expires}&Signature={sig_text}&Key-Pair-Id=KLOADKITFAKE"

    # ---- connection --------------------------------------------------------------------------------
    async def handler(self, ws: ServerConnection) -> None:
        stats = self.stats
        stats.connections += 1
        stats.open_connections += 1
        cid = self._connection_id()
        tasks: set[asyncio.Task] = set()
        loop = asyncio.get_running_loop()
        try:
            async for message in ws:
                t_recv = loop.time()
                if not isinstance(message, str):
                    await ws.close(1003, "binary frames are not supported; send JSON text frames")
                    return
                try:
                    req = parse_request(message, self.cfg.spaces, require_msg=self.cfg.require_msg)
                    if len(tasks) >= self.cfg.max_streams_per_connection:
                        raise Invalid(ERR_TOO_MANY_STREAMS)
                except Invalid as exc:
                    stats.rejected += 1
                    await ws.send(_dumps({"status": "connected", "connection_id": cid, "msg": str(exc),
                                          "msgtype": "error"}))
                    continue
                task = asyncio.create_task(self._stream(ws, cid, req, t_recv))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass
        finally:
            stats.open_connections -= 1
            for task in list(tasks):
                task.cancel()

    # ---- one sendmsg stream ------------------------------------------------------------------------
    async def _stream(self, ws: ServerConnection, cid: str, req: SendMsg, t_recv: float) -> None:
        try:
            if self._slots is None:
                await self._stream_frames(ws, cid, req, t_recv)
            else:
                async with self._slots:
                    await self._stream_frames(ws, cid, req, asyncio.get_running_loop().time())
        except (ConnectionClosed, asyncio.CancelledError):
            pass

    async def _stream_frames(self, ws: ServerConnection, cid: str, req: SendMsg, t_recv: float) -> None:
        cfg = self.cfg
        stats = self.stats
        stats.turns += 1
        loop = asyncio.get_running_loop()
        sleep = asyncio.sleep
        send = ws.send
        suid = self._uid(25)
        room_json = _dumps(req.room_uid)
        base = f'"connection_id":"{cid}","stream_uid":"{suid}","room_uid":{room_json}'
        tail = ',"is_stream":true,"msgtype":"info"}'
        cat = f"{time.time():.6f}"
        rv = req.return_voice
        n = 0

        def info(status: str, msg: str) -> str:
            return f'{{"status":"{status}",{base},"msg":{_dumps(msg)}{tail}'

        def run_event(event: str, run_id: str, parents: list[str], tags: list[str], data: dict | None = None) -> str:
            return _dumps({"event": event, "data": data or {}, "run_id": run_id, "parent_ids": parents,
                           "tags": tags})

        frames = [
            f'{{"status":"START",{base},"msg":"","is_stream":true,"cAt":"{cat}","return_voice":{rv},"msgtype":"info"}}',
            info("received", MSG_RECEIVED),
        ]
        if not req.no_history:
            frames += [info("history", MSG_HISTORY_SEARCH), info("history", MSG_HISTORY_REPLAYED)]
        frames += [info("memory", MSG_MEMORY_SEARCH), info("memory", MSG_MEMORY_FOUND.format(n=0)),
                   info("think", MSG_THINK_START)]
        lc = cfg.langchain_events
        root = step = agent = model = ""
        if lc:
            root, step, agent, model = (str(uuid.uuid4()) for _ in range(4))
            frames += [
                run_event("on_chain_start", root, [], []),
                run_event("on_chain_start", step, [root], ["graph:step:1", "langsmith:hidden"]),
                run_event("on_chain_end", step, [root], ["graph:step:1", "langsmith:hidden"]),
                run_event("on_chain_start", agent, [root], ["graph:step:2"]),
            ]
        fault = self.faults.draw() if self.faults else None
        if fault in ("drop", "stall"):
            await send(frames[0])  # START: the stream has begun
            stats.frames += 1
            if fault == "drop":
                ws.transport.abort()  # no close frame: the connection just goes away
                return
            await asyncio.Event().wait()  # stall: answer nothing more, until the connection closes
        for f in frames:
            await send(f)
        n += len(frames)

        def error(text: str) -> str:
            return f'{{"status":"connected",{base},"msg":{_dumps(text)},"msgtype":"error"}}'

        end_frames = [info("think", MSG_THINK_END),
                      f'{{"status":"END",{base},"msg":"","cAt":"{cat}","is_stream":true,'
                      f'"return_voice":{rv},"msgtype":"info"}}']
        deadline = t_recv + cfg.first_token_ms / 1000.0
        if req.space.credit < MIN_CREDIT:
            await send(error(ERR_CREDIT.format(credit=format_credit(req.space.credit))))
            n += 1
        elif fault == "error" or self._next_is_failure():
            if lc:
                await send(run_event("on_chat_model_start", model, [root, agent], ["seq:step:1", "agent_llm"]))
                n += 1
            delay = deadline - loop.time()
            if delay > 0:
                await sleep(delay)
            await send(error(FAULT_ERROR_TEXT if fault == "error" else LLM_FAILURE_TEXT))
            n += 1
        else:
            if lc:
                await send(run_event("on_chat_model_start", model, [root, agent], ["seq:step:1", "agent_llm"]))
                n += 1
            answer: Answer = self.llms[cfg.split_sentences and req.space.split_sentences].answer(req.msg)
            token_s = cfg.token_ms / 1000.0
            first = deadline
            i = 0
            for sentence in answer.sentences:
                sent_uid = self._uid(28)
                prefix = (f'{{"status":"stream",{base},"sent_uid":"{sent_uid}","event":"on_chat_model_stream",'
                          f'"data":{{"chunk":{{"content":')
                for tok in sentence.tokens_json:
                    delay = deadline - loop.time()
                    if delay > 0:
                        await sleep(delay)
                    await send(f'{prefix}{tok}}}}},"msg":{tok},"is_stream":true,"msgtype":"stream"}}')
                    i += 1
                    deadline = first + i * token_s
                n += len(sentence.tokens_json)
                if rv:
                    await send(
                        f'{{"status":"voice_ready",{base},"msg":{_dumps(sentence.text)},'
                        f'"voice_url":"{self._voice_url(req.room_uid, sent_uid)}",'
                        f'"voice_length":{sentence.voice_length},"sent_uid":"{sent_uid}"{tail}')
                    n += 1
            if lc:
                full = {"messages": [{"type": "ai", "content": answer.text}]}
                end_frames[:0] = [
                    run_event("on_chain_stream", agent, [root], ["graph:step:2"], {"chunk": full}),
                    run_event("on_chain_end", agent, [root], ["graph:step:2"]),
                    run_event("on_chain_end", root, [], []),
                ]
        if fault == "noend":
            stats.frames += n
            await asyncio.Event().wait()  # the answer was streamed; END never comes
        for f in end_frames:
            await send(f)
        n += len(end_frames)
        stats.frames += n


def _raise_fd_limit() -> None:
    """Thousands of connections need thousands of descriptors: lift the soft limit to the hard one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


def listen_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """The listening socket, made before any event loop: bind errors surface early (and clearly), and
    pre-forked processes can all accept from this one socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def ready_text(cfg: ServerConfig, port: int) -> str:
    return (
        f"chldo reference server ready on ws://{cfg.host}:{port} "
        f"(first token {cfg.first_token_ms:g} ms, {cfg.token_ms:g} ms/token, {cfg.answer_tokens} tokens, "
        f"{len(cfg.spaces)} api_key(s), llm failure rate {cfg.llm_failure_rate:g}"
        f"{', msg required' if cfg.require_msg else ''}"
        f"{', langchain events' if cfg.langchain_events else ''}"
        f"{f', {cfg.processes} processes' if cfg.processes > 1 else ''})"
    )


async def serve_forever(cfg: ServerConfig, sock: socket.socket, on_ready: Callable[[], None] | None = None,
                        *, deaf_after_stop: bool = False) -> Stats:
    """Serve on ``sock`` until SIGINT/SIGTERM; returns the counters.

    ``deaf_after_stop`` (a pre-forked child): once stopping, block SIGINT/SIGTERM. Ctrl-C reaches a
    child twice, from the terminal's process group and forwarded by the parent; a second signal
    after the event loop had closed raised KeyboardInterrupt, so the child exited 1 without its
    stats line (reproduced: SIGINT to the group, then to the children at once)."""
    import logging

    logging.getLogger("websockets").setLevel(logging.CRITICAL)  # probes and rude clients are not news
    _raise_fd_limit()
    app = ChldoServer(cfg)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    async with serve(
        app.handler,
        sock=sock,
        max_size=cfg.max_frame_bytes,
        max_queue=16,
        compression=None,
        ping_interval=cfg.ping_interval or None,
        ping_timeout=cfg.ping_interval or None,
        close_timeout=2,
    ):
        if on_ready is not None:
            on_ready()
        await stop
        if deaf_after_stop:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    return app.stats


def run_server(cfg: ServerConfig) -> int:
    """Bind, serve (in ``cfg.processes`` pre-forked processes), print the ready line once; exit code."""
    sock = listen_socket(cfg.host, cfg.port)
    port = sock.getsockname()[1]
    if cfg.processes <= 1:
        stats = asyncio.run(serve_forever(cfg, sock, lambda: print(ready_text(cfg, port), flush=True)))
        print_stats(stats)
        return 0
    return _run_prefork(cfg, sock, port)


def _run_prefork(cfg: ServerConfig, sock: socket.socket, port: int) -> int:
    """N processes accepting from one socket: each its own event loop and core, same behaviour."""
    ready_r, ready_w = os.pipe()
    children: list[int] = []
    for index in range(cfg.processes):
        pid = os.fork()
        if pid == 0:  # child: serve, report readiness through the pipe, never return into the caller
            code = 0
            try:
                os.close(ready_r)
                stats = asyncio.run(serve_forever(cfg, sock, lambda: os.write(ready_w, b"r"), deaf_after_stop=True))
                print_stats(stats, f" (process {index + 1}/{cfg.processes})")
            except BaseException:  # noqa: BLE001 - a child must end here whatever happened
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    os.close(ready_w)
    sock.close()
    forward = lambda sig, _frame: [_kill(pid, sig) for pid in children]  # noqa: E731
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    got = b""
    while len(got) < cfg.processes:
        chunk = os.read(ready_r, cfg.processes - len(got))
        if not chunk:  # a child died before it was ready
            break
        got += chunk
    os.close(ready_r)
    if len(got) == cfg.processes:
        print(ready_text(cfg, port), flush=True)
    else:
        print("loadkit serve chldo: error: a server process failed to start", file=sys.stderr, flush=True)
        forward(signal.SIGTERM, None)
    codes = []
    for pid in children:
        while True:
            try:
                codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                codes.append(0)
                break
    return 0 if len(got) == cfg.processes and not any(codes) else 1


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def print_stats(stats: Stats, where: str = "") -> None:
    # One write per line: pre-forked siblings share stderr, and print() writes text and newline apart.
    line = (
        f"chldo reference server stopped{where}: {stats.connections} connections, {stats.turns} turns, "
        f"{stats.frames} frames streamed, {stats.rejected} requests rejected\n"
    )
    sys.stderr.flush()
    os.write(sys.stderr.fileno(), line.encode())
