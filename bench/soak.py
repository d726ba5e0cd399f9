"""Soak: a steady KTB + chldo run for minutes, sampling RSS and open file descriptors of every process.

Why: a load generator (or a reference server) that leaks a little per request looks fine in a 60 s
test and falls over in a one-hour soak of the service it measures. This starts both reference
servers, a Locust master and two workers (``locustfiles/mixed.py``) at a steady user count, samples
every process's RSS and descriptor count from ``/proc`` every ``--every`` seconds, and prints the
growth from the end of the first minute (warm-up: imports, pools, histograms filling) to the end.
The goal (issue #15): under 5 % for every process. It also says which worker runs which user kind
(its TCP connections to each server) and the machine's load average (a soak on a shared machine
measures the neighbours too). Figures: docs/distributed.md#soak-long-runs-stay-flat.

    python3 bench/soak.py                      # 10 minutes, 40 users
    python3 bench/soak.py --minutes 3 --users 20 --every 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from loadkit.procs import ManagedProcess, free_port, loadkit_argv  # noqa: E402


def sample(pid: int) -> tuple[int, int] | None:
    """(RSS in KiB, open descriptors) of ``pid``, or None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        fds = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    except (OSError, StopIteration):
        return None
    return rss, fds


def peers(pid: int, ports: dict[int, str]) -> dict[str, int]:
    """How many TCP connections ``pid`` holds to each server of ``ports`` ({port: name})."""
    try:
        inodes = {os.readlink(fd.path)[8:-1] for fd in os.scandir(f"/proc/{pid}/fd")
                  if os.readlink(fd.path).startswith("socket:[")}
        lines = [line.split() for name in ("tcp", "tcp6")
                 for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]]
    except OSError:
        return {}
    out: dict[str, int] = {}
    for f in lines:
        port = int(f[2].rsplit(":", 1)[1], 16)
        if port in ports and f[9] in inodes:
            out[ports[port]] = out.get(ports[port], 0) + 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline sample")
    args = ap.parse_args()
    run_s = int(args.minutes * 60)
    tmp = Path(tempfile.mkdtemp(prefix="loadkit-soak-"))
    ktb, chldo, master_port = free_port(), free_port(), free_port()
    procs: dict[str, ManagedProcess] = {}

    def start(name: str, argv: list[str], port: int | None = None) -> None:
        procs[name] = ManagedProcess(argv, log_path=tmp / f"{name}.log",
                                     wait_port=("127.0.0.1", port) if port else None).start()

    try:
        start("ktb-server", loadkit_argv("serve", "ktb", "--port", str(ktb), "--single-port"), ktb)
        start("chldo-server", loadkit_argv("serve", "chldo", "--port", str(chldo)), chldo)
        locust = [sys.executable, "-m", "locust", "-f", str(HERE.parent / "locustfiles" / "mixed.py")]
        start("master", [*locust, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                         "--headless", "--expect-workers", "2", "-u", str(args.users), "-r", str(max(1, args.users // 5)),
                         "-t", f"{run_s}s", "--csv", str(tmp / "soak"), "--only-summary",
                         "--mixed-ktb-url", f"http://127.0.0.1:{ktb}", "--mixed-chldo-url", f"ws://127.0.0.1:{chldo}"],
              master_port)
        for i in range(2):
            start(f"worker-{i}", [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)])
        print(f"soak: {args.users} users for {run_s}s; logs and CSVs in {tmp}", flush=True)
        t0 = time.monotonic()
        series: dict[str, list[tuple[float, int, int]]] = {name: [] for name in procs}
        runs: dict[str, str] = {}  # worker -> the user kinds it runs (from its connections)
        load: list[float] = []
        while procs["master"].returncode is None and time.monotonic() - t0 < run_s + 60:
            now = time.monotonic() - t0
            if now <= run_s:
                load.append(os.getloadavg()[0])
            for name, p in procs.items():
                s = sample(p.proc.pid) if p.proc else None
                if s:
                    series[name].append((now, *s))
                if name.startswith("worker") and p.proc and args.warmup <= now <= run_s - 5 and name not in runs:
                    runs[name] = " ".join(f"{k}:{v}" for k, v in sorted(peers(p.proc.pid, {ktb: "ktb", chldo: "chldo"}).items()))
            time.sleep(args.every)
        print(f"{'process':<14} {'RSS @warm-up':>13} {'RSS end':>10} {'growth':>8} {'fds @warm-up':>13} {'fds end':>8}"
              "  connections to")
        worst = 0.0
        for name, points in series.items():
            # from the end of the warm-up to the last sample before the run ends (not the shutdown)
            warm = [p for p in points if args.warmup <= p[0] <= run_s - 5] or points
            if not warm:
                continue
            (_, r0, f0), (_, r1, f1) = warm[0], warm[-1]
            growth = (r1 - r0) / r0 * 100.0 if r0 else 0.0
            worst = max(worst, growth)
            print(f"{name:<14} {r0 / 1024:>10.1f} MiB {r1 / 1024:>6.1f} MiB {growth:>7.1f}% {f0:>13} {f1:>8}"
                  f"  {runs.get(name, '')}")
        stats = (tmp / "soak_stats.csv").read_text().splitlines() if (tmp / "soak_stats.csv").exists() else []
        agg = next((line for line in stats if ",Aggregated," in line), "")
        print(f"Aggregated row: {agg}")
        print(f"largest RSS growth after warm-up: {worst:.1f}% (goal < 5%)")
        if load:
            print(f"load average (1 min) during the run: min {min(load):.2f}, mean {sum(load) / len(load):.2f}, "
                  f"max {max(load):.2f} on {os.cpu_count()} CPUs")
        return 0
    finally:
        for p in reversed(list(procs.values())):
            p.stop()


if __name__ == "__main__":
    raise SystemExit(main())
