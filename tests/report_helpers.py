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
    return subprocess.run(
        [sys.executable, "-m", "loadkit", "report", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


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
