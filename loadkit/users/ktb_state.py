"""Process-wide state of the KTB users: this process's identity (account and room names, the sender
part of every message nonce), the counters, the rooms and server variant decided once per process,
and the tables of emits waiting for a witness. Made again in a forked child.

Other modules read it as ``ktb_state.NAME`` at the time of use (never ``from ... import PID``): the
identity is replaced after a fork, and a copy taken at import would keep the parent's.
"""

from __future__ import annotations

import itertools
import os
import secrets
from typing import Any, Iterator

from gevent.event import AsyncResult, Event

from loadkit.metrics.counters import counters
from loadkit.protocols import ktb_nonce

REQUEST_TYPE = "ktb"


#: counts of things that are not round trips (unknown events, session losses by signal, re-joins,
#: skipped deliveries ...): merged over workers, logged at the end, written to <prefix>_counters.csv
COUNTERS = counters(REQUEST_TYPE)
ROOMS: dict[tuple, AsyncResult] = {}
HOST = ktb_nonce.host_token()
#: (REST URL, Socket.IO URL, --ktb-server) -> (variant, why): decided once per process
VARIANTS: dict[tuple, AsyncResult] = {}
#: emits whose completion only another member can see, waiting for their first witness:
#: (userId, messageIds) -> perf_counter at emit; (roomId, leaver's name) -> (perf_counter, Event)
PENDING_READS: dict[tuple, float] = {}
PENDING_LEAVES: dict[tuple, tuple[float, Event]] = {}
PENDING_MAX = 5000
#: users of this process still logging in / joining in on_start (--ktb-auth-first)
STARTING: set[int] = set()
#: users of this process currently joined, per room: is there a witness for a leave?
JOINED: dict[str, set[int]] = {}
#: this process's identity (set by ``new_process_identity``, below)
RUN_ID: str
PID: int
USER_SEQ: Iterator[int]


def new_process_identity() -> None:
    """This process's identity: account names, room names and the sender part of every message
    nonce, and the per-process tables above. Made again in a forked child (``locust --processes N``
    forks after this module was imported): children sharing their parent's pid and user numbers
    would take each other's messages in a shared room for their own echoes."""
    global RUN_ID, PID, USER_SEQ
    RUN_ID = secrets.token_hex(3)
    PID = os.getpid()
    USER_SEQ = itertools.count()
    for table in (ROOMS, VARIANTS, PENDING_READS, PENDING_LEAVES, JOINED, STARTING):
        table.clear()


new_process_identity()
os.register_at_fork(after_in_child=new_process_identity)


def remember_pending(table: dict, key: tuple, value: Any) -> None:
    """Register an emit for its witness; keeps the first emit of a key, and the table bounded (an
    emit nobody witnesses, e.g. in a room of one, is never popped)."""
    if len(table) >= PENDING_MAX:
        table.clear()
        COUNTERS.bump("witness_table_resets")
    table.setdefault(key, value)
