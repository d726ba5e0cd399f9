"""Start, watch and stop the local processes loadkit runs (reference targets, Locust master/workers).

Tests, the demo and the benchmarks all need the same discipline: bind to loopback, wait until the
port really accepts connections, keep the output for the post-mortem, and never leave an orphan
behind, even on Ctrl-C or a failed assertion.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Block until ``host:port`` accepts a TCP connection; fail fast if ``proc`` dies first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before {host}:{port} opened")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


class ManagedProcess:
    """A child process in its own process group, with its output in a log file.

    Use as a context manager; ``stop()`` sends SIGTERM to the group, then SIGKILL after ``grace``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        wait_port: tuple[str, int] | None = None,
        start_timeout: float = 20.0,
        grace: float = 10.0,
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path) if log_path else None
        self.env = env
        self.cwd = cwd
        self.wait_port = wait_port
        self.start_timeout = start_timeout
        self.grace = grace
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> "ManagedProcess":
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb")
            out = self._log
        else:
            out = subprocess.DEVNULL
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.cwd, start_new_session=True
        )
        if self.wait_port:
            try:
                wait_for_port(*self.wait_port, timeout=self.start_timeout, proc=self.proc)
            except Exception as exc:
                self.stop()
                raise RuntimeError(f"{' '.join(self.argv)} did not start: {exc}\n{self.output()[-3000:]}") from exc
        return self

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> int | None:
        """Terminate the process group; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def output(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> "ManagedProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def own_master_port_args() -> list[str]:
    """Locust options giving a ``--processes`` run a master port of its own: its forked workers
    connect to Locust's default 5557 otherwise, where another run on the machine may listen."""
    port = str(free_port())
    return ["--master-bind-port", port, "--master-port", port]


def loadkit_argv(*args: str) -> list[str]:
    """argv that runs the ``loadkit`` command with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-m", "loadkit", *args]
