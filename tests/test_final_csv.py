"""Locust's --csv snapshot files must hold the final counts, not those of one second before exit."""

from __future__ import annotations

import csv

from locust import events as global_events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

from loadkit import plugin


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_close_files_writes_the_final_rows(tmp_path):
    plugin.patch_final_csv()
    env = Environment(events=global_events)
    env.create_local_runner()
    prefix = str(tmp_path / "run")
    writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, prefix, full_history=False)
    # No stats_writer greenlet ran: without the final write the files would stay empty.
    for ms in (1.0, 2.0, 3.0):
        env.events.request.fire(request_type="ktb", name="chatMessage", response_time=ms,
                                response_length=10, exception=None, context={})
    env.events.request.fire(request_type="ktb", name="chatMessage", response_time=4.0,
                            response_length=0, exception=RuntimeError("MESSAGE_REJECTED"), context={})
    writer.close_files()

    stats = {(r["Type"], r["Name"]): r for r in _rows(prefix + "_stats.csv")}
    assert stats[("ktb", "chatMessage")]["Request Count"] == "4"
    assert stats[("ktb", "chatMessage")]["Failure Count"] == "1"
    failures = _rows(prefix + "_failures.csv")
    assert len(failures) == 1 and "MESSAGE_REJECTED" in failures[0]["Error"]
    env.runner.quit()


def test_install_is_idempotent():
    plugin.patch_final_csv()
    assert plugin.patch_final_csv() is False
