"""Shared fixtures: real reference targets started as subprocesses on 127.0.0.1."""

from __future__ import annotations


import pytest
from gevent import monkey

from loadkit.procs import ManagedProcess, free_port, loadkit_argv


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): three test processes for the suite, whose tests mostly wait
    on short real runs, so three fit two cores; none for ``-m "not slow"``, the pure tests, which
    finish before three processes would have imported everything. ``-n N`` on the command line wins."""
    return 0 if (config.option.markexpr or "").strip() == "not slow" else 3


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Monkey-patch for gevent in every process that runs tests, before anything imports ssl
    (python-socketio pulls in requests; a later patch would recurse forever in gevent's ssl patch,
    gevent issue #1016). Not in the controller of a parallel run (pytest-xdist, ``-n`` in
    pyproject's addopts): it only schedules, through execnet threads that gevent's locks would stall
    (each of its waits would run to its timeout)."""
    config.addinivalue_line("markers", "slow: starts processes or runs a load for seconds (pytest -m 'not slow' skips them)")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    monkey.patch_all()
    if hasattr(config, "workerinput"):
        _unpatch_xdist_worker_queue(config)


#: tests whose assertions are timing accuracy (a ground truth within 1 ms, a ttft within 5 ms, a
#: schedule lag p99 under 10 ms): in a parallel run each runs with no other test of the suite beside
#: it (the ``exclusive`` fixture), since a neighbour's load shows up as milliseconds of scheduler
#: wake-up latency in both the server and the client, not as an error of the measurement
EXCLUSIVE_TESTS = {
    "test_ground_truth_delay_moves_chat_join_and_read_receipt", "test_headless_locust_against_reference_server",
    "test_langchain_mode_measures_the_same_with_worker_processes", "test_enough_users_hold_the_rate_with_little_lag",
}


@pytest.fixture(autouse=True)
def exclusive(request):
    """A readers-writer lock over the suite's parallel processes (``flock`` on a file of the run):
    every test holds it shared, an EXCLUSIVE_TESTS test holds it alone. A turnstile lock taken
    first keeps new tests from starting while an exclusive one waits, so it waits at most for the
    tests already running."""
    if not hasattr(request.config, "workerinput"):  # one process: nothing runs beside the test anyway
        yield
        return
    import fcntl

    # the run's base temp folder, shared by its worker processes (each has its own folder below it)
    base = str(request.getfixturevalue("tmp_path_factory").getbasetemp().parent / "exclusive")
    mode = fcntl.LOCK_EX if request.node.originalname in EXCLUSIVE_TESTS else fcntl.LOCK_SH
    with open(base + ".turnstile", "a") as turnstile, open(base + ".lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, mode)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _unpatch_xdist_worker_queue(config) -> None:
    """An xdist worker takes its next test from a queue that execnet's I/O *thread* fills. The
    queue's event waits on a lock allocated at each wait, which after patch_all is a gevent lock that
    a real thread cannot wake ("LoopExit: This operation would block forever"): give the queue a lock
    and an event made of the unpatched OS lock. Waiting on them blocks the hub, right between tests."""
    os_lock = monkey.get_original("_thread", "allocate_lock")

    class OsEvent:
        """threading.Event on real OS locks (the operations xdist's TestQueue uses)."""

        def __init__(self) -> None:
            self._flag = False
            self._mutex = os_lock()
            self._waiters: list = []

        def is_set(self) -> bool:
            return self._flag

        def set(self) -> None:
            with self._mutex:
                self._flag = True
                for w in self._waiters:
                    w.release()
                self._waiters.clear()

        def clear(self) -> None:
            with self._mutex:
                self._flag = False

        def wait(self, timeout: float | None = None) -> bool:
            with self._mutex:
                if self._flag:
                    return True
                w = os_lock()
                w.acquire()
                self._waiters.append(w)
            return w.acquire(True, -1 if timeout is None else timeout)

    queues = [p.torun for p in config.pluginmanager.get_plugins() if type(p).__name__ == "WorkerInteractor"]
    if len(queues) != 1 or not hasattr(queues[0], "_has_items_event") or not hasattr(queues[0], "_lock"):
        raise pytest.UsageError("tests/conftest.py: this pytest-xdist has no WorkerInteractor.torun queue "
                                "as 3.6-3.8 had; run the suite with -n 0 or pin pytest-xdist")
    queues[0]._lock = os_lock()
    queues[0]._has_items_event = OsEvent()


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




def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if ("spawn" in item.fixturenames or module in SLOW_MODULES or module.startswith("test_report_")
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)
