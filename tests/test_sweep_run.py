"""``--sweep`` against a chldo server of known capacity (issue #16 acceptance).

``loadkit serve chldo --max-concurrent 4``: at most 4 turns at a time, each 300 ms to the first
token + 4 × 20 ms to the end, so the server completes 4 / 0.38 s ≈ 10.5 turns/s; beyond that
turns queue and ttft grows without bound. ``--slo ttft:p95<500ms`` holds below that rate.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from loadkit.procs import free_port, loadkit_argv

ROOT = Path(__file__).resolve().parent.parent
CHLDO = str(ROOT / "locustfiles" / "chldo_stream.py")
FIRST_MS, TOKEN_MS, TOKENS, CAP = 300.0, 20.0, 5, 4


@pytest.mark.timeout(150)
def test_sweep_finds_the_capacity_the_server_was_given(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", f"{FIRST_MS:g}",
                       "--token-ms", f"{TOKEN_MS:g}", "--answer-tokens", str(TOKENS), "--max-concurrent", str(CAP)),
          port=port, name="chldo")
    prefix = tmp_path / "sweep"
    proc = spawn([sys.executable, "-m", "locust", "-f", CHLDO, "--headless", "-u", "20", "-r", "20",
                  "--host", f"ws://127.0.0.1:{port}", "--csv", str(prefix), "--only-summary",
                  "--sweep", "--sweep-stage-time", "4s", "--sweep-rates", "6", "--slo", "ttft:p95<500ms"], name="sweep")
    proc.wait(140)
    out = proc.output()
    assert proc.returncode == 0, out[-3000:]
    with open(f"{prefix}_sweep.csv", newline="") as f:
        stages = list(csv.DictReader(f))
    assert [s["Kind"] for s in stages] == ["synchronous", "throughput"] + ["constant"] * 6
    expected = CAP / ((FIRST_MS + (TOKENS - 1) * TOKEN_MS) / 1000.0)  # 10.5 turns/s
    sync, thr = float(stages[0]["Achieved/s"]), float(stages[1]["Achieved/s"])
    assert abs(sync - 1000.0 / (FIRST_MS + (TOKENS - 1) * TOKEN_MS)) < 0.6  # one turn at a time
    assert abs(thr - expected) / expected < 0.15
    assert stages[1]["Passed"] == "no"  # 20 users back to back on 4 slots: ttft queues
    for s in stages[2:]:  # each constant stage offered what it said
        assert abs(float(s["Achieved/s"]) - float(s["Offered/s"])) <= 0.1 * float(s["Offered/s"]) + 0.3, s
    passing = [float(s["Offered/s"]) for s in stages[2:] if s["Passed"] == "yes"]
    capacity = max(passing)
    line = next(x for x in out.splitlines() if x.startswith("loadkit sweep: capacity"))
    assert line.startswith(f"loadkit sweep: capacity {capacity:.2f}/s")
    print(line, f"(the server's cap: {expected:.2f}/s)")
    assert abs(capacity - expected) / expected < 0.15, (capacity, expected)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra, words", [
    (["--sweep"], "--sweep needs at least one --slo"),
    (["--sweep", "--slo", "ttft:p95<1s", "--arrival-rate", "5/s"], "drop --arrival-rate"),
    (["--sweep", "--slo", "ttft:p95<1s", "--sweep-rates", "0"], "--sweep-rates: '0'"),
])
def test_bad_sweep_options_are_one_line_and_exit_2(spawn, tmp_path, extra, words):
    proc = spawn([sys.executable, "-m", "locust", "-f", CHLDO, "--headless", "-u", "1", "-r", "1",
                  "--host", "ws://127.0.0.1:9", *extra], name="bad")
    proc.wait(40)
    out = proc.output()
    assert proc.returncode == 2, out[-2000:]
    (line,) = [x for x in out.splitlines() if x.startswith("loadkit: ")]
    assert words in line and "Traceback" not in out
