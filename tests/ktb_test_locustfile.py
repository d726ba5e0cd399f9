"""Locustfile used by tests/test_ktb_users_locust.py (not a scenario to run by hand).

- ``KtbChat``: the stock ``KtbChatUser``.
- ``DupUser`` (``fixed_count = 2``): two users sharing ONE account, to force the second-login path.
- ``Outsider`` (``fixed_count = 1``): only fetches, and its first fetch is for a room that does not
  exist, to force the server's load error.
- If ``LK_RAW_DUMP`` is set, every successful ``ktb`` response time (exact float ms, not Locust's
  rounded percentiles) is written there as JSON ``{name: [ms, ...]}`` when the test stops; with
  ``--loadkit-phase-rows on`` the latency metrics (``read_receipt``, ...) too.
- If ``LK_EVENT_LOG`` is set, every request event is appended there as ``[type, name, time, ok]``.
"""

from __future__ import annotations

import json
import os

from locust import events

from loadkit.users.ktb import KtbChatUser

_RAW: dict[str, list[float]] = {}


class KtbChat(KtbChatUser):
    pass


class DupUser(KtbChatUser):
    fixed_count = 2

    def account_email(self) -> str:
        return f"lk-dup-{self.run_id}-{os.getpid()}@loadkit.test"


class Outsider(KtbChatUser):
    fixed_count = 1

    def __init__(self, environment):
        super().__init__(environment)
        self.tasks = [KtbChatUser.fetch_previous]

    def on_start(self) -> None:
        super().on_start()
        self.room_id = "0" * 24  # no such room: the server refuses the fetch with its load error


@events.request.add_listener
def _collect(request_type, name, response_time, exception, **_kw):
    if request_type in ("ktb", "ktb-phase") and exception is None:
        _RAW.setdefault(name, []).append(response_time)


_LOG = os.environ.get("LK_EVENT_LOG")


@events.request.add_listener
def _log(request_type, name, exception, **_kw):
    if _LOG:  # name and wall-clock time of every request event, one JSON line each
        import time

        with open(_LOG, "a") as f:
            f.write(json.dumps([request_type, name, time.time(), exception is None]) + "\n")


@events.quitting.add_listener
def _dump(environment, **_kw):
    path = os.environ.get("LK_RAW_DUMP")
    if path:
        with open(path, "w") as f:
            json.dump(_RAW, f)
