"""What the Locust master costs per worker: its CPU with 1, 2, 4 workers reporting at full rate.

Why: sizing a cluster needs the master's share. Every worker sends its stats every 3 s (Locust's
stats + loadkit's HDR histograms, one per operation, + bookkeeping) and a heartbeat every second;
the master merges them. Here each worker fires request events as fast as it can over ``--ops``
operation names (bench/locust_bench_master.py, no network), so each report is as full as a real
one; the master's CPU seconds over a steady window (psutil), divided by wall time, is its load.
``--scrape S`` also fetches ``/metrics`` every S seconds (a Prometheus) during the window.

    python bench/bench_master_cost.py                 # 1, 2, 4 workers, 16 operations, 12 s windows
    python bench/bench_master_cost.py --workers 1 2 4 8 --window 20 --scrape 1

On a machine with fewer cores than workers + 1 the workers compete with the master; the master's
CPU seconds are still its own work (the figure), the samples/s are then below a real cluster's.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from loadkit.procs import ManagedProcess, free_port  # noqa: E402


def one(workers: int, ops: int, window: float, scrape: float, tmp: Path) -> dict:
    import psutil

    port, metrics = free_port(), free_port()
    prefix = tmp / f"w{workers}"
    env = {"BENCH_OPS": str(ops), "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    locust = [sys.executable, "-m", "locust", "-f", str(HERE / "locust_bench_master.py")]
    master = ManagedProcess([*locust, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                             "--headless", "--expect-workers", str(workers), "-u", str(workers), "-r", str(workers),
                             "--run-time", f"{int(window + 12)}s", "--csv", str(prefix), "--only-summary",
                             "--metrics-port", str(metrics)],
                            log_path=tmp / f"master-{workers}.log", env=env).start()
    procs = [ManagedProcess([*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                            log_path=tmp / f"worker-{workers}-{i}.log", env=env).start() for i in range(workers)]
    try:
        deadline = time.monotonic() + 60
        while f"Ramping to {workers} users" not in master.output() and "All users spawned" not in master.output():
            if time.monotonic() > deadline or master.returncode is not None:
                raise RuntimeError("master did not start:\n" + master.output()[-2000:])
            time.sleep(0.2)
        time.sleep(4)  # past the first report of every worker
        p = psutil.Process(master.proc.pid)
        c0, t0 = p.cpu_times(), time.monotonic()
        n0 = _total(metrics)
        scrapes = 0
        while time.monotonic() - t0 < window:
            if scrape:
                _total(metrics)
                scrapes += 1
                time.sleep(scrape)
            else:
                time.sleep(0.5)
        c1, t1 = p.cpu_times(), time.monotonic()
        n1 = _total(metrics)
        master.wait(window + 60)
    finally:
        for proc in (master, *procs):
            proc.stop()
    cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0)
    return {"workers": workers, "master_cpu": cpu, "samples_per_s": (n1 - n0) / (t1 - t0), "scrapes": scrapes}


def _total(port: int) -> float:
    """Samples merged so far, read from the master's /metrics (sum of loadkit_hdr_count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(r"^loadkit_hdr_count\{[^}]*\} (\S+)$", text, re.M))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--ops", type=int, default=16, help="operation names per worker (default 16)")
    ap.add_argument("--window", type=float, default=12.0, help="seconds measured per worker count (default 12)")
    ap.add_argument("--scrape", type=float, default=0.0, help="fetch /metrics every S seconds meanwhile (0 = only twice)")
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores; {args.ops} operations; {args.window:g} s windows; workers report every 3 s")
    print(f"{'workers':>7} {'master CPU (% of a core)':>25} {'per worker':>11} {'samples/s merged':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.workers:
            r = one(n, args.ops, args.window, args.scrape, Path(tmp))
            print(f"{r['workers']:>7} {100 * r['master_cpu']:>24.1f}% {100 * r['master_cpu'] / n:>10.2f}% "
                  f"{r['samples_per_s']:>17,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
