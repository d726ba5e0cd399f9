"""``loadkit demo``: both reference targets + a distributed headless Locust run + the HTML report.

One command shows the whole tool: it starts the KTB and chldo reference servers on 127.0.0.1 (or
uses real servers given with ``--ktb-url`` / ``--chldo-url``), a Locust master and ``--workers``
worker processes of ``locustfiles/mixed.py``, prints progress while the run lasts, then writes
Locust's CSVs, loadkit's exact ``locust_hdr.csv`` and ``locust_workers.csv`` and the HTML report
into ``--out`` (default ``reports/<UTC timestamp>/``), prints a summary and stops everything it
started, also on Ctrl-C, SIGTERM and failure. Each process's output is kept in ``<out>/logs/``.

Exit codes: 0 clean run, 1 the run had failed requests, Locust errors or a lost worker, 2 bad options or a
process that would not start, 3 the run did not finish in time or the report failed, 130 Ctrl-C.

The top level stays light (argparse only): everything else is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loadkit.argtypes import non_negative_int, positive_int
from loadkit.demo_results import last_history_row, number, read_csv, shared_cpu_note, summary_text, write_run_json

_DURATION = re.compile(r"^\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*$")


def parse_duration(text: str) -> int:
    """Locust's ``--run-time`` syntax (``90``, ``60s``, ``2m``, ``1h30m``) → seconds (> 0)."""
    m = _DURATION.match(text or "")
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration like 60s, 2m or 1h30m, got {text!r}")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    seconds = h * 3600 + mi * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the run time must be positive, got {text!r}")
    return seconds


def _url(*schemes: str):
    def check(text: str) -> str:
        if not re.match(rf"^({'|'.join(schemes)})://[^/\s]+", text or ""):
            raise argparse.ArgumentTypeError(f"expected a {' or '.join(s + '://' for s in schemes)}HOST:PORT URL, got {text!r}")
        return text.rstrip("/")

    return check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  loadkit demo                                   # 60 s, one worker per core, embedded targets\n"
        "  loadkit demo --run-time 20s --workers 2 --users 10 --out reports/try\n"
        "  loadkit demo --chldo-url wss://chat.example/ws # real chldo server, embedded KTB\n"
        "  loadkit demo --workers 0 --expect-workers 4 --master-bind-host 0.0.0.0 --master-port 5557\n"
        "                                                 # master only; workers run elsewhere"
    )
    g = parser.add_argument_group("run")
    g.add_argument("--run-time", type=parse_duration, default="60s", metavar="TIME", help="run duration, Locust syntax: 60s, 2m, 1h30m (default 60s)")
    g.add_argument("--workers", type=non_negative_int, default=None, metavar="N",
                   help="local Locust worker processes (default: one per CPU core, at most --users; "
                        "0 = none, use --expect-workers)")
    g.add_argument("--expect-workers", type=positive_int, default=None, metavar="N",
                   help="workers the master waits for before starting (default: --workers)")
    g.add_argument("--workers-window", type=float, default=0.0, metavar="S",
                   help="start once no further worker has connected for S seconds, with however many "
                        "connected (at least --expect-workers, default 1); for workers started elsewhere "
                        "in a number the master is not told (docker-compose --scale, Kubernetes)")
    g.add_argument("--users", type=positive_int, default=20, metavar="N", help="concurrent users in total (default 20)")
    g.add_argument("--spawn-rate", type=float, default=10.0, metavar="R", help="users started per second (default 10)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="directory for CSVs, report and logs (default: reports/<UTC timestamp>)")
    g.add_argument("--locustfile", default=None, metavar="PATH", help="scenario (default: locustfiles/mixed.py)")
    g.add_argument("--locust-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the Locust master, repeatable (e.g. --locust-arg=--ktb-room-size=5)")
    g.add_argument("--no-report", action="store_true", help="skip the HTML report")
    g.add_argument("--master-bind-host", default="127.0.0.1", metavar="ADDR",
                   help="address the master listens on for workers (default 127.0.0.1)")
    g.add_argument("--master-port", type=non_negative_int, default=0, metavar="PORT",
                   help="master port for workers (default: a free port)")
    g.add_argument("--wait-workers", type=float, default=60.0, metavar="S",
                   help="seconds to wait for the expected workers (default 60)")
    t = parser.add_argument_group("targets (each given URL replaces that embedded target)")
    t.add_argument("--ktb-url", type=_url("http", "https"), default=None, metavar="URL",
                   help="KTB REST base URL of a real server, e.g. https://chat.example")
    t.add_argument("--ktb-socket-url", type=_url("http", "https", "ws", "wss"), default=None, metavar="URL",
                   help="KTB Socket.IO base URL if it differs from --ktb-url")
    t.add_argument("--chldo-url", type=_url("ws", "wss"), default=None, metavar="URL",
                   help="chldo WebSocket URL of a real server, e.g. wss://api.example/ws")



# ------------------------------------------------------------------------------------ running

STATS_TIMEOUT_GRACE = 90.0  # seconds past run time + worker wait before the master is stopped


class DemoError(Exception):
    """A setup problem with a clear message; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def find_locustfile(given: str | None) -> Path:
    """``--locustfile``, else ``locustfiles/mixed.py`` in the current directory or the checkout."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise DemoError(f"--locustfile {given}: no such file")
        return path.resolve()
    here = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd() / "locustfiles" / "mixed.py", here / "locustfiles" / "mixed.py"):
        if candidate.is_file():
            return candidate.resolve()
    raise DemoError("locustfiles/mixed.py not found: run from the loadkit checkout or pass --locustfile PATH")


def default_out_dir() -> Path:
    return Path("reports") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines()[-lines:])


class _Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        from loadkit import procs

        self.procs = procs
        self.args = args
        self.run_seconds: int = args.run_time
        cores = os.cpu_count() or 1
        self.workers_n: int = min(cores, args.users) if args.workers is None else args.workers
        self.window: float = args.workers_window
        if self.window < 0:
            raise DemoError("--workers-window must be >= 0")
        self.expect: int = args.expect_workers or self.workers_n or (1 if self.window else 0)
        if self.expect == 0:
            raise DemoError("--workers 0 needs --expect-workers N or --workers-window S (workers started elsewhere)")
        if args.ktb_socket_url and not args.ktb_url:
            raise DemoError("--ktb-socket-url needs --ktb-url (the REST base URL of the same server)")
        if args.spawn_rate <= 0:
            raise DemoError("--spawn-rate must be > 0")
        self.locustfile = find_locustfile(args.locustfile)
        self.out = Path(args.out) if args.out else default_out_dir()
        self.logs = self.out / "logs"
        self.prefix = self.out / "locust"
        self.started: list[Any] = []  # ManagedProcess, in start order
        self.master: Any = None
        self.workers: list[Any] = []
        self._marks: list[tuple[float, int]] = []  # (elapsed, total requests) at each progress line
        self.embedded_targets: list[str] = []

    # -------------------------------------------------------------- helpers
    def say(self, text: str) -> None:
        print(f"[demo] {text}", flush=True)

    def _start(self, name: str, argv: list[str], wait_port: tuple[str, int] | None, env: dict[str, str] | None = None):
        proc = self.procs.ManagedProcess(argv, log_path=self.logs / f"{name}.log", wait_port=wait_port,
                                         env=env, start_timeout=60.0)
        self.started.append(proc)
        try:
            proc.start()
        except RuntimeError as exc:
            raise DemoError(f"{name} did not start: {str(exc).splitlines()[0]}\n{_tail(proc.output())}") from None
        return proc

    def start_targets(self) -> tuple[str, str | None, str]:
        a, procs = self.args, self.procs
        if a.ktb_url:
            ktb_url, socket_url = a.ktb_url, a.ktb_socket_url
            self.say(f"KTB target: {ktb_url}" + (f" (Socket.IO {socket_url})" if socket_url else ""))
        else:
            sio, rest = procs.free_port(), procs.free_port()
            self._start("ktb", procs.loadkit_argv("serve", "ktb", "--host", "127.0.0.1", "--port", str(sio),
                                                  "--rest-port", str(rest)), ("127.0.0.1", rest))
            procs.wait_for_port("127.0.0.1", sio, timeout=30, proc=self.started[-1].proc)
            ktb_url, socket_url = f"http://127.0.0.1:{rest}", f"http://127.0.0.1:{sio}"
            self.embedded_targets.append("KTB")
            self.say(f"started KTB reference server: REST {ktb_url}, Socket.IO {socket_url}")
        if a.chldo_url:
            chldo_url = a.chldo_url
            self.say(f"chldo target: {chldo_url}")
        else:
            port = procs.free_port()
            self._start("chldo", procs.loadkit_argv("serve", "chldo", "--host", "127.0.0.1", "--port", str(port)),
                        ("127.0.0.1", port))
            chldo_url = f"ws://127.0.0.1:{port}"
            self.embedded_targets.append("chldo")
            self.say(f"started chldo reference server: {chldo_url}")
        return ktb_url, socket_url, chldo_url

    def master_argv(self, port: int, ktb_url: str, socket_url: str | None, chldo_url: str) -> list[str]:
        a = self.args
        argv = [
            sys.executable, "-m", "locust", "-f", str(self.locustfile),
            "--master", "--master-bind-host", a.master_bind_host, "--master-bind-port", str(port),
            "--headless", "--users", str(a.users), "--spawn-rate", f"{a.spawn_rate:g}",
            "--run-time", f"{self.run_seconds}s", "--expect-workers", str(self.expect),
            "--expect-workers-max-wait", f"{a.wait_workers:g}", "--csv", str(self.prefix), "--csv-full-history",  # per-operation curves in the report
            "--only-summary",
        ]
        if self.window:
            argv += ["--workers-window", f"{self.window:g}"]
        if self.locustfile.name == "mixed.py":
            argv += ["--mixed-ktb-url", ktb_url, "--mixed-chldo-url", chldo_url]
            if socket_url:
                argv += ["--ktb-socket-url", socket_url]
        return argv + list(a.locust_arg)

    def worker_argv(self, port: int) -> list[str]:
        return [sys.executable, "-m", "locust", "-f", str(self.locustfile), "--worker",
                "--master-host", "127.0.0.1", "--master-port", str(port)]

    def new_early_warnings(self) -> list[str]:
        """The master's "failed every time so far" lines (loadkit.metrics.early_warning) not yet
        said: why nothing works, at once, not only in the final table."""
        said = self.__dict__.setdefault("_warned", set())
        lines = [line[line.index("loadkit: ") + len("loadkit: "):]
                 for line in (self.master.output() if self.master else "").splitlines()
                 if "has failed every time so far" in line and "loadkit: " in line]
        fresh = [line for line in lines if line not in said]
        said.update(fresh)
        return fresh

    def progress_line(self, elapsed: float) -> str:
        row = last_history_row(Path(f"{self.prefix}_stats_history.csv"))
        users = int(number(row.get("User Count"))) if row else 0
        total = int(number(row.get("Total Request Count"))) if row else 0
        if users == 0 and total == 0:
            out = self.master.output() if self.master else ""
            connected = out.count("reported as ready")
            if self.window:  # the master's count when the window closed (workers_window), not --expect-workers
                counted = re.search(r"loadkit: (\d+) worker\(s\) connected \(none new for", out)
                if counted is None:
                    return f"{elapsed:5.0f}s  waiting for workers: {connected} connected (counting until none new for {self.window:g}s)"
                return f"{elapsed:5.0f}s  {counted.group(1)} worker(s) connected, starting users"
            connected = min(self.expect, connected)
            if connected < self.expect:
                return f"{elapsed:5.0f}s  waiting for workers: {connected}/{self.expect} connected"
            return f"{elapsed:5.0f}s  {connected} worker(s) connected, starting users"
        failures = int(number(row.get("Total Failure Count"))) if row else 0
        # rate over the last ~6 s: workers report every 3 s, so shorter windows jump between 0 and 2x
        self._marks.append((elapsed, total))
        older = [m for m in self._marks[:-1] if m[0] >= elapsed - 6.5] or self._marks[-2:-1]
        rate = (total - older[0][1]) / (elapsed - older[0][0]) if older and elapsed > older[0][0] else 0.0
        return (
            f"{elapsed:5.0f}s  users {users:>4}  requests {total:>7}  failures {failures:>5}  "
            f"{rate:7.1f} req/s   (run time {self.run_seconds}s; workers report every 3 s)"
        )

    # -------------------------------------------------------------- phases
    def run_locust(self, ktb_url: str, socket_url: str | None, chldo_url: str) -> int:
        a, procs = self.args, self.procs
        bind = a.master_bind_host
        probe_host = "127.0.0.1" if bind in ("0.0.0.0", "*", "") else bind
        port = a.master_port or procs.free_port(probe_host)
        self.master = self._start("master", self.master_argv(port, ktb_url, socket_url, chldo_url), (probe_host, port))
        expected = (f"workers counted until none new for {self.window:g}s (at least {self.expect})" if self.window
                    else f"{self.expect} worker(s) expected")
        self.say(f"Locust master on {bind}:{port}, {expected}, {a.users} users, {self.run_seconds}s")
        worker_env = {"LOADKIT_MASTER_WAIT": "30", "LOADKIT_MASTER_TIMEOUT": "15"}
        for i in range(self.workers_n):
            self.workers.append(self._start(f"worker-{i}", self.worker_argv(port), None, worker_env))
        if self.workers_n:
            self.say(f"started {self.workers_n} local worker process(es)")
        started = time.monotonic()
        deadline = started + a.wait_workers + self.run_seconds + STATS_TIMEOUT_GRACE
        interval = 5.0 if self.run_seconds >= 30 else 2.0
        next_print = started + interval
        reported_dead: set[int] = set()
        while self.master.returncode is None:
            now = time.monotonic()
            if now > deadline:
                self.master.stop()
                raise DemoError(f"the Locust master did not finish in time; see {self.logs}", 3)
            for i, w in enumerate(self.workers):
                if w.returncode is not None and i not in reported_dead:
                    reported_dead.add(i)
                    if w.returncode != 0:  # 0 = told to quit by the master, which ends right after
                        self.say(f"worker-{i} exited with code {w.returncode}:\n{_tail(w.output(), 8)}")
            if self.workers and all(w.returncode not in (None, 0) for w in self.workers):
                self.master.stop()
                raise DemoError(f"every local worker failed; see {self.logs}", 2)
            if now >= next_print:
                self.say(self.progress_line(now - started))
                for line in self.new_early_warnings():
                    self.say(line)
                next_print = now + interval
            time.sleep(0.2)
        code = self.master.returncode
        self.say(f"Locust master finished (exit code {code})")
        if code != 0:  # say why: a run with no failed request may still fail (unfinished, lost load, SLO)
            for line in master_verdicts(self.master.output()):
                self.say(line)
        for w in self.workers:  # they got "quit" from the master; give them a moment, then stop them
            try:
                w.wait(15)
            except Exception:  # noqa: BLE001 - TimeoutExpired: stopped below
                pass
        if code not in (0, 1):
            self.say(f"the Locust master failed:\n{_tail(self.master.output())}")
        return code

    def build_report(self) -> Path | None:
        argv = self.procs.loadkit_argv(
            "report", "--locust", str(self.prefix), "--out", str(self.out), "--quiet",
            "--title", f"loadkit demo: {len(read_csv(Path(f'{self.prefix}_workers.csv'))) or self.expect} workers, "
                       f"{self.args.users} users, {self.run_seconds}s",
        )
        proc = self.procs.ManagedProcess(argv, log_path=self.logs / "report.log")
        self.started.append(proc)
        proc.start()
        try:
            code = proc.wait(180)
        except Exception:  # noqa: BLE001 - TimeoutExpired
            proc.stop()
            self.say("loadkit report did not finish within 180 s")
            return None
        html = self.out / "report.html"
        if code != 0 or not html.is_file():
            self.say(f"loadkit report failed (exit code {code}):\n{_tail(proc.output())}")
            return None
        return html

    def stop_all(self) -> None:
        """Master first (SIGTERM makes it write its CSVs), then workers, then targets.

        Ctrl-C and SIGTERM are ignored during the cleanup so that no process is left behind.
        """
        previous = {sig: _set_signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.master is not None:
                self.master.stop()
            for proc in reversed(self.started):
                proc.stop()
        finally:
            for sig, handler in previous.items():
                _set_signal(sig, handler)

    def main(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        self.say(f"output directory: {self.out}")
        try:
            urls = self.start_targets()
            master_code = self.run_locust(*urls)
        finally:
            self.stop_all()
        if not Path(f"{self.prefix}_stats.csv").is_file():
            self.say("no Locust stats were written")
            return 3
        text, total, failures, lost = summary_text(self.prefix)
        print(text, flush=True)
        note = shared_cpu_note(self.embedded_targets, len(self.workers), os.cpu_count() or 1)
        if note:
            self.say(f"note: {note}")
        write_run_json(self.prefix, self.locustfile, [note] if note else [])
        # 1: failed requests, Locust-reported errors, a lost worker or no request at all; 3: the run broke
        # the master's own verdicts (1 failures, 5 less load than asked: a lost worker) are 1 here too
        code = 3 if master_code not in (0, 1, 5) else 1 if (master_code in (1, 5) or failures or lost) else 0
        if total == 0:
            self.say("no request was made")
            code = max(code, 1)
        if not self.args.no_report:
            html = self.build_report()
            if html is None:
                code = code or 3
            else:
                self.say(f"report: {html}")
        self.say(f"CSVs: {self.prefix}_stats.csv, {self.prefix}_hdr.csv, {self.prefix}_metrics.csv, {self.prefix}_saturation.csv, {self.prefix}_workers.csv; logs: {self.logs}")
        return code


def master_verdicts(output: str) -> list[str]:
    """The master's own loadkit error lines (``…/ERROR/loadkit.<module>: loadkit: …``), the reasons
    it gives for a non-zero exit code, in order and each once; the ones said live are included."""
    seen: dict[str, None] = {}
    for line in output.splitlines():
        at = line.find("/ERROR/loadkit")
        if at >= 0 and "loadkit: " in line[at:]:
            seen.setdefault(line[line.index("loadkit: ", at):].strip(), None)
    return list(seen)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _set_signal(signum: int, handler: Any) -> Any:
    """``signal.signal`` that is a no-op outside the main thread (returns the previous handler)."""
    if handler is None:
        return None
    try:
        return signal.signal(signum, handler)
    except ValueError:
        return None


def run(args: argparse.Namespace) -> int:
    try:
        demo = _Demo(args)
    except DemoError as exc:
        print(f"loadkit demo: error: {exc}", file=sys.stderr)
        return exc.code
    previous = _set_signal(signal.SIGTERM, _raise_interrupt)
    try:
        return demo.main()
    except DemoError as exc:
        print(f"loadkit demo: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"\nloadkit demo: interrupted; everything it started is stopped. Partial output: {demo.out}",
              file=sys.stderr, flush=True)
        return 130
    finally:
        _set_signal(signal.SIGTERM, previous)
