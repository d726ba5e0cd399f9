"""What ``loadkit demo`` reads back from the run's files: the progress row, the console summary,
the shared-CPU note and ``<prefix>_run.json`` for the report.

Kept apart from the process handling in :mod:`loadkit.demo` because these only read (and, for
``_run.json``, write) a run's files and start nothing, so they are tested on literal CSVs
(``tests/test_demo.py``, ``tests/test_report_metrics.py``).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from loadkit.metrics.console import metrics_table, saturation_lines


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error):
        return []


def last_history_row(path: Path) -> dict[str, str] | None:
    """The newest Aggregated row of Locust's ``_stats_history.csv`` (read from the end)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read().decode("utf-8", "replace").splitlines()
            f.seek(0)
            header = f.readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not header:
        return None
    names = next(csv.reader([header]))
    for line in reversed(tail):
        values = next(csv.reader([line]), [])
        if len(values) == len(names) and values != names:
            row = dict(zip(names, values))
            if row.get("Name") == "Aggregated":
                return row
    return None


def number(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "", "N/A") else default
    except ValueError:
        return default


def shared_cpu_note(targets: list[str], workers: int, cores: int) -> str | None:
    """Why the demo's tail latencies may be high: on a small machine the reference servers and
    the workers take turns on the same cores, and a sample then includes waiting for a CPU."""
    busy = len(targets) + workers
    if not targets or busy <= cores:
        return None
    servers = " and ".join(targets)
    return (f"the {servers} reference server{'s' if len(targets) > 1 else ''} and {workers} "
            f"worker{'s' if workers != 1 else ''} shared {cores} CPU core{'s' if cores != 1 else ''}, so the "
            "tail latencies (p99, max, chunk_gap_max) include time spent waiting for a CPU, not only "
            "the servers' own answer time; for server figures run the targets elsewhere "
            "(--ktb-url/--chldo-url) or use more cores")


def write_run_json(prefix: Path, locustfile: Path, warnings: list[str]) -> None:
    """``<prefix>_run.json`` for ``loadkit report``: the scenario that labels the run (every demo
    prefix is ``locust``) and the warnings the report must show (docs/reports.md)."""
    doc = {"scenario": locustfile.stem, "locustfile": str(locustfile), "warnings": warnings}
    try:
        Path(f"{prefix}_run.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    except OSError:
        pass  # the report then names the run after its folder and lacks the warning; the console has it


def summary_text(prefix: Path) -> tuple[str, int, int, list[dict[str, str]]]:
    """Console summary from Locust's and loadkit's CSVs → (text, requests, failures, lost workers)."""
    stats = read_csv(Path(f"{prefix}_stats.csv"))
    hdr = {(r.get("Type", ""), r.get("Name", "")): r for r in read_csv(Path(f"{prefix}_hdr.csv"))}
    workers = read_csv(Path(f"{prefix}_workers.csv"))
    lost = [w for w in workers if w.get("lost") == "true"]
    lines = ["requests (what the users sent; exact HDR percentiles)",
             f"{'type':<6} {'name':<24} {'requests':>9} {'failed':>7} {'p50':>10} {'p99':>10} {'max':>10}  unit"]
    total = failures = 0
    for row in stats:
        key = (row.get("Type", ""), row.get("Name", ""))
        exact = hdr.get(key)
        p50 = exact["50%"] if exact else row.get("50%", "")
        p99 = exact["99%"] if exact else row.get("99%", "")
        mx = exact["Max"] if exact else row.get("Max Response Time", "")
        count, failed = int(number(row.get("Request Count"))), int(number(row.get("Failure Count")))
        if key == ("", "Aggregated"):
            total, failures = count, failed
            lines.append("-" * 96)
        lines.append(f"{key[0][:6]:<6} {key[1][:24]:<24} {count:>9} {failed:>7} {number(p50):>10.3f} {number(p99):>10.3f} {number(mx):>10.3f}  ms")
    source = "exact (HDR, loadkit)" if hdr else "Locust's rounded buckets (no _hdr.csv)"
    lines.append(f"percentiles: {source}")
    metric_lines = metrics_table(read_csv(Path(f"{prefix}_metrics.csv")))
    if metric_lines:
        lines += ["", *metric_lines]
    saturation_csv = Path(f"{prefix}_saturation.csv")
    if saturation_csv.is_file():  # (absent: a run from before loadkit recorded saturation)
        lines += ["", *saturation_lines(read_csv(saturation_csv))]
    if workers:
        lines.append(
            f"workers: {len(workers)} reported"
            + (f"; LOST {len(lost)}: " + ", ".join(f"{w['client_id']} (last seen {w['last_seen']}, {w['requests']} requests kept)" for w in lost) if lost else "; none lost")
        )
    return "\n".join(lines), total, failures, lost
