"""Locust glue for the chldo ``sendmsg`` stream: ``--chldo-*`` options and :class:`ChldoUser`.

Each user opens one WebSocket (Locust ``--host`` is the ``ws://`` / ``wss://`` URL), then loops:
send one prompt, wait for END, report, think. Through the one measurement path
(:mod:`loadkit.users.measure`, ``request_type="chldo"``, definitions in docs/chldo.md):

* request events — the requests a user sent: ``connect`` (handshake) and ``sendmsg`` (send → END,
  response_length = answer characters, or send → the failure);
* loadkit metrics of each successful turn, in their catalog units (:mod:`loadkit.metrics.catalog`):
  ``time_to_start``, ``ttft``, ``som_to_eom``, ``first_voice`` (ms), ``chunk_gap``,
  ``chunk_gap_max``, ``voice_ms`` (ms), ``chunks``, ``chars`` (counts), ``chunks_per_s`` (1/s);
* protocol violations seen between turns (no request of ours was waiting) are counted as
  ``protocol_violation:<class>`` in ``<prefix>_counters.csv``.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from time import perf_counter
from pathlib import Path
from typing import Any

from gevent import GreenletExit
from locust import User, events, task

from loadkit.clients.chldo import ChldoClient
from loadkit.metrics.counters import counters
from loadkit.options import choice, file_or_inline, number, parsed_by, rule
from loadkit.options import value as option_value
from loadkit.users.measure import Measure
from loadkit.protocols.chldo import build_sendmsg
from loadkit.protocols.chldo_turn import ChldoConnectError, ChldoError, ChldoTimeout, Turn

REQUEST_TYPE = "chldo"
DEFAULT_PROMPTS = (
    "안녕 반가워요",
    "울산 남구에서의 기억을 이야기해 줄래?",
    "오늘 날씨 어때?",
    "Hello, nice to meet you!",
    "Tell me about your favourite memory.",
)
OMITTABLE = ("api_key", "room_uid", "user_id", "msg", "action")
COUNTERS = counters(REQUEST_TYPE)
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
MAX_MAX_MESSAGE = 1 << 30

# ids unique per worker process, even across machines (pid + random) and across fork: Locust's
# --processes forks after this module was imported, so the tag is (re)made in whichever process asks.
_proc_state: dict[str, Any] = {"pid": None, "tag": "", "seq": None}


def process_tag() -> tuple[str, int]:
    """(tag of this process, next user number in it)."""
    pid = os.getpid()
    if _proc_state["pid"] != pid:
        _proc_state.update(pid=pid, tag=f"{pid:x}{uuid.uuid4().hex[:6]}", seq=itertools.count(1))
    return _proc_state["tag"], next(_proc_state["seq"])


@events.init_command_line_parser.add_listener
def _add_chldo_options(parser: Any) -> None:
    # parser.add_argument itself (not an argument group): only that registers the option for the web UI
    parser.add_argument("--chldo-api-key", default="demo-key", is_secret=True, help="api_key sent with every sendmsg")
    parser.add_argument("--chldo-return-voice", default="",
                        help="'' = omit (space default), 0 or 1 (sent as numbers); anything else is sent "
                             "verbatim as a string (to provoke the validation error)")
    parser.add_argument("--chldo-prompts", default="",
                        help="file with one prompt per line, or prompts separated by '|' (default: built-in "
                             "Korean and English prompts)")
    parser.add_argument("--chldo-think-time", default="1",
                        help="seconds between turns: 'S' or 'MIN-MAX' (uniform), default 1")
    parser.add_argument("--chldo-turn-timeout", type=float, default=60.0,
                        help="seconds from send to END before the turn fails as a timeout (default 60)")
    parser.add_argument("--chldo-connect-timeout", type=float, default=10.0,
                        help="WebSocket handshake timeout in seconds (default 10)")
    parser.add_argument("--chldo-turns-per-connection", type=int, default=0,
                        help="reconnect after this many turns; 0 = keep one connection (default)")
    parser.add_argument("--chldo-omit", default="",
                        help=f"comma-separated request fields to leave out (negative tests): {', '.join(OMITTABLE)}")
    parser.add_argument("--chldo-max-message-size", type=int, default=DEFAULT_MAX_MESSAGE,
                        help="largest message in bytes the client accepts; a bigger one fails the turn "
                             "(ChldoProtocolError) and closes the connection (default 16777216 = 16 MiB, "
                             "like the websockets library's max_size)")
    parser.add_argument("--chldo-detail-metrics", type=int, default=1,
                        help="1 = also record the metrics chunks, chars, chunks_per_s, chunk_gap, chunk_gap_max, "
                             "voice_ms (default); 0 = only sendmsg and the phase latencies")


def parse_omit(text: str) -> tuple[str, ...]:
    fields = tuple(f.strip() for f in (text or "").split(",") if f.strip())
    unknown = set(fields) - set(OMITTABLE)
    if unknown:
        raise ValueError(f"--chldo-omit: unknown field(s) {sorted(unknown)}; allowed: {', '.join(OMITTABLE)}")
    return fields


def parse_think_time(text: str) -> tuple[float, float]:
    """'2' → (2, 2); '0.5-3' → (0.5, 3)."""
    text = (text or "0").strip()
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = float(lo_s)
        hi = float(hi_s) if sep else lo
    except ValueError:
        raise ValueError(f"--chldo-think-time: expected S or MIN-MAX seconds, got {text!r}") from None
    if lo < 0 or hi < lo:
        raise ValueError(f"--chldo-think-time: need 0 <= MIN <= MAX, got {text!r}")
    return lo, hi


def load_prompts(spec: str) -> list[str]:
    """A file of prompts (one per line), or 'a|b|c', or the built-in list when empty."""
    if not spec:
        return list(DEFAULT_PROMPTS)
    path = Path(spec)
    if "|" not in spec and path.is_file():
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        prompts = [p.strip() for p in spec.split("|") if p.strip()]
    if not prompts:
        raise ValueError(f"--chldo-prompts: no prompt found in {spec!r}")
    return prompts


def _checks() -> None:
    """The ``--chldo-*`` checks, shared by the command line and the web UI (loadkit.options)."""
    rule("--chldo-think-time", parsed_by(parse_think_time))
    rule("--chldo-prompts", lambda text: (file_or_inline(text), parsed_by(load_prompts)(text)))
    rule("--chldo-omit", parsed_by(parse_omit))
    rule("--chldo-turn-timeout", number(0, 86400, above=True))
    rule("--chldo-connect-timeout", number(0, 3600, above=True))
    rule("--chldo-turns-per-connection", number(0, integer=True))
    rule("--chldo-detail-metrics", choice("0", "1"))
    rule("--chldo-max-message-size", parsed_by(parse_max_message))


def parse_max_message(text: str) -> int:
    """Bytes, 1 .. 1 GiB (a limit above that protects nothing: one message could take the memory)."""
    try:
        size = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number of bytes, e.g. {DEFAULT_MAX_MESSAGE}, got {text!r}") from None
    if not 1 <= size <= MAX_MAX_MESSAGE:
        raise ValueError(f"must be from 1 to {MAX_MAX_MESSAGE} bytes (1 GiB), got {text}")
    return size


def parse_return_voice(text: str) -> Any:
    text = (text or "").strip()
    if text == "":
        return None
    if text in ("0", "1"):
        return int(text)
    return text


_checks()


class ChldoUser(User):
    """A visitor chatting over one chldo WebSocket: connect, then send → stream → think, forever.

    Subclasses may pin settings with class attributes (``api_key``, ``return_voice``, ``prompts``,
    ``omit``); ``None`` means "take the ``--chldo-*`` option".
    """

    abstract = True
    host_schemes = ("ws", "wss")  # what --host must be (loadkit.options)
    host_example = "ws://127.0.0.1:8765"
    api_key: str | None = None
    return_voice: Any = None
    prompts: list[str] | None = None
    omit: tuple[str, ...] | None = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.measure = Measure(environment, REQUEST_TYPE)
        def get(name: str) -> Any:  # the run's --chldo-* value, or the default its add_argument declares
            return option_value(environment, name)

        tag, n = process_tag()
        self.user_id = f"lk-{tag}-u{n}"
        self.room_uid = f"lk{tag}r{n}"
        if self.api_key is None:
            self.api_key = get("chldo_api_key")
        if isinstance(self.api_key, str):
            self.measure.secrets.append(self.api_key)
        if self.return_voice is None:
            self.return_voice = parse_return_voice(get("chldo_return_voice"))
        if self.prompts is None:
            self.prompts = load_prompts(get("chldo_prompts"))
        if self.omit is None:
            self.omit = parse_omit(get("chldo_omit"))
        self.think = parse_think_time(get("chldo_think_time"))
        self.turn_timeout = float(get("chldo_turn_timeout"))
        self.turns_per_connection = int(get("chldo_turns_per_connection"))
        self.detail = bool(int(get("chldo_detail_metrics")))
        self._prompt_index = random.randrange(len(self.prompts))
        self._turns_on_connection = 0
        self._skip_connect_once = False
        if not self.host:
            raise ValueError("ChldoUser needs --host ws://HOST:PORT (the chldo WebSocket URL)")
        self.client = ChldoClient(
            self.host,
            connect_timeout=float(get("chldo_connect_timeout")),
            max_message=int(get("chldo_max_message_size")),
            on_stray=self._report_stray,
        )
        self._ctx = {"room_uid": self.room_uid, "user_id": self.user_id}

    def wait_time(self) -> float:
        lo, hi = self.think
        return lo if hi == lo else random.uniform(lo, hi)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def on_start(self) -> None:
        # a failed first connect is retried by the first task only after a think time
        self._skip_connect_once = not self._connect()

    def on_stop(self) -> None:
        self.client.close()

    def _connect(self) -> bool:
        t0 = perf_counter()
        try:
            ms = self.client.connect()
        except ChldoConnectError as exc:
            self.measure.request("connect", 0.0, 0, exc, self._ctx)
            return False
        except GreenletExit:  # stopped (end of the run) in the handshake: recorded, not lost
            self.measure.unfinished("connect", (perf_counter() - t0) * 1000.0)
            raise
        self._turns_on_connection = 0
        self.measure.request("connect", ms, 0, None, self._ctx)
        return True

    def _report_stray(self, violation: ChldoError) -> None:
        # not a request of ours (none was waiting): a counted fact of the run, not a request failure
        COUNTERS.bump(f"protocol_violation:{type(violation).__name__}")

    def build_request(self, prompt: str) -> dict[str, Any]:
        req = build_sendmsg(api_key=self.api_key, room_uid=self.room_uid, user_id=self.user_id, msg=prompt,
                            return_voice=self.return_voice)
        for name in self.omit or ():
            req.pop(name, None)
        return req

    # ---- the conversation loop ---------------------------------------------------------------------
    @task
    def converse(self) -> None:
        if not self.client.connected:
            if self._skip_connect_once:
                self._skip_connect_once = False
                return
            if not self._connect():
                return
        prompts = self.prompts
        prompt = prompts[self._prompt_index % len(prompts)]
        self._prompt_index += 1
        t0 = perf_counter()
        try:
            turn = self.client.sendmsg(self.build_request(prompt), self.turn_timeout)
        except GreenletExit:  # stopped (end of the run) while the turn streams: recorded, not lost
            self.measure.unfinished("sendmsg", (perf_counter() - t0) * 1000.0)
            raise
        self.report(turn)
        self._turns_on_connection += 1
        if not self.client.connected or isinstance(turn.error, ChldoTimeout) or (
            self.turns_per_connection and self._turns_on_connection >= self.turns_per_connection
        ):  # lost (also after bad framing or a message over the limit): the socket goes at once
            self.client.close()

    def report(self, turn: Turn) -> None:
        """Turn → one ``sendmsg`` request event, then the turn's metrics (module docstring)."""
        measure = self.measure
        measure.request("sendmsg", turn.sendmsg_ms or 0.0, turn.chars, turn.error, self._ctx)
        if measure.goodput is not None:  # --goodput: the turn's figures judged together
            measure.goodput.judge_phases(REQUEST_TYPE, "sendmsg", turn.error is None, {
                "sendmsg": turn.sendmsg_ms, "ttft": turn.ttft_ms, "time_to_start": turn.time_to_start_ms,
                "som_to_eom": turn.som_to_eom_ms, "first_voice": turn.first_voice_ms})
        if turn.error is not None:
            return
        metric = measure.metric
        if turn.t_start is not None:
            metric("time_to_start", turn.time_to_start_ms)
            metric("som_to_eom", turn.som_to_eom_ms)
        if turn.t_first_token is not None:
            metric("ttft", turn.ttft_ms)
        if turn.t_first_voice is not None:
            metric("first_voice", turn.first_voice_ms)
        if not self.detail:
            return
        metric("chunks", float(turn.chunks))
        metric("chars", float(turn.chars))
        rate = turn.chunks_per_s
        if rate is not None:
            metric("chunks_per_s", rate)
        if turn.chunks >= 2:
            metric("chunk_gap", turn.gap_mean_ms)
            metric("chunk_gap_max", turn.gap_max_ms)
        if turn.voices:
            metric("voice_ms", turn.voice_seconds * 1000.0)
