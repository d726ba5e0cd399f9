"""KTB chat users and chldo streaming users in one Locust run (the scenario of ``loadkit demo``).

Why not Locust's ``--host``: the two protocols live on two servers, and ``--host`` would point both
user kinds at one. The scenario takes both URLs as options instead (``--mixed-ktb-url``,
``--mixed-chldo-url``), given to the master and forwarded by Locust to every worker, and splits the
users by ``--mixed-ktb-weight`` / ``--mixed-chldo-weight``. Every ``--ktb-*`` and ``--chldo-*`` option
of the two user kinds still applies.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from locust import events
from locust.runners import WorkerRunner

from loadkit.users.chldo import ChldoUser
from loadkit.options import number, rule, url
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


def _apply(environment: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    KtbChat.host = opts.mixed_ktb_url or KtbChat.host
    ChldoStream.host = opts.mixed_chldo_url or ChldoStream.host
    KtbChat.weight = max(0, opts.mixed_ktb_weight)
    ChldoStream.weight = max(0, opts.mixed_chldo_weight)


@events.init.add_listener
def _check(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    if opts is None or isinstance(environment.runner, WorkerRunner):
        return  # workers get the URLs from the master with the spawn message
    missing = [flag for flag, value in (("--mixed-ktb-url", opts.mixed_ktb_url),
                                        ("--mixed-chldo-url", opts.mixed_chldo_url)) if not value]
    if missing:
        log.error("the mixed scenario needs %s (the servers of the two user kinds)", " and ".join(missing))
        sys.exit(2)
    if opts.mixed_ktb_weight + opts.mixed_chldo_weight <= 0:
        log.error("the mixed scenario: --mixed-ktb-weight + --mixed-chldo-weight must be > 0")
        sys.exit(2)
    _apply(environment)


@events.test_start.add_listener
def _on_test_start(environment: Any, **_kw: Any) -> None:
    if environment.host:
        log.warning("mixed scenario: ignoring --host %s (use --mixed-ktb-url / --mixed-chldo-url)", environment.host)
        environment.host = None
    _apply(environment)
