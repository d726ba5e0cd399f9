"""Mixed scenario of `loadkit demo` and docker-compose: KTB chat users and chldo streaming users.

The two protocols need two base URLs, so this scenario takes them as options instead of Locust's
single ``--host`` (leave ``--host`` empty; it would point both user kinds at one server):

    locust -f locustfiles/mixed.py --headless -u 20 -r 10 -t 60s \
        --mixed-ktb-url http://127.0.0.1:5001 --ktb-socket-url http://127.0.0.1:5002 \
        --mixed-chldo-url ws://127.0.0.1:8765

Users split half/half (``--mixed-ktb-weight`` / ``--mixed-chldo-weight``; a kind with weight 0 needs
no URL). Every ``--ktb-*`` and
``--chldo-*`` option of the two user kinds applies. Options given to the master reach the workers.
"""

import logging
import sys

from locust import events
from locust.runners import WorkerRunner

import loadkit.metrics.hdr  # noqa: F401 - exact, mergeable percentiles (<csv prefix>_hdr.csv)
from loadkit.users.chldo import ChldoUser
from loadkit.users.ktb import KtbChatUser

log = logging.getLogger("loadkit.mixed")


@events.init_command_line_parser.add_listener
def _options(parser):
    g = parser.add_argument_group("mixed scenario (loadkit)")
    g.add_argument("--mixed-ktb-url", default="", help="KTB REST base URL, e.g. http://127.0.0.1:5001")
    g.add_argument("--mixed-chldo-url", default="", help="chldo WebSocket URL, e.g. ws://127.0.0.1:8765")
    g.add_argument("--mixed-ktb-weight", type=int, default=1, help="relative share of KTB chat users (default 1)")
    g.add_argument("--mixed-chldo-weight", type=int, default=1, help="relative share of chldo users (default 1)")


class KtbChat(KtbChatUser):
    weight = 1


class ChldoStream(ChldoUser):
    weight = 1


def _apply(environment):
    opts = environment.parsed_options
    if opts is None:
        return
    KtbChat.host = opts.mixed_ktb_url or KtbChat.host
    ChldoStream.host = opts.mixed_chldo_url or ChldoStream.host
    KtbChat.weight = max(0, opts.mixed_ktb_weight)
    ChldoStream.weight = max(0, opts.mixed_chldo_weight)


@events.init.add_listener
def _check(environment, **_kw):
    opts = environment.parsed_options
    if opts is None or isinstance(environment.runner, WorkerRunner):
        return  # workers get the URLs from the master with the spawn message
    if opts.mixed_ktb_weight < 0 or opts.mixed_chldo_weight < 0 or opts.mixed_ktb_weight + opts.mixed_chldo_weight == 0:
        log.error("locustfiles/mixed.py: --mixed-ktb-weight and --mixed-chldo-weight must be >= 0, not both 0")
        sys.exit(2)
    wanted = (("--mixed-ktb-url", opts.mixed_ktb_url, opts.mixed_ktb_weight),
              ("--mixed-chldo-url", opts.mixed_chldo_url, opts.mixed_chldo_weight))
    missing = [flag for flag, url, weight in wanted if weight > 0 and not url]
    if missing:
        log.error("locustfiles/mixed.py needs %s (the server of each user kind with a weight > 0)", " and ".join(missing))
        sys.exit(2)
    _apply(environment)


@events.test_start.add_listener
def _on_test_start(environment, **_kw):
    if environment.host:
        log.warning("mixed scenario: ignoring --host %s (use --mixed-ktb-url / --mixed-chldo-url)", environment.host)
        environment.host = None
    _apply(environment)
