"""``loadkit report`` and the Locust master's ``<prefix>_workers.json``/``.csv`` (issue #6 §4).

A worker killed mid-run: the master finishes the run, and the report must say which worker was lost
and how much of its data the totals hold. The fixture ``synth_lost_*`` is a real recording of
:func:`test_distributed.run_and_kill_one_worker` (2 workers of ``tests/locustfile_hdr_synth.py``,
one SIGKILLed); the last test does the same run live.
"""

from __future__ import annotations

import csv
import html as html_lib
import json
import shutil
from datetime import datetime

import pandas as pd
import pytest

from report_helpers import FIXTURES, run_report, run_report_inproc
from test_distributed import locust_stats, run_and_kill_one_worker

LOST = FIXTURES / "locust" / "synth_lost"
PLAIN = FIXTURES / "locust" / "chldo_full"  # a local run with plain Locust CSVs: no workers file


def _copy(prefix, tmp_path, name="run", skip=()):
    for src in prefix.parent.glob(prefix.name + "_*"):
        suffix = src.name[len(prefix.name):]
        if suffix not in skip:
            shutil.copy(src, tmp_path / (name + suffix))
    return tmp_path / name


def _json_workers(path) -> list[dict]:
    """The workers file read with the stdlib only (independent of the report code)."""
    return json.loads(path.read_text())["workers"]


def _expected_warning(w: dict) -> tuple[str, str]:
    t = datetime.fromisoformat(w["last_seen"].replace("Z", "+00:00")).strftime("%H:%M:%S")
    who = f"worker {w['index']} ({w['hostname']} pid {w['pid']}) was lost at {t} UTC"
    return who, f"the totals include the {int(w['requests']):,} requests it reported before that"


def _body_text(html: str) -> str:
    return html_lib.unescape(html)


def test_fixture_lost_worker_is_named_at_the_top(tmp_path):
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(LOST), "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = _json_workers(LOST.parent / (LOST.name + "_workers.json"))
    lost = [w for w in rows if w["lost"] == "true"]
    assert len(lost) == 1 and len(rows) == 2  # the recording: one of two workers was killed

    html = _body_text((out / "report.html").read_text(encoding="utf-8"))
    who, kept = _expected_warning(lost[0])
    warn_at = html.find(who)
    assert warn_at != -1, who
    assert kept in html[warn_at: warn_at + 300]
    assert warn_at < html.find("<h2>Summary</h2>")  # near the top, before any table
    assert 'class="warning"' in html[:warn_at]
    # the console says it too, in one line
    console = [line for line in res.stdout.splitlines() if who in line]
    assert len(console) == 1 and kept in console[0] and console[0].startswith("WARNING")

    # the Workers section: one row per worker, the lost one marked
    section = html[html.find('<h2 id="workers">'):]
    assert section and "<h2 id=\"workers\">Workers</h2>" in section
    for w in rows:
        assert w["client_id"] in section
    lost_row = section[section.find(lost[0]["client_id"]):].split("</tr>", 1)[0]
    assert "LOST" in lost_row and f"<td>{int(lost[0]['requests']):,}</td>" in lost_row

    # workers.csv: the same rows as the master's file, plus tool, run and share
    with open(out / "workers.csv", newline="") as fh:
        tidy = list(csv.DictReader(fh))
    assert len(tidy) == len(rows)
    total = sum(int(w["requests"]) for w in rows)
    by_id = {t["client_id"]: t for t in tidy}
    for w in rows:
        t = by_id[w["client_id"]]
        assert (t["tool"], t["run"]) == ("locust", LOST.name)
        assert t["worker"] == w["index"]
        for col in ("hostname", "pid", "state", "reports", "requests", "first_seen", "last_seen", "final_report", "lost"):
            assert t[col] == w[col], col
        assert float(t["share"]) == pytest.approx(int(w["requests"]) / total, abs=1e-4)
    # and the workers' requests are the run's total (they are what the master merged)
    stats = locust_stats(LOST)
    assert total == int(stats[("", "Aggregated")]["Request Count"])
    assert f"add up to the run's total ({total:,})" in res.stdout


def test_csv_is_read_when_there_is_no_json(tmp_path):
    from_json, from_csv = tmp_path / "a", tmp_path / "b"
    assert run_report_inproc("--locust", str(LOST), "--out", str(from_json), "--quiet").returncode == 0
    prefix = _copy(LOST, tmp_path, "synth_lost", skip=("_workers.json",))
    res = run_report_inproc("--locust", str(prefix), "--out", str(from_csv), "--quiet")
    assert res.returncode == 0, res.stderr
    pd.testing.assert_frame_equal(pd.read_csv(from_json / "workers.csv"), pd.read_csv(from_csv / "workers.csv"))
    who, _ = _expected_warning([w for w in _json_workers(LOST.parent / "synth_lost_workers.json") if w["lost"] == "true"][0])
    assert who in _body_text((from_csv / "report.html").read_text(encoding="utf-8"))


def test_no_lost_worker_no_warning(tmp_path):
    prefix = _copy(LOST, tmp_path)
    doc = json.loads((tmp_path / "run_workers.json").read_text())
    for w in doc["workers"]:
        w["lost"], w["state"], w["final_report"] = "false", "stopped", "true"
    (tmp_path / "run_workers.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(prefix), "--out", str(out))
    assert res.returncode == 0, res.stderr
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'class="warning"' not in html and "was lost" not in html and "WARNING" not in res.stdout
    assert '<h2 id="workers">' in html and "2 Locust workers, none lost" in res.stdout


def test_plain_locust_run_has_no_workers_section_and_keeps_the_count_warning(tmp_path):
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(PLAIN), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert not (out / "workers.csv").exists()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<h2 id="workers">' not in html and 'class="warning"' not in html
    # these CSVs come from Locust without loadkit's final write: _stats.csv misses the last second
    assert "counts differ" in res.stdout and "plain Locust" in res.stdout


def _bad_case(name, tmp_path):
    """(file to break, how) -> the file the error must name and words it must contain."""
    prefix = _copy(LOST, tmp_path)
    j, c = tmp_path / "run_workers.json", tmp_path / "run_workers.csv"
    if name == "json_truncated":
        j.write_bytes(j.read_bytes()[: len(j.read_bytes()) // 2])
        return prefix, j.name, "truncated"
    if name == "json_not_workers":
        j.write_text('{"hello": 1}')
        return prefix, j.name, "not a loadkit workers file"
    if name == "json_bad_number":
        doc = json.loads(j.read_text())
        doc["workers"][1]["requests"] = "lots"
        j.write_text(json.dumps(doc))
        return prefix, j.name, "not a whole number"
    if name == "json_missing_key":
        doc = json.loads(j.read_text())
        del doc["workers"][0]["lost"]
        j.write_text(json.dumps(doc))
        return prefix, j.name, "missing lost"
    j.unlink()  # the CSV cases: only the CSV is there
    if name == "csv_truncated":
        text = c.read_text()
        c.write_text(text[: text.rfind(",", 0, len(text) - 30)])
        return prefix, c.name, "truncated"
    if name == "csv_wrong_format":
        shutil.copy(tmp_path / "run_stats.csv", c)
        return prefix, c.name, "missing column"
    if name == "csv_bad_time":
        c.write_text(c.read_text().replace("2026-11-21T12:29:10.438Z", "soon"))
        return prefix, c.name, "not an ISO 8601 time"
    if name == "csv_empty":
        c.write_text("")
        return prefix, c.name, "empty"
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name", ["json_truncated", "json_not_workers", "json_bad_number", "json_missing_key",
             "csv_truncated", "csv_wrong_format", "csv_bad_time", "csv_empty"],
)  # fmt: skip
def test_bad_workers_file_gives_one_clear_line(tmp_path, name):
    prefix, must_name, words = _bad_case(name, tmp_path)
    res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("loadkit report: error: ") and must_name in lines[0], lines[0]
    assert words.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.timeout(90)
def test_real_run_with_a_worker_killed_mid_run(spawn, tmp_path):
    """Master + 2 workers on 127.0.0.1, one SIGKILLed mid-run; the report names it, totals = Locust's."""
    prefix = tmp_path / "kill"
    master, workers, victim = run_and_kill_one_worker(spawn, prefix, "12s")
    out = tmp_path / "report"
    res = run_report("--locust", str(prefix), "--out", str(out))
    assert res.returncode == 0, res.stderr

    rows = {int(w["pid"]): w for w in _json_workers(tmp_path / "kill_workers.json")}
    assert set(rows) == {w.proc.pid for w in workers}
    assert rows[victim.proc.pid]["lost"] == "true" and rows[workers[0].proc.pid]["lost"] == "false"
    who, kept = _expected_warning(rows[victim.proc.pid])
    html = _body_text((out / "report.html").read_text(encoding="utf-8"))
    assert who in html and kept in html, html[:3000]
    assert any(who in line and kept in line for line in res.stdout.splitlines()), res.stdout
    assert f"pid {workers[0].proc.pid}) was lost" not in html

    # the totals are Locust's _stats.csv counts, operation by operation, and the workers' shares add up to them
    stats = locust_stats(prefix)
    summary = pd.read_csv(out / "summary.csv").set_index("operation")
    for (_typ, name), row in stats.items():
        assert summary.at[name, "count"] == int(row["Request Count"]), name
        assert summary.at[name, "failures"] == int(row["Failure Count"]), name
    tidy = pd.read_csv(out / "workers.csv")
    assert tidy["requests"].sum() == int(stats[("", "Aggregated")]["Request Count"])
    assert tidy.set_index("pid").at[victim.proc.pid, "requests"] == int(rows[victim.proc.pid]["requests"]) > 0
    # loadkit's final CSV write: _stats.csv already holds the last second, no count mismatch note
    assert "counts differ" not in res.stdout
