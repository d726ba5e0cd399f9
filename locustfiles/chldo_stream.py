"""chldo sendmsg streaming chat: connect, then send → stream → think, per user.

    loadkit serve chldo --port 8765 &
    locust -f locustfiles/chldo_stream.py --host ws://127.0.0.1:8765 --headless -u 50 -r 10 -t 1m \
        --chldo-think-time 1-3 --chldo-return-voice 1

Options: see ``--chldo-*`` in ``locust --help``; metric names in docs/chldo.md.
"""

from loadkit.users.chldo import ChldoUser


class ChldoStreamUser(ChldoUser):
    """A visitor with the ``--chldo-*`` settings."""
