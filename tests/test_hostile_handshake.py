"""Hostile servers during the handshake (issue #15): every wait has a deadline over the *whole*
handshake, and nonsense the server announces is a classified failure, never a traceback."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from loadkit.clients.chldo import ChldoClient
from loadkit.clients.socketio import AnswerTimeout, ConnectionFailed, SocketIOClient
from loadkit.procs import free_port
from loadkit.protocols.chldo_turn import ChldoConnectError

HOSTILE = str(Path(__file__).with_name("hostile_server.py"))


def hostile(spawn, mode: str) -> str:
    port = free_port()
    spawn([sys.executable, HOSTILE, str(port), mode], port=port, name="hostile")
    return f"127.0.0.1:{port}"


@pytest.mark.timeout(30)
def test_a_drip_fed_upgrade_is_bounded_by_the_connect_timeout_chldo(spawn):
    addr = hostile(spawn, "drip")
    client = ChldoClient(f"ws://{addr}/ws", connect_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(ChldoConnectError, match="handshake not complete within 1.5s"):
        client.connect()
    assert time.monotonic() - t0 < 4.0


@pytest.mark.timeout(30)
def test_a_drip_fed_upgrade_is_bounded_by_the_connect_timeout_socketio(spawn):
    addr = hostile(spawn, "drip")
    client = SocketIOClient(f"http://{addr}", connect_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(AnswerTimeout, match="upgrade not complete within 1.5s"):
        client.connect()
    assert time.monotonic() - t0 < 4.0
    assert not client.connected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ping_interval", ["abc", 0, -5, None])
def test_nonsense_ping_interval_in_open_is_a_classified_connect_failure(spawn, ping_interval):
    addr = hostile(spawn, "open:" + json.dumps({"sid": "x", "pingInterval": ping_interval, "pingTimeout": 20000}))
    client = SocketIOClient(f"http://{addr}", connect_timeout=3)
    with pytest.raises(ConnectionFailed, match="pingInterval"):
        client.connect()
    assert not client.connected


@pytest.mark.timeout(30)
def test_a_huge_ping_interval_is_clamped(spawn):
    addr = hostile(spawn, "open:" + json.dumps({"sid": "x", "pingInterval": 1e300, "pingTimeout": 1e300}))
    client = SocketIOClient(f"http://{addr}", connect_timeout=1.5)
    with pytest.raises(AnswerTimeout, match="no CONNECT ack"):  # OPEN accepted, no CONNECT ack follows
        client.connect()
    assert client.proto.ping_interval == client.proto.ping_timeout == 3600.0
