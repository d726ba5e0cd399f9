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


# ---------------------------------------------------------------------------------------- markers
# ``slow``: a test that starts processes (a server, Locust, k6, docker-compose) or runs a load for
# seconds. ``pytest -m "not slow"`` runs the pure, in-process tests alone (< 30 s: the cores'
# decisions, codecs, options, report building from fixtures). Marked here, by rule, so a new test
# is classified without anyone remembering to: every test that uses the ``spawn`` fixture (at any
# depth) is slow, and so is every test of the modules below, which start processes by other means,
# every test of the report (``test_report_*``: pandas + matplotlib build a whole report, seconds
# each), and the single tests listed in SLOW_TESTS (seconds of CPU in-process).
SLOW_MODULES = {
    "test_chldo_acceptance", "test_compose", "test_demo", "test_distributed", "test_early_warning",
    "test_hdr", "test_k8s", "test_ktb_server", "test_ktb_server_fuzz", "test_ktb_users_locust",
    "test_measure", "test_multihost", "test_options", "test_prometheus", "test_report_bad_input",
    "test_report_k6_scripts", "test_report_locust", "test_report_workers", "test_web_ui_options",
    "test_chldo_server", "test_chldo_users", "test_hostile_handshake", "test_hostile_ktb",
}

SLOW_TESTS = {"test_banned_words_match_java_contains_semantics_on_a_10k_list"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes or runs a load for seconds (pytest -m 'not slow' skips them)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if ("spawn" in item.fixturenames or module in SLOW_MODULES or module.startswith("test_report_")
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
