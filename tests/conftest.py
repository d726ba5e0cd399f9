"""Shared fixtures: real reference targets started as subprocesses on 127.0.0.1."""

from __future__ import annotations

# Patch before anything imports ssl (python-socketio pulls in requests): a later `import locust`
# would otherwise recurse forever in gevent's ssl patch (gevent issue #1016).
from gevent import monkey

monkey.patch_all()

import pytest

from loadkit.procs import ManagedProcess, free_port, loadkit_argv


@pytest.fixture
def spawn(tmp_path):
    """Start processes that are stopped at teardown whatever happens: ``spawn(argv, port=...)``."""
    started: list[ManagedProcess] = []

    def _spawn(argv, *, port: int | None = None, name: str = "proc", **kw) -> ManagedProcess:
        p = ManagedProcess(
            argv,
            log_path=tmp_path / f"{name}-{len(started)}.log",
            wait_port=("127.0.0.1", port) if port else None,
            **kw,
        )
        started.append(p)
        return p.start()

    yield _spawn
    for p in reversed(started):
        p.stop()


__all__ = ["free_port", "loadkit_argv"]
