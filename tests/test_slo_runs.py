"""``--slo`` in real Locust runs against ``loadkit serve chldo --first-token-ms 300`` (issue #16).

Distributed (a master and two workers on 127.0.0.1): the SLO is judged on the master's merged
figures, so the ``_slo.csv`` value is the merged ``_metrics.csv`` p95 and both workers reported.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from loadkit.metrics.slo_gate import EXIT_SLO_FAILED
from loadkit.procs import free_port, loadkit_argv

ROOT = Path(__file__).resolve().parent.parent
CHLDO = str(ROOT / "locustfiles" / "chldo_stream.py")
LOCUST = [sys.executable, "-m", "locust"]


@pytest.fixture
def chldo_url(spawn):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--port", str(port), "--first-token-ms", "300", "--answer-tokens", "5"),
          port=port, name="chldo")
    return f"ws://127.0.0.1:{port}"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_distributed(spawn, tmp_path: Path, url: str, slo: str, name: str, goodput: str):
    port = free_port()
    prefix = tmp_path / name
    master = spawn([*LOCUST, "-f", CHLDO, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                    str(port), "--headless", "--expect-workers", "2", "--expect-workers-max-wait", "30",
                    "-u", "4", "-r", "4", "-t", "7s", "--host", url, "--csv", str(prefix), "--only-summary",
                    "--chldo-think-time", "0.2", "--slo", slo, "--goodput", goodput], name=f"{name}-master")
    workers = [spawn([*LOCUST, "-f", CHLDO, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                     name=f"{name}-worker{i}") for i in range(2)]
    master.wait(60)
    for w in workers:
        w.wait(30)
    return master, prefix


def check_goodput(prefix: Path, good_share: float) -> None:
    """The master's goodput counts are the workers' sum: every sendmsg Locust counted was judged."""
    (row,) = rows(Path(f"{prefix}_goodput.csv"))
    sendmsg = next(r for r in rows(Path(f"{prefix}_stats.csv")) if r["Name"] == "sendmsg")
    assert (row["Type"], row["Name"]) == ("chldo", "sendmsg")
    assert int(row["Requests"]) == int(sendmsg["Request Count"]) > 20
    assert int(row["Good"]) == round(good_share * int(row["Requests"]))


def check_merged(prefix: Path, expected: str) -> dict[str, str]:
    slo_row = rows(Path(f"{prefix}_slo.csv"))[0]
    assert (slo_row["Name"], slo_row["Stat"], slo_row["Result"]) == ("ttft", "p95", expected)
    ttft = next(r for r in rows(Path(f"{prefix}_metrics.csv")) if r["Name"] == "ttft")
    assert float(slo_row["Measured"]) == pytest.approx(float(ttft["95%"]), abs=0.051)  # merged figure, 0.1 ms shown
    assert 300.0 <= float(slo_row["Measured"]) < 400.0
    workers = rows(Path(f"{prefix}_workers.csv"))
    assert len(workers) == 2 and all(int(w["requests"]) > 0 for w in workers), workers
    return slo_row


@pytest.mark.timeout(150)
def test_distributed_slo_passes_and_fails_on_merged_figures(spawn, tmp_path, chldo_url):
    master, prefix = run_distributed(spawn, tmp_path, chldo_url, "ttft:p95<500ms;sendmsg:goodput>=99%", "pass",
                                     "sendmsg: ttft<500ms, sendmsg<5s")
    out = master.output()
    assert master.returncode == 0, out[-3000:]
    row = check_merged(prefix, "PASS")
    assert f"PASS ttft p95 {row['Measured']} ms < 500 ms" in out
    assert "PASS sendmsg goodput 100.0% >= 99%" in out
    assert "merged over the workers" in out
    check_goodput(prefix, 1.0)

    master, prefix = run_distributed(spawn, tmp_path, chldo_url, "ttft:p95<200ms", "fail", "sendmsg: ttft<200ms")
    out = master.output()
    assert master.returncode == EXIT_SLO_FAILED == 4, out[-3000:]
    row = check_merged(prefix, "FAIL")
    assert f"FAIL ttft p95 {row['Measured']} ms < 200 ms" in out
    assert "SLO verdict: 1 of 1 failed (exit code 4)" in out
    check_goodput(prefix, 0.0)
    assert "chldo sendmsg: 0.00 % good" in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra, words", [
    (["--slo", "ttft:p95<>500ms"], "--slo: 'ttft:p95<>500ms': expected"),
    (["--slo", "ttft:p95<500ms;sendmsg:fail_rate<5ms"], "fail_rate takes % or a fraction"),
    (["--slo", "ttft:p95<500ms", "--slo-abort-after", "soon"], "--slo-abort-after: 'soon'"),
    (["--slo-abort-after", "10s"], "needs at least one --slo"),
    (["--goodput", "sendmsg: ttft>5ms"], "--goodput: 'sendmsg: ttft>5ms'"),
])
def test_bad_slo_options_are_one_line_and_exit_2_before_any_user(spawn, tmp_path, extra, words):
    prefix = tmp_path / "bad"
    proc = spawn([*LOCUST, "-f", CHLDO, "--headless", "-u", "1", "-r", "1", "-t", "5s",
                  "--host", "ws://127.0.0.1:9", "--csv", str(prefix), *extra], name="bad")
    proc.wait(40)
    out = proc.output()
    assert proc.returncode == 2, out[-2000:]
    (line,) = [line for line in out.splitlines() if line.startswith("loadkit: ")]
    assert words in line
    assert "Traceback" not in out and "Ramping to" not in out


@pytest.mark.timeout(90)
def test_slo_abort_after_stops_the_run_early(spawn, tmp_path, chldo_url):
    prefix = tmp_path / "abort"
    proc = spawn([*LOCUST, "-f", CHLDO, "--headless", "-u", "3", "-r", "3", "-t", "60s", "--host", chldo_url,
                  "--csv", str(prefix), "--only-summary", "--chldo-think-time", "0.2",
                  "--slo", "ttft:p95<200ms", "--slo", "ttft:p95<500ms", "--slo-abort-after", "3s"], name="abort")
    proc.wait(60)
    out = proc.output()
    assert proc.returncode == EXIT_SLO_FAILED, out[-3000:]
    assert "run stopped early (--slo-abort-after): SLO 'ttft:p95<200ms' had failed for 3s without a break" in out
    results = {r["SLO"]: r["Result"] for r in rows(Path(f"{prefix}_slo.csv"))}
    assert results == {"ttft:p95<200ms": "FAIL", "ttft:p95<500ms": "PASS"}
    stats = {r["Name"]: r for r in rows(Path(f"{prefix}_stats.csv"))}
    turns = int(stats["sendmsg"]["Request Count"])
    assert 0 < turns < 3 * 20  # 60 s would be ~3 users x 60 / 0.6 s = 300 turns; stopped after ~5-9 s


@pytest.mark.timeout(90)
def test_slo_typed_into_the_web_ui_is_judged_and_a_bad_one_stops_that_run(spawn, tmp_path, chldo_url):
    import json
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    port = free_port()
    prefix = tmp_path / "web"
    proc = spawn([*LOCUST, "-f", CHLDO, "--web-host", "127.0.0.1", "--web-port", str(port), "--host", chldo_url,
                  "--csv", str(prefix), "--chldo-think-time", "0.2"], port=port, name="webui")
    base = f"http://127.0.0.1:{port}"

    def post(path: str, form: dict | None = None) -> dict:
        data = urllib.parse.urlencode(form or {}).encode()
        with urllib.request.urlopen(urllib.request.Request(base + path, data=data), timeout=10) as r:
            return json.loads(r.read().decode() or "{}")

    def state() -> str:
        with urllib.request.urlopen(base + "/stats/requests", timeout=10) as r:
            return json.loads(r.read().decode())["state"]

    with urllib.request.urlopen(base + "/", timeout=10) as r:
        page = r.read().decode()
    assert '"slo"' in page and '"slo_abort_after"' in page  # fields of the web UI form
    assert post("/swarm", {"user_count": 2, "spawn_rate": 2, "host": chldo_url,
                           "slo": "ttft:p95<500ms; ttft:p95<200ms"})["success"]
    time.sleep(4)
    with urllib.request.urlopen(base + "/stats/requests", timeout=10) as r:  # live, in the loadkit events tab
        events = {e["key"]: e["data"] for e in json.loads(r.read().decode())["extended_stats"]}["loadkitevents"]
    live = {e["operation"]: e["what"] for e in events if e["what"].startswith("SLO ")}
    assert live == {"ttft:p95<500ms": "SLO PASS", "ttft:p95<200ms": "SLO FAIL"}, events
    post("/stop")
    deadline = time.monotonic() + 20
    while state() not in ("stopped", "ready") or not Path(f"{prefix}_slo.csv").exists():
        assert time.monotonic() < deadline, proc.output()[-2000:]
        time.sleep(0.3)
    results = {r["SLO"]: (r["Result"], r["Measured"]) for r in rows(Path(f"{prefix}_slo.csv"))}
    assert results["ttft:p95<500ms"][0] == "PASS" and results["ttft:p95<200ms"][0] == "FAIL", results
    assert 300 <= float(results["ttft:p95<500ms"][1]) < 400

    try:  # a bad value typed into the form: refused before anything starts, the UI stays up
        post("/swarm", {"user_count": 2, "spawn_rate": 2, "host": chldo_url, "slo": "ttft:p95<<1"})
        raise AssertionError("a bad --slo was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        answer = json.loads(exc.read().decode())
    assert answer["success"] is False and "--slo: 'ttft:p95<<1': expected" in answer["message"], answer
    assert state() in ("stopped", "ready")
    assert proc.proc.poll() is None
