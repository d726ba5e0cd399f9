"""KTB chat users and chldo streaming users in one Locust run (the scenario of ``loadkit demo``).

Why not Locust's ``--host``: the two protocols live on two servers, and ``--host`` would point both
user kinds at one. The scenario takes both URLs as options instead (``--mixed-ktb-url``,
``--mixed-chldo-url``), given to the master and forwarded by Locust to every worker, and splits the
users by ``--mixed-ktb-weight`` / ``--mixed-chldo-weight``. Every ``--ktb-*`` and ``--chldo-*`` option
of the two user kinds still applies.
"""

from __future__ import annotations

import logging
from typing import Any

from locust import events
from locust.runners import WorkerRunner

from loadkit.users.chldo import ChldoUser
from loadkit.options import number, requirement, rule, url
from loadkit.users.ktb import KtbChatUser

log = logging.getLogger("loadkit.mixed")


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # parser.add_argument itself, not an argument group's: only Locust's own add_argument shows an
    # option in the web UI
    parser.add_argument("--mixed-ktb-url", default="", help="KTB REST base URL, e.g. http://127.0.0.1:5001")
    parser.add_argument("--mixed-chldo-url", default="", help="chldo WebSocket URL, e.g. ws://127.0.0.1:8765")
    parser.add_argument("--mixed-ktb-weight", type=int, default=1, help="relative share of KTB chat users (default 1)")
    parser.add_argument("--mixed-chldo-weight", type=int, default=1, help="relative share of chldo users (default 1)")


rule("--mixed-ktb-url", url("http", "https", example="http://127.0.0.1:5001", empty_ok=True))
rule("--mixed-chldo-url", url("ws", "wss", example="ws://127.0.0.1:8765", empty_ok=True))
rule("--mixed-ktb-weight", number(0, integer=True))
rule("--mixed-chldo-weight", number(0, integer=True))


class KtbChat(KtbChatUser):
    abstract = False
    weight = 1
    host_schemes = None  # its server is --mixed-ktb-url, not --host


class ChldoStream(ChldoUser):
    abstract = False
    weight = 1
    host_schemes = None  # its server is --mixed-chldo-url, not --host


def _ours(user_classes: Any) -> bool:
    """A run of this scenario's users (a process may hold other environments: library mode, tests)."""
    return bool({KtbChat, ChldoStream} & set(user_classes or ()))


def _apply(environment: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not _ours(environment.user_classes):
        return
    KtbChat.host = opts.mixed_ktb_url or KtbChat.host
    ChldoStream.host = opts.mixed_chldo_url or ChldoStream.host
    KtbChat.weight = max(0, opts.mixed_ktb_weight)
    ChldoStream.weight = max(0, opts.mixed_chldo_weight)


@requirement
def _both_servers(values: dict[str, Any], user_classes: list[Any]) -> str | None:
    """The two user kinds' servers; checked with every option (loadkit.options), so a missing one is
    the same one line and exit 2 as any bad value, and the web form refuses it too. Only for a run of
    this scenario's users."""
    if not _ours(user_classes):
        return None
    missing = [flag for flag in ("--mixed-ktb-url", "--mixed-chldo-url")
               if not values.get(flag[2:].replace("-", "_"))]
    if missing:
        return f"the mixed scenario needs {' and '.join(missing)} (the servers of the two user kinds)"
    try:
        total = int(values.get("mixed_ktb_weight") or 0) + int(values.get("mixed_chldo_weight") or 0)
    except (TypeError, ValueError):
        return None  # the weight's own rule says what is wrong
    if total <= 0:
        return "--mixed-ktb-weight + --mixed-chldo-weight must be > 0"
    return None


@events.init.add_listener
def _init(environment: Any, **_kw: Any) -> None:
    if environment.parsed_options is not None and not isinstance(environment.runner, WorkerRunner):
        _apply(environment)  # workers get the URLs from the master with the spawn message


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kw: Any) -> None:
    if not _ours(environment.user_classes):
        return
    if environment.host:
        log.warning("mixed scenario: ignoring --host %s (use --mixed-ktb-url / --mixed-chldo-url)", environment.host)
        environment.host = None
    _apply(environment)
