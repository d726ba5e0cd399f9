"""Benchmark ``loadkit report`` on big synthetic inputs (run by hand, prints its figures).

    python bench/bench_report.py [--points 1000000] [--hours 1] [--keep DIR]

1. k6: a synthetic ``--out json`` NDJSON in k6's exact line format with ``--points`` Point lines
   (10 custom Trends, http_req_* of REST calls, vus every second, loadkit_failures), goal ≤ 15 s.
2. Locust: a synthetic ``--csv-full-history`` run of ``--hours`` (1 row per second per operation
   + Aggregated), with _stats.csv and _failures.csv, goal ≤ 5 s.
Times are wall-clock of the whole ``loadkit report`` subprocess (interpreter start included) and
of the in-process parse step alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OPS = ["connect", "joinRoom", "chatMessage", "fetchPreviousMessages", "markMessagesAsRead", "messageReaction", "leaveRoom", "delivery", "sendmsg", "ttft"]
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()


def _iso(t: float) -> str:
    sec = int(t)
    ns = int(round((t - sec) * 1e9))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ns:09d}Z"


def make_k6(path: Path, n_points: int, duration_s: int = 600) -> None:
    rng = np.random.default_rng(1)
    lines = []
    meta = '{{"type":"Metric","data":{{"name":"{m}","type":"{t}","contains":"{c}","thresholds":[],"submetrics":null}},"metric":"{m}"}}\n'
    for op in OPS:
        lines.append(meta.format(m=op, t="trend", c="time"))
    for m, t, c in (("vus", "gauge", "default"), ("loadkit_failures", "counter", "default"), ("http_req_duration", "trend", "time"),
                    ("http_req_waiting", "trend", "time"), ("http_req_failed", "rate", "default"), ("http_reqs", "counter", "default")):
        lines.append(meta.format(m=m, t=t, c=c))
    n_vus = duration_s
    n_http = n_points // 10  # each HTTP request = 4 points
    n_custom = n_points - n_vus - 4 * (n_http // 4)
    ts = np.sort(rng.uniform(0, duration_s, n_custom)) + T0
    vals = rng.lognormal(1.5, 0.8, n_custom)
    ops = rng.integers(0, len(OPS), n_custom)
    point = '{{"metric":"{m}","type":"Point","data":{{"time":"{t}","value":{v},"tags":{{"group":"","scenario":"default"}}}}}}\n'
    http_pt = '{{"metric":"{m}","type":"Point","data":{{"time":"{t}","value":{v},"tags":{{"expected_response":"true","group":"","method":"POST","name":"/api/auth/login","proto":"HTTP/1.1","scenario":"default","status":"200","url":"http://127.0.0.1:5001/api/auth/login"}}}}}}\n'
    for i in range(n_custom):
        lines.append(point.format(m=OPS[ops[i]], t=_iso(ts[i]), v=repr(float(vals[i]))))
    for i in range(n_http // 4):
        t = _iso(T0 + random.uniform(0, duration_s))
        v = random.lognormvariate(1.0, 0.5)
        for m, val in (("http_reqs", 1), ("http_req_duration", v), ("http_req_waiting", v * 0.9), ("http_req_failed", 0)):
            lines.append(http_pt.format(m=m, t=t, v=val))
    for s in range(n_vus):
        lines.append('{"metric":"vus","type":"Point","data":{"time":"%s","value":%d,"tags":null}}\n' % (_iso(T0 + s), min(50, s + 1)))
    path.write_text("".join(lines))


def make_locust(prefix: Path, hours: float, n_ops: int = 10) -> None:
    n = int(hours * 3600)
    pct_cols = ["50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]
    head = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *pct_cols, "Total Request Count",
            "Total Failure Count", "Total Median Response Time", "Total Average Response Time", "Total Min Response Time",
            "Total Max Response Time", "Total Average Content Size"]  # fmt: skip
    names = [("ktb", op) for op in OPS[:n_ops]] + [("", "Aggregated")]
    out = [",".join(head)]
    totals = {k: 0 for k in names}
    rng = random.Random(2)
    base = int(T0)
    for s in range(n):
        agg_add = 0
        for typ, name in names:
            if name == "Aggregated":
                add = agg_add
            else:
                add = rng.randint(50, 150)
                agg_add += add
            totals[(typ, name)] += add
            p = sorted(rng.randint(1, 200) for _ in pct_cols)
            out.append(",".join(map(str, [base + s, 100, typ, name, f"{add:.6f}", "0.000000", *p, totals[(typ, name)], 0, p[0], 12.5, 1, p[-1], 100.0])))
    Path(str(prefix) + "_stats_history.csv").write_text("\n".join(out) + "\n")
    st_head = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time", "Min Response Time",
               "Max Response Time", "Average Content Size", "Requests/s", "Failures/s", *pct_cols]  # fmt: skip
    rows = [",".join(st_head)]
    for typ, name in names:
        rows.append(",".join(map(str, [typ, name, totals[(typ, name)], 0, 20, 25.0, 1, 900, 100.0, totals[(typ, name)] / n, 0.0, *[10 * i + 5 for i in range(len(pct_cols))]])))
    Path(str(prefix) + "_stats.csv").write_text("\n".join(rows) + "\n")
    Path(str(prefix) + "_failures.csv").write_text("Method,Name,Error,Occurrences,First Seen,Last Seen\n")


def timed_report(args: list[str], out: Path) -> float:
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "loadkit", "report", *args, "--out", str(out), "--quiet"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"report failed: {res.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--keep", default=None, help="keep inputs and reports in this directory")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench_report_"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from loadkit.reports.k6_points import read_ndjson
    from loadkit.reports.locust_csv import read_locust_run

    k6_file = work / "k6.json"
    t = time.perf_counter()
    make_k6(k6_file, a.points)
    n_lines = sum(1 for _ in open(k6_file))
    print(f"k6 input: {n_lines:,} lines ({k6_file.stat().st_size / 1e6:.0f} MB), made in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    pts = read_ndjson(str(k6_file))
    parse = time.perf_counter() - t
    print(f"k6 parse only: {parse:.2f} s ({pts.sample_ms.size:,} latency samples kept)")
    total = timed_report(["--k6-json", str(k6_file)], work / "k6_report")
    print(f"k6 report, {a.points:,} points: {total:.2f} s wall (goal <= 15 s) {'OK' if total <= 15 else 'SLOW'}")

    prefix = work / "locust"
    make_locust(prefix, a.hours)
    size = Path(str(prefix) + "_stats_history.csv").stat().st_size
    t = time.perf_counter()
    read_locust_run(str(prefix), "bench")
    parse = time.perf_counter() - t
    print(f"locust input: {a.hours:g} h full history ({size / 1e6:.1f} MB); parse only: {parse:.2f} s")
    total = timed_report(["--locust", str(prefix)], work / "locust_report")
    print(f"locust report, {a.hours:g} h full history: {total:.2f} s wall (goal <= 5 s) {'OK' if total <= 5 else 'SLOW'}")
    if not a.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
