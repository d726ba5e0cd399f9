"""The gevent client's failure classification against a server that misbehaves on request.

The client runs in a subprocess (it needs gevent's monkey-patching, which must not leak into pytest).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadkit.procs import free_port, loadkit_argv

FIX = Path(__file__).parent / "fixtures" / "chldo"


def probe(url: str, *scripts: str) -> list[dict]:
    r = subprocess.run([sys.executable, str(FIX / "client_probe.py"), url, *scripts], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.timeout(90)
def test_client_classifies_every_failure_kind(spawn):
    port = free_port()
    spawn([sys.executable, str(FIX / "misbehaving_server.py"), str(port)], port=port, name="bad-server")
    rows = probe(f"ws://127.0.0.1:{port}", "ok", "after_end", "unknown_uid", "non_json", "binary", "ping",
                 "end_without_start", "silent:0.5", "ok", "close_mid", "ok", "drop_mid", "ok")
    assert [r["script"] for r in rows] == ["ok", "after_end", "unknown_uid", "non_json", "binary", "ping",
                                           "end_without_start", "silent", "ok", "close_mid", "ok", "drop_mid", "ok"]
    one = rows.__getitem__
    assert one(0)["ok"] and one(0)["text"] == "ab" and one(0)["chunks"] == 2
    assert one(1)["ok"] and one(1)["stray"] == ["ChldoProtocolError: frame after END: stream"]
    assert one(2)["error"] == "ChldoProtocolError" and "unknown stream_uid OTHER" in one(2)["text"]
    assert one(3)["error"] == "ChldoProtocolError" and one(3)["text"] == "non-JSON frame: <html>oops"
    assert one(4)["error"] == "ChldoProtocolError" and "binary frame" in one(4)["text"]
    assert one(5)["ok"]  # the client answered the server's ping (else the server drops the stream)
    assert one(6)["error"] == "ChldoProtocolError" and one(6)["text"] == "END without START"
    assert one(7)["error"] == "ChldoTimeout" and "no END within 0.5 s" in one(7)["text"] and not one(7)["connected"]
    assert one(8)["ok"]  # reconnected after the timeout
    assert one(9)["error"] == "ChldoConnectionLost" and "code 1011 boom from the server" in one(9)["text"]
    assert one(10)["ok"]
    assert one(11)["error"] == "ChldoConnectionLost" and "without a close frame" in one(11)["text"]
    assert one(12)["ok"] and one(12)["connected"]


@pytest.mark.timeout(60)
def test_client_against_reference_server_and_connect_failure(spawn):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "5", "--token-ms", "1",
                       "--answer-tokens", "30"), port=port, name="chldo")
    rows = probe(f"ws://127.0.0.1:{port}", "hello", "안녕", "hello")
    assert all(r["ok"] and r["chunks"] == 30 for r in rows)
    assert rows[0]["text"] == rows[2]["text"] != rows[1]["text"]
    dead = free_port()
    r = subprocess.run([sys.executable, str(FIX / "client_probe.py"), f"ws://127.0.0.1:{dead}", "x"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ChldoConnectError" in r.stderr and f"connect ws://127.0.0.1:{dead}" in r.stderr
