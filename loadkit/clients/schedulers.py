"""The process-wide schedulers of the WebSocket transport (``transport.py``): the deadline wheel,
the heartbeat watch, the drain pool, and the one-shot result greenlets wait on. One of each per
process, whatever the number of connections; each greenlet alive only while it has work.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent
from gevent.hub import Waiter, get_hub

if TYPE_CHECKING:
    from loadkit.clients.transport import WsTransport

log = logging.getLogger("loadkit.clients.transport")


class _Expired(Exception):
    """Internal: the deadline wheel expired a pending result."""


class _Sweeper:
    """A set of members and one greenlet for the whole process that wakes every ``tick`` seconds
    while the set is not empty and calls ``sweep(now)``; it is spawned again by the next ``add``."""

    tick = 1.0

    def __init__(self) -> None:
        self.members: set = set()
        self.greenlet: gevent.Greenlet | None = None

    def _watch(self, member: Any) -> None:
        self.members.add(member)
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            while self.members:
                gevent.sleep(self.tick)
                self.sweep(time.monotonic())
        finally:
            self.greenlet = None

    def sweep(self, now: float) -> None:
        raise NotImplementedError


class _DeadlineWheel(_Sweeper):
    """Process-wide coarse timeouts for pending answers (resolution ``tick`` seconds).

    Why not ``gevent.Timeout`` per request: starting and stopping a libev timer for every round
    trip measurably costs (~4-5 us of a ~50 us budget on the dev VM). Here a pending result joins a
    set and leaves it when resolved (nothing resolved is retained, so nothing ages into the
    garbage collector's old generation); one sweeper greenlet for the whole process (not per
    connection), alive only while something is pending, expires what is overdue.
    """

    tick = 0.05

    def add(self, res: "_Result", timeout: float) -> None:
        res.deadline = time.monotonic() + timeout
        self._watch(res)

    def sweep(self, now: float) -> None:
        for res in [r for r in self.members if r.deadline <= now]:
            self.members.discard(res)
            res.set_exception(_Expired())


_WHEEL = _DeadlineWheel()


class _HeartbeatWatch(_Sweeper):
    """Process-wide detection of connections whose server went silent (no Engine.IO ping for
    ``pingInterval + 2 x pingTimeout``, from the limits the server announced in OPEN).

    Why: a half-open TCP connection (peer host gone, a NAT or load balancer dropping the flow)
    never reads as closed; every request on it would just time out, forever. Engine.IO clients
    treat a missing ping as a disconnect; so does this one, which is what makes a Locust user
    log in and connect again. One sweep a second for the whole process; a connection costs no
    timer of its own.
    """

    tick = 1.0
    grace = 1.0  # seconds on top of the server's limits (pings travel, the sweep is coarse)

    def add(self, client: "WsTransport") -> None:
        self._watch(client)

    def sweep(self, now: float) -> None:
        for c in [c for c in self.members if now - c._last_ping > c._heartbeat_limit]:
            # re-checked: an earlier client's on_disconnect may have yielded, and this one
            # reconnected (or closed) meanwhile
            if c in self.members and time.monotonic() - c._last_ping > c._heartbeat_limit:
                self.members.discard(c)
                try:
                    c._heartbeat_lost(time.monotonic() - c._last_ping)
                except Exception:  # noqa: BLE001 - one client's failure must not stop the watch
                    log.exception("heartbeat handling of %s failed", getattr(c, "url", c))


_HEARTBEATS = _HeartbeatWatch()


class _Result:
    """A one-shot result a greenlet waits for (``WsTransport._await``); set by whichever
    greenlet reads the socket (a lighter ``AsyncResult``: at most one hub callback to wake the
    waiter, none when the waiter resolves its own result, no links, no per-wait timer)."""

    __slots__ = ("done", "value", "error", "_waiter", "deadline", "__weakref__")

    def __init__(self) -> None:
        self.done = False
        self.deadline = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self._waiter: Waiter | None = None

    def set(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self.value = value
            if self._waiter is not None:
                get_hub().loop.run_callback(self._waiter.switch, None)

    def set_exception(self, exc: BaseException) -> None:
        if not self.done:
            self.done = True
            self.error = exc
            if self._waiter is not None:
                get_hub().loop.run_callback(self._waiter.switch, None)


def _wake(res: Any) -> None:
    """Wake the greenlet waiting for ``res`` (resolved by the pure core), if it is parked."""
    w = res._waiter
    if w is not None:
        get_hub().loop.run_callback(w.switch, None)


class _DrainPool:
    """Process-wide drain greenlets: they read connections that became readable while nobody
    waited on them (unsolicited events, pings, a close).

    Why a pool and not a greenlet per drain (or per connection): in rooms of 10 most ``message``
    deliveries arrive while their user is between tasks; spawning a greenlet per drain costs a
    few us each, a greenlet per connection costs memory on every idle connection. One worker
    drains every connection that became readable in the same event-loop iteration. A worker
    blocked in a handler is never waited for: the next readable connection wakes another worker
    (the hub only runs while every worker is parked or blocked).
    """

    max_idle = 8

    def __init__(self) -> None:
        self.ready: deque = deque()
        self.idle: list[Waiter] = []
        self.pending = False  # a worker was woken or spawned and has not started yet

    def submit(self, client: "WsTransport", io: Any) -> None:
        self.ready.append((client, io))
        if not self.pending:
            self.pending = True
            if self.idle:
                get_hub().loop.run_callback(self.idle.pop().switch, None)
            else:
                gevent.spawn(self._work)

    def _work(self) -> None:
        waiter = Waiter()
        ready = self.ready
        while True:
            self.pending = False
            while ready:
                client, io = ready.popleft()
                try:
                    client._drain(io)
                except Exception:  # noqa: BLE001 - a bug here must not stop other connections' drains
                    log.exception("drain of %s failed", getattr(client, "url", client))
            if len(self.idle) >= self.max_idle:
                return
            self.idle.append(waiter)
            waiter.get()


_DRAINS = _DrainPool()
