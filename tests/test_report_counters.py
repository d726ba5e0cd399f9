"""``loadkit report`` shows loadkit's ``<prefix>_counters.csv`` (things that are not requests)."""

from __future__ import annotations

import csv
import html as html_lib
import shutil

from report_helpers import FIXTURES, run_report_inproc

PLAIN = FIXTURES / "locust" / "chldo_full"  # a recorded local run without a counters file


def _copy_run(tmp_path, name="run"):
    for src in PLAIN.parent.glob(PLAIN.name + "_*"):
        shutil.copy(src, tmp_path / (name + src.name[len(PLAIN.name):]))
    return tmp_path / name


def test_counters_are_shown_and_written_beside_the_tables(tmp_path):
    prefix = _copy_run(tmp_path)
    (tmp_path / "run_counters.csv").write_text(
        "Type,Name,Count\nktb,duplicate_login,3\nktb,unknown_event:brandNewFeature,17\nktb,sessions,40\n")
    out = tmp_path / "out"
    res = run_report_inproc("--locust", f"L={prefix}", "--out", str(out))
    assert res.returncode == 0, res.stderr
    page = html_lib.unescape((out / "report.html").read_text(encoding="utf-8"))
    section = page[page.index("Client-side counters"):]
    for name, count in (("duplicate_login", "3"), ("unknown_event:brandNewFeature", "17"), ("sessions", "40")):
        assert f"<td class=\"l\">{name}</td><td>{count}</td>" in section, name
    rows = list(csv.DictReader(open(out / "counters.csv")))
    assert [(r["run"], r["type"], r["name"], r["count"]) for r in rows] == [
        ("L", "ktb", "duplicate_login", "3"), ("L", "ktb", "unknown_event:brandNewFeature", "17"), ("L", "ktb", "sessions", "40")]


def test_no_counters_file_no_section(tmp_path):
    prefix = _copy_run(tmp_path)
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(prefix), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Client-side counters" not in (out / "report.html").read_text(encoding="utf-8")
    assert not (out / "counters.csv").exists()


def test_a_broken_counters_file_is_an_input_error_naming_it(tmp_path):
    prefix = _copy_run(tmp_path)
    bad = tmp_path / "run_counters.csv"
    for text, says in (("Type,Name,Count\nktb,sessions,many\n", "line 2, 'Count'"),
                       ("Kind,What\nktb,x\n", "Count"),
                       ("", "empty")):
        bad.write_text(text)
        res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out"))
        assert res.returncode == 2, (text, res.stdout, res.stderr)
        assert str(bad) in res.stderr and says in res.stderr, (text, res.stderr)
