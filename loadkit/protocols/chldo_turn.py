"""The chldo ``sendmsg`` turn state machine: classify every frame, derive the metrics (sans-I/O).

A *turn* is one ``sendmsg`` request and the frames it provokes, up to its END frame (or the single
validation-error frame that replaces the whole stream). A :class:`ChldoSession` holds the per-connection
state (at most one turn in flight, the last finished ``stream_uid``) so that frames arriving after END
or for an unknown stream are told apart from the turn they might be confused with.

The I/O shell passes ``now`` (a ``time.perf_counter()`` value taken when the bytes carrying the frame
were read) with every frame; nothing here reads a clock, so recorded frame sequences replay
deterministically in unit tests.

Hot path cost per token frame: one ``json.loads`` (done by :meth:`ChldoSession.on_text`), a handful of
dict lookups and integer/float updates; no allocation.
"""

from __future__ import annotations

import reprlib
from math import isfinite
from typing import Any, Callable

from orjson import loads as _loads  # about 3x faster than json on these frames

from loadkit.protocols.chldo import (
    EVENT_CHAT_MODEL_STREAM,
    LANGCHAIN_RUN_EVENTS,
    MSGTYPE_ERROR,
    MSGTYPE_STREAM,
    STATUS_END,
    STATUS_START,
    STATUS_STREAM,
    STATUS_VOICE_READY,
)
from loadkit.protocols.errors import ConnectFailed, ConnectionLost, LoadkitError, Rejected, RemoteProtocolError, Timeout


# ---- failure kinds: one class each, message = the server's own text --------------------------------
class ChldoError(LoadkitError):
    """Base of every chldo failure; ``str(exc)`` is what Locust groups failures by."""

    kind = "error"


class ChldoValidationError(ChldoError, Rejected):
    """The request was refused with a single error frame (no START): e.g. ``api_key is required``."""

    kind = "validation"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.server_message = message  # (errors.Rejected: chldo error frames carry no code)


class ChldoStreamError(ChldoError, Rejected):
    """An error frame inside a started stream (LLM failure, missing credit); the stream still ENDs."""

    kind = "stream_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.server_message = message


class ChldoTimeout(ChldoError, Timeout):
    """No END (nor validation error) within the turn timeout."""

    kind = "timeout"


class ChldoProtocolError(ChldoError, RemoteProtocolError):
    """The server broke the protocol: unknown stream_uid, END without START, frame after END, non-JSON…"""

    kind = "protocol"


class ChldoConnectionLost(ChldoError, ConnectionLost):
    """The connection closed or failed while a turn was in flight (or could not be opened)."""

    kind = "connection"


class ChldoConnectError(ChldoConnectionLost, ConnectFailed):
    """The WebSocket handshake itself failed."""

    kind = "connect"


#: a bounded repr for values a hostile server chose: a plain ``repr`` of a 15 MB object costs its size,
#: and of one nested 100 000 deep a RecursionError
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 4, 8, 8, 100, 100


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _typed(value: Any) -> str:
    """A value as JSON-ish text that shows its type (a string in quotes)."""
    return _short(_REPR.repr(value))


#: the longest server text a failure keeps (failure texts are grouped by Locust and written to CSVs)
TEXT_LIMIT = 300


class Turn:
    """One sendmsg request's life: timestamps, counters, and the first failure seen."""

    __slots__ = (
        "t_send", "t_start", "t_first_token", "t_last_token", "t_first_voice", "t_end",
        "stream_uid", "started", "done", "chunks", "chars", "sentences", "last_sent_uid",
        "voices", "voice_seconds", "gap_sum", "gap_max", "frames", "info_frames",
        "langchain_events", "error", "stream_errors", "text_parts", "keep_text",
    )

    def __init__(self, t_send: float, keep_text: bool = False) -> None:
        self.t_send = t_send
        self.t_start: float | None = None
        self.t_first_token: float | None = None
        self.t_last_token: float | None = None
        self.t_first_voice: float | None = None
        self.t_end: float | None = None
        self.stream_uid: str | None = None
        self.started = False
        self.done = False
        self.chunks = 0
        self.chars = 0
        self.sentences = 0
        self.last_sent_uid: Any = None
        self.voices = 0
        self.voice_seconds = 0.0
        self.gap_sum = 0.0
        self.gap_max = 0.0
        self.frames = 0
        self.info_frames = 0
        self.langchain_events = 0
        self.error: ChldoError | None = None
        self.stream_errors = 0
        self.keep_text = keep_text
        self.text_parts: list[str] | None = [] if keep_text else None

    # ---- results -------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.done and self.error is None

    @property
    def text(self) -> str:
        """The streamed answer (only when the turn was created with ``keep_text=True``)."""
        return "".join(self.text_parts or ())

    def _ms(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else (b - a) * 1000.0

    @property
    def sendmsg_ms(self) -> float | None:
        return self._ms(self.t_send, self.t_end)

    @property
    def time_to_start_ms(self) -> float | None:
        return self._ms(self.t_send, self.t_start)

    @property
    def ttft_ms(self) -> float | None:
        return self._ms(self.t_send, self.t_first_token)

    @property
    def som_to_eom_ms(self) -> float | None:
        return self._ms(self.t_start, self.t_end) if self.started else None

    @property
    def first_voice_ms(self) -> float | None:
        return self._ms(self.t_send, self.t_first_voice)

    @property
    def stream_ms(self) -> float | None:
        """First token to last token."""
        return self._ms(self.t_first_token, self.t_last_token)

    @property
    def chunks_per_s(self) -> float | None:
        """(chunks - 1) / (last token - first token): the rate tokens arrived at while streaming."""
        if self.chunks < 2 or self.t_last_token is None or self.t_first_token is None:
            return None
        span = self.t_last_token - self.t_first_token
        return (self.chunks - 1) / span if span > 0 else None

    @property
    def gap_mean_ms(self) -> float | None:
        return self.gap_sum * 1000.0 / (self.chunks - 1) if self.chunks >= 2 else None

    @property
    def gap_max_ms(self) -> float | None:
        return self.gap_max * 1000.0 if self.chunks >= 2 else None

    # ---- classification --------------------------------------------------------------------------
    def fail(self, exc: ChldoError) -> None:
        """Keep the first failure: it is the cause, later ones are usually consequences."""
        if self.error is None:
            self.error = exc

    def finish(self, now: float) -> None:
        self.done = True
        self.t_end = now

    def feed(self, obj: dict[str, Any], now: float) -> bool:
        """Classify one parsed frame of this turn; True when the turn is over."""
        self.frames += 1
        get = obj.get
        suid = get("stream_uid")
        if suid is not None and suid != self.stream_uid:
            if self.stream_uid is None:
                if type(suid) is not str:  # kept all the same: the turn can still end at its END
                    self.fail(ChldoProtocolError(f"stream_uid is not a string: {_typed(suid)}"))
                self.stream_uid = suid
            else:
                self.fail(ChldoProtocolError(f"unknown stream_uid {_short(suid)} (turn is {self.stream_uid})"))
                return False
        status = get("status")
        if status == STATUS_STREAM:
            if get("event") == EVENT_CHAT_MODEL_STREAM or get("msgtype") == MSGTYPE_STREAM:
                self._token(obj, get, now)
            else:
                self.info_frames += 1
            return False
        if status is None:
            event = get("event")
            if event == EVENT_CHAT_MODEL_STREAM:
                self._token(obj, get, now)
            elif event in LANGCHAIN_RUN_EVENTS:
                self.langchain_events += 1
            else:
                self.fail(ChldoProtocolError(f"unclassifiable frame: {_short(obj)}"))
            return False
        if type(status) is not str:
            self.fail(ChldoProtocolError(f"status is not a string: {_typed(status)}"))
            return False
        msgtype = get("msgtype")
        if msgtype == MSGTYPE_ERROR:
            text = _short(get("msg"), TEXT_LIMIT)
            if not self.started:
                self.fail(ChldoValidationError(text))
                self.finish(now)
                return True
            self.stream_errors += 1
            self.fail(ChldoStreamError(text))
            return False
        if msgtype is not None and type(msgtype) is not str:
            self.fail(ChldoProtocolError(f"msgtype is not a string: {_typed(msgtype)}"))
            return False
        if status == STATUS_START:
            if self.started:
                self.fail(ChldoProtocolError("second START in one turn"))
            else:
                self.started = True
                self.t_start = now
            return False
        if status == STATUS_END:
            if not self.started:
                self.fail(ChldoProtocolError("END without START"))
            self.finish(now)
            return True
        if status == STATUS_VOICE_READY:
            if not self.started:
                self.fail(ChldoProtocolError("voice_ready before START"))
            self.voices += 1
            if self.t_first_voice is None:
                self.t_first_voice = now
            length = get("voice_length")
            if type(length) is float or type(length) is int:
                if length >= 0 and isfinite(length):
                    self.voice_seconds += length
                    return False
            elif length is None:  # absent: a voice of unknown length
                return False
            self.fail(ChldoProtocolError(f"voice_length is not a number of seconds: {_typed(length)}"))
            return False
        # received / history / memory / think and statuses the vendor may add later
        self.info_frames += 1
        return False

    def _token(self, obj: dict[str, Any], get: Callable[[str], Any], now: float) -> None:
        if not self.started:
            self.fail(ChldoProtocolError("stream frame before START"))
        try:
            content = obj["data"]["chunk"]["content"]
        except KeyError:
            content = get("msg")
        except TypeError:  # data or data.chunk is not an object (null data: as if absent)
            content = get("msg")
            data = get("data")
            if data is not None:
                chunk = data.get("chunk") if type(data) is dict else data
                self.fail(ChldoProtocolError(f"data.chunk is not an object: {_typed(chunk)}"))
        if not isinstance(content, str):
            self.fail(ChldoProtocolError(f"stream frame without text content: {_short(obj)}"))
            content = ""
        self.chunks += 1
        self.chars += len(content)
        if self.text_parts is not None:
            self.text_parts.append(content)
        last = self.t_last_token
        if last is None:
            self.t_first_token = now
        else:
            gap = now - last
            self.gap_sum += gap
            if gap > self.gap_max:
                self.gap_max = gap
        self.t_last_token = now
        sent = get("sent_uid")
        if sent != self.last_sent_uid or self.sentences == 0:
            self.sentences += 1
            self.last_sent_uid = sent


class ChldoSession:
    """Per-connection core: routes frames to the turn in flight, flags the ones that belong nowhere.

    ``stray`` collects protocol violations seen while no turn could own the frame (frames after END,
    non-JSON between turns); the I/O shell drains and reports it.
    """

    __slots__ = ("turn", "last_stream_uid", "stray", "keep_text", "frames")

    def __init__(self, keep_text: bool = False) -> None:
        self.turn: Turn | None = None
        self.last_stream_uid: str | None = None
        self.stray: list[ChldoProtocolError] = []
        self.keep_text = keep_text
        self.frames = 0

    def begin(self, t_send: float) -> Turn:
        if self.turn is not None and not self.turn.done:
            raise RuntimeError("a turn is already in flight on this connection")
        self.turn = Turn(t_send, self.keep_text)
        return self.turn

    def on_text(self, payload: bytes | str, now: float) -> Turn | None:
        """One text message; returns the turn if this frame finished it."""
        self.frames += 1
        try:
            obj = _loads(payload)
        except ValueError:
            shown = payload[:200].decode("utf-8", "replace") if isinstance(payload, (bytes, bytearray)) else payload
            return self._violation(f"non-JSON frame: {_short(shown)}", now)
        if type(obj) is not dict:
            return self._violation(f"frame is not a JSON object: {_short(obj)}", now)
        turn = self.turn
        if turn is not None and not turn.done:
            suid = obj.get("stream_uid")
            if suid is not None and suid == self.last_stream_uid and suid != turn.stream_uid:
                self.stray.append(ChldoProtocolError(f"frame after END of stream {_short(suid)}"))
                return None
            if turn.feed(obj, now):
                if turn.stream_uid is not None:
                    self.last_stream_uid = turn.stream_uid
                return turn
            return None
        what = obj.get("status") or obj.get("event") or "?"
        if self.last_stream_uid is not None and obj.get("stream_uid") == self.last_stream_uid:
            self.stray.append(ChldoProtocolError(f"frame after END: {_short(what)}"))
        elif obj.get("msgtype") == MSGTYPE_ERROR:
            self.stray.append(ChldoProtocolError(f"error frame outside any turn: {_short(obj.get('msg'))}"))
        else:
            self.stray.append(ChldoProtocolError(f"frame outside any turn: {_short(what)}"))
        return None

    def on_binary(self, payload: bytes, now: float) -> Turn | None:
        self.frames += 1
        return self._violation(f"binary frame of {len(payload)} bytes", now)

    def _violation(self, text: str, now: float) -> Turn | None:
        turn = self.turn
        if turn is not None and not turn.done:
            turn.fail(ChldoProtocolError(text))
        else:
            self.stray.append(ChldoProtocolError(text))
        return None

    def connection_lost(self, text: str, now: float) -> Turn | None:
        """The socket is gone: the turn in flight (if any) ends as a connection failure."""
        turn = self.turn
        if turn is not None and not turn.done:
            turn.fail(ChldoConnectionLost(text))
            turn.finish(now)
            return turn
        return None

    def timed_out(self, timeout_s: float, now: float) -> Turn | None:
        turn = self.turn
        if turn is not None and not turn.done:
            where = "no START" if not turn.started else f"{turn.chunks} chunks, no END"
            turn.fail(ChldoTimeout(f"no END within {timeout_s:g} s ({where})"))
            turn.finish(now)
            return turn
        return None


def replay(frames: list[Any], *, t0: float = 0.0, step: float = 0.001, keep_text: bool = True) -> Turn:
    """Run a recorded frame sequence (strings, bytes or dicts) through a fresh session: for tests.

    Frame *i* is given the timestamp ``t0 + (i + 1) * step``; the send happens at ``t0``.
    """
    session = ChldoSession(keep_text=keep_text)
    turn = session.begin(t0)
    for i, frame in enumerate(frames):
        now = t0 + (i + 1) * step
        if isinstance(frame, dict):
            if not turn.done:
                turn.feed(frame, now)
        else:
            session.on_text(frame, now)
    return turn
