"""How ``loadkit report`` names and groups its inputs into runs (labels, k6 files of one run)."""

from __future__ import annotations

import os

import pandas as pd

from loadkit.reports.build import split_label
from report_helpers import FIXTURES, run_report_inproc

K6 = FIXTURES / "k6"


def test_split_label():
    assert split_label("base=runs/a", lambda p: False) == ("base", "runs/a")
    assert split_label("runs/a", lambda p: False) == (None, "runs/a")
    # an existing path is never split at '='
    assert split_label("odd=name", lambda p: p == "odd=name") == (None, "odd=name")


def test_unlabelled_k6_files_of_different_kinds_are_one_run(tmp_path):
    res = run_report_inproc("--k6-json", str(K6 / "chldo.json.gz"), "--k6-summary", str(K6 / "chldo_summary_export.json"),
                            "--out", str(tmp_path), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert set(pd.read_csv(tmp_path / "summary.csv")["run"]) == {"k6"}


def test_two_unlabelled_k6_json_files_are_two_runs(tmp_path):
    res = run_report_inproc("--k6-json", str(K6 / "chldo.json.gz"), "--k6-json", str(K6 / "ktb.json.gz"), "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr
    assert set(pd.read_csv(tmp_path / "summary.csv")["run"]) == {"chldo", "ktb"}


def test_json_and_csv_of_one_run_are_refused(tmp_path):
    res = run_report_inproc("--k6-json", f"a={K6 / 'chldo.json.gz'}", "--k6-csv", f"a={K6 / 'chldo_unix.csv.gz'}", "--out", str(tmp_path))
    assert res.returncode == 2
    assert "both --k6-json and --k6-csv" in res.stderr


def test_default_out_dir_is_under_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run_report_inproc("--k6-json", f"base={K6 / 'ktb.json.gz'}", "--quiet")
    assert res.returncode == 0, res.stderr
    assert os.path.exists(tmp_path / "reports" / "base" / "report.html")


def test_a_folder_with_one_run_is_that_run_and_two_runs_are_named(tmp_path):
    """``loadkit report --locust <demo folder>`` reads ``<folder>/locust``; a folder with two runs
    names both instead of guessing."""
    import shutil

    src = FIXTURES / "locust"
    fixture = sorted(src.glob("*_stats.csv"))[0].name[: -len("_stats.csv")]
    folder = tmp_path / "demo"
    folder.mkdir()
    for f in src.glob(fixture + "_*"):
        shutil.copy(f, folder / ("locust" + f.name[len(fixture):]))
    res = run_report_inproc("--locust", str(folder), "--out", str(tmp_path / "out"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "report.html").is_file()
    shutil.copy(folder / "locust_stats.csv", folder / "other_stats.csv")
    res = run_report_inproc("--locust", str(folder), "--out", str(tmp_path / "out2"), "--quiet")
    assert res.returncode != 0 and "holds several Locust runs" in res.stderr and "other" in res.stderr
