"""Configuration of the chldo reference server: options checked up front, spaces (api_keys) loaded.

Every problem becomes a :class:`ConfigError` with a message a person can act on; ``cli.run`` prints
it and exits 2, so a typo in a test script never shows up as a traceback or a half-started server.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_KEY = "demo-key"
AMPLE_CREDIT = 1_000_000_000.0


class ConfigError(Exception):
    """Bad server configuration (message is shown to the user as is)."""


@dataclass(frozen=True)
class Space:
    """What one api_key identifies on the real service: a tenant with credit and voice default."""

    api_key: str
    usable: bool = True
    credit: float = AMPLE_CREDIT
    return_voice: int = 0
    split_sentences: bool = True


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    first_token_ms: float = 300.0
    token_ms: float = 20.0
    answer_tokens: int = 40
    llm_failure_rate: float = 0.0
    require_msg: bool = False
    langchain_events: bool = False
    split_sentences: bool = True
    max_frame_bytes: int = 65536
    max_streams_per_connection: int = 4
    max_concurrent: int = 0  # turns served at once per process; 0 = no limit (the rest wait in a queue)
    ping_interval: float = 20.0
    processes: int = 1
    faults: dict[str, float] = field(default_factory=dict)  # loadkit.targets.faults: kind -> probability
    fault_seed: int = 0
    spaces: dict[str, Space] = field(default_factory=lambda: {DEMO_KEY: Space(DEMO_KEY)})


_SPACE_FIELDS = {"usable", "credit", "return_voice", "split_sentences"}


def parse_spaces(data: Any, source: str = "api-keys") -> dict[str, Space]:
    """``{"key": {"usable": bool, "credit": number, "return_voice": 0|1}, ...}`` → spaces."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: expected a non-empty JSON object mapping api_key -> settings")
    spaces: dict[str, Space] = {}
    for key, spec in data.items():
        where = f"{source}: key {key!r}"
        if not key:
            raise ConfigError(f"{source}: an api_key must be a non-empty string")
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected an object like {{\"usable\": true, \"credit\": 1000, \"return_voice\": 0}}")
        unknown = set(spec) - _SPACE_FIELDS
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_SPACE_FIELDS)}")
        usable = spec.get("usable", True)
        if not isinstance(usable, bool):
            raise ConfigError(f"{where}: 'usable' must be true or false, got {usable!r}")
        credit = spec.get("credit", AMPLE_CREDIT)
        if isinstance(credit, bool) or not isinstance(credit, (int, float)) or not math.isfinite(credit):
            raise ConfigError(f"{where}: 'credit' must be a number, got {credit!r}")
        rv = spec.get("return_voice", 0)
        if isinstance(rv, bool) or rv not in (0, 1):
            raise ConfigError(f"{where}: 'return_voice' must be 0 or 1, got {rv!r}")
        split = spec.get("split_sentences", True)
        if not isinstance(split, bool):
            raise ConfigError(f"{where}: 'split_sentences' must be true or false, got {split!r}")
        spaces[key] = Space(key, usable, float(credit), int(rv), split)
    return spaces


def load_spaces(path: str | Path) -> dict[str, Space]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--api-keys {path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--api-keys {path}: not valid JSON: {exc}") from None
    return parse_spaces(data, f"--api-keys {path}")


def from_args(args: Any) -> ServerConfig:
    """Build and check a :class:`ServerConfig` from the parsed ``loadkit serve chldo`` options."""
    def nonneg(name: str, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{name} must be a number >= 0, got {value}")
        return value

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be within 0..65535, got {args.port}")
    if args.answer_tokens < 1:
        raise ConfigError(f"--answer-tokens must be >= 1, got {args.answer_tokens}")
    if not (0.0 <= args.llm_failure_rate <= 1.0):
        raise ConfigError(f"--llm-failure-rate must be within 0..1, got {args.llm_failure_rate}")
    if args.max_frame_bytes < 1024:
        raise ConfigError(f"--max-frame-bytes must be >= 1024, got {args.max_frame_bytes}")
    max_concurrent = getattr(args, "max_concurrent", 0)
    if max_concurrent < 0:
        raise ConfigError(f"--max-concurrent must be >= 0, got {max_concurrent}")
    if args.max_streams_per_connection < 1:
        raise ConfigError(f"--max-streams-per-connection must be >= 1, got {args.max_streams_per_connection}")
    processes = getattr(args, "processes", 1)
    if not 1 <= processes <= 256:
        raise ConfigError(f"--processes must be within 1..256, got {processes}")
    from loadkit.targets.faults import parse_faults

    try:
        faults = parse_faults(getattr(args, "fault", "") or "")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cfg = ServerConfig(
        host=args.host,
        port=args.port,
        first_token_ms=nonneg("first-token-ms", args.first_token_ms),
        token_ms=nonneg("token-ms", args.token_ms),
        answer_tokens=args.answer_tokens,
        llm_failure_rate=args.llm_failure_rate,
        require_msg=args.require_msg,
        langchain_events=args.langchain_events,
        split_sentences=not args.no_sentence_split,
        max_frame_bytes=args.max_frame_bytes,
        max_streams_per_connection=args.max_streams_per_connection,
        max_concurrent=max_concurrent,
        ping_interval=nonneg("ping-interval", args.ping_interval),
        processes=processes,
        faults=faults,
        fault_seed=int(getattr(args, "fault_seed", 0) or 0),
    )
    if args.api_keys:
        cfg.spaces = load_spaces(args.api_keys)
    return cfg
