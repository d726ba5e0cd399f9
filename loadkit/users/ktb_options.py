"""The ``--ktb-*`` options of ``KtbChatUser``: each declared once (``add_argument``: its default is
the one a user reads, through ``loadkit.options.value``) and checked once by its rule, shared by the
command line and the web UI (:mod:`loadkit.options`). Importing this module declares them; the user
module imports it. See docs/ktb-users.md for what each option does.
"""

from __future__ import annotations

from typing import Any

from locust import events

from loadkit.options import choice, number, parsed_by, rule, url
from loadkit.options import value as option_value

DEFAULT_WEIGHTS = {
    "chatMessage": 10,
    "fetchPreviousMessages": 2,
    "markMessagesAsRead": 3,
    "messageReaction": 1,
    "rejoin": 1,
}


# ------------------------------------------------------------------------------------ options
@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    # parser.add_argument itself, not an argument group's: only Locust's own add_argument marks an
    # option for the web UI (an argument group's add_argument is plain argparse)
    parser.add_argument("--ktb-socket-url", default="", help="Socket.IO base URL (default: --host, the REST base URL)")
    parser.add_argument("--ktb-room-size", type=int, default=10, help="users per chat room (rooms are per process)")
    parser.add_argument("--ktb-room-id", default="", help="join this existing room instead of creating rooms")
    parser.add_argument("--ktb-password", default="loadkit-pass-1", is_secret=True, help="password of the generated accounts")
    parser.add_argument("--ktb-run-id", default="", help="account name prefix (default: random per process)")
    parser.add_argument("--ktb-server", default="auto", choices=["auto", "java", "node"],
                        help="which KTB backend is loaded: auto (decided once before the first task from what the "
                             "server shows, logged in one line), java or node; see docs/ktb-users.md")
    parser.add_argument("--ktb-timeout", type=float, default=10.0, help="seconds to wait for an answer, and for the whole connect handshake")
    parser.add_argument("--ktb-rest-timeout", type=float, default=0.0,
                        help="seconds a REST call (register, login, rooms) may take (default: --ktb-timeout)")
    parser.add_argument("--ktb-wait-min", type=float, default=1.0, help="min seconds between tasks")
    parser.add_argument("--ktb-wait-max", type=float, default=3.0, help="max seconds between tasks")
    parser.add_argument(
        "--ktb-weights",
        default="",
        help="task weights, e.g. chatMessage=10,fetchPreviousMessages=2,markMessagesAsRead=3,messageReaction=1,rejoin=1",
    )
    parser.add_argument("--ktb-delivery", default="on", choices=["on", "off"], help="record `delivery` latency to other members")
    parser.add_argument("--ktb-banned-word", default="", help="word appended to every Nth message (forces MESSAGE_REJECTED)")
    parser.add_argument("--ktb-banned-every", type=int, default=0, help="N for --ktb-banned-word (0: never)")
    parser.add_argument("--ktb-insecure", action="store_true", default=False, help="do not verify TLS certificates (wss://)")
    parser.add_argument("--ktb-max-message-size", type=int, default=16 * 1024 * 1024,
                        help="largest websocket message (bytes) a KTB user accepts: a bigger one ends the connection "
                             "(a classified failure of the request waiting on it); default 16777216 (16 MiB)")
    parser.add_argument("--ktb-max-retry-after", type=float, default=60.0, help="cap on the RATE_LIMIT pause (seconds)")
    parser.add_argument("--ktb-heartbeat", default="on", choices=["on", "off"],
                        help="declare a connection lost when the server sends no Engine.IO ping for pingInterval + "
                             "2 x pingTimeout (off: for a server that announces pings but never sends them)")
    parser.add_argument("--ktb-auth-first", default="on", choices=["on", "off"],
                        help="on: no user starts its tasks until every user of this process has logged in and "
                             "joined (logins, bcrypt-slow on Node, do not overlap the measured operations); "
                             "default on")
    parser.add_argument("--ktb-leave-ack", default="on", choices=["on", "off"],
                        help="time leaveRoom by its Socket.IO ack (on; the Java server acks every registered "
                             "event) or send it untimed (off: for a server that never acks it)")


def _opt(env: Any, name: str) -> Any:
    """The run's ``--ktb-*`` value, or the default its ``add_argument`` above declares."""
    return option_value(env, name)


def parse_weights(text: str) -> dict[str, int]:
    """``"chatMessage=10,rejoin=0"`` → weights (unknown names are an error, not ignored)."""
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, val = part.partition("=")
        if key not in weights:
            raise ValueError(f"--ktb-weights: unknown task {key!r} (known: {', '.join(weights)})")
        try:
            weights[key] = int(val)
        except ValueError:
            raise ValueError(f"--ktb-weights: {key}={val!r} is not a whole number") from None
        if weights[key] < 0:
            raise ValueError(f"--ktb-weights: {key}={val} must be >= 0")
    if not any(weights.values()):
        raise ValueError("--ktb-weights: every weight is 0")
    return weights


def _checks() -> None:
    """The ``--ktb-*`` checks, shared by the command line and the web UI (loadkit.options)."""
    rule("--ktb-socket-url", url("http", "https", "ws", "wss", example="http://127.0.0.1:5002", empty_ok=True))
    rule("--ktb-room-size", number(1, 100000, integer=True))
    rule("--ktb-timeout", number(0, 3600, above=True))
    rule("--ktb-rest-timeout", number(0, 3600))
    rule("--ktb-wait-min", number(0, 86400))
    rule("--ktb-wait-max", number(0, 86400))
    rule("--ktb-weights", parsed_by(parse_weights))
    rule("--ktb-banned-every", number(0, integer=True))
    rule("--ktb-max-retry-after", number(0, 86400))
    rule("--ktb-max-message-size", number(1024, 1 << 30, integer=True))
    rule("--ktb-server", choice("auto", "java", "node"))
    for flag in ("--ktb-delivery", "--ktb-heartbeat", "--ktb-leave-ack", "--ktb-auth-first"):
        rule(flag, choice("on", "off"))


_checks()
