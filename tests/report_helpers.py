"""Helpers shared by the report tests: run ``loadkit report`` as a subprocess, read k6 fixtures raw."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
K6_FIXTURES = FIXTURES / "k6"
ROOT = Path(__file__).parent.parent


def run_report(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command in a subprocess: exit code, stdout and stderr exactly as a user sees them."""
    return subprocess.run(
        [sys.executable, "-m", "loadkit", "report", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def run_report_inproc(*args: str) -> subprocess.CompletedProcess:
    """Same entry point (``loadkit.cli.main``) in this process: no interpreter start-up per test."""
    import contextlib
    import io

    from loadkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["report", *args])
        except SystemExit as exc:  # argparse errors
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # noqa: BLE001 - a test must see it as a failure, with its text
            rc = -1
            err.write(f"Traceback (escaped exception): {type(exc).__name__}: {exc}\n")
    return subprocess.CompletedProcess(["loadkit", "report", *args], rc, out.getvalue(), err.getvalue())


def raw_k6_samples(path: Path) -> dict[str, np.ndarray]:
    """Latency samples per operation, read with the stdlib only (independent of the report code)."""
    opener = gzip.open if path.suffix == ".gz" else open
    kinds: dict[str, tuple] = {}
    out: dict[str, list] = {}
    with opener(path, "rt") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["type"] == "Metric":
                kinds[obj["metric"]] = (obj["data"]["type"], obj["data"]["contains"])
                continue
            m = obj["metric"]
            if kinds.get(m) == ("trend", "time") and not m.startswith(("http_req_", "iteration", "ws_session", "group")):
                out.setdefault(m, []).append(obj["data"]["value"])
    return {k: np.asarray(v) for k, v in out.items()}


def raw_k6_failures(path: Path) -> dict[str, int]:
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, int] = {}
    with opener(path, "rt") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj["type"] == "Point" and obj["metric"] == "loadkit_failures":
                op = obj["data"]["tags"]["op"]
                out[op] = out.get(op, 0) + int(obj["data"]["value"])
    return out


#: the loadkit metrics among the k6 scripts' Trends and the old Locust rows (issue #13's contract),
#: written out here so the tests do not take the report's own list on trust
METRIC_NAMES = {"time_to_start", "ttft", "som_to_eom", "first_voice", "delivery", "chunks", "chars", "chunks_per_s",
                "chunk_gap", "chunk_gap_max", "voice_ms"}


def requests_and_metrics(out: Path) -> "pd.DataFrame":
    """``summary.csv`` (requests) and ``metrics.csv`` (loadkit metrics) of a report as one table by
    operation/metric name: count, p50, p90, p95, p99, max, tool, run, failures (requests only), and
    ``table`` saying which file."""
    import pandas as pd

    cols = ["tool", "run", "operation", "count", "p50", "p90", "p95", "p99", "max"]
    summary = pd.read_csv(out / "summary.csv")[[*cols, "failures"]].assign(table="summary")
    path = out / "metrics.csv"
    metrics = (pd.read_csv(path).rename(columns={"name": "operation"})[cols].assign(table="metrics")
               if path.exists() else pd.DataFrame(columns=[*cols, "table"]))  # fmt: skip
    return pd.concat([summary, metrics], ignore_index=True)
