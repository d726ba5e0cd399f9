"""Bad input to ``loadkit report``: one clear line naming the file and the problem, exit code != 0."""

from __future__ import annotations

import gzip
import shutil

import pytest

from report_helpers import FIXTURES, run_report, run_report_inproc

LOCUST = FIXTURES / "locust" / "chldo_full"
K6_JSON = FIXTURES / "k6" / "chldo.json.gz"
K6_CSV = FIXTURES / "k6" / "chldo_rfc3339.csv.gz"
K6_SUMMARY = FIXTURES / "k6" / "chldo_summary_export.json"


def _locust_copy(tmp_path):
    for src in LOCUST.parent.glob(LOCUST.name + "_*"):
        shutil.copy(src, tmp_path / ("run" + src.name[len(LOCUST.name):]))
    return tmp_path / "run"


def _truncate(path, keep_fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def _case(name, tmp_path):
    """(args, file the message must name, words the message must contain)."""
    p = _locust_copy(tmp_path)
    if name == "locust_missing":
        return ["--locust", str(tmp_path / "nope")], "nope_stats.csv", "not found"
    if name == "locust_truncated_stats":
        _truncate(tmp_path / "run_stats.csv")
        return ["--locust", str(p)], "run_stats.csv", "truncated"
    if name == "locust_truncated_history":
        _truncate(tmp_path / "run_stats_history.csv", 0.5)
        return ["--locust", str(p)], "run_stats_history.csv", "truncated"
    if name == "locust_empty_file":
        (tmp_path / "run_stats.csv").write_text("")
        return ["--locust", str(p)], "run_stats.csv", "empty"
    if name == "locust_empty_run":
        text = (tmp_path / "run_stats.csv").read_text().splitlines()
        header, agg = text[0], text[-1].split(",")
        agg[2:4] = ["0", "0"]
        (tmp_path / "run_stats.csv").write_text(header + "\n" + ",".join(agg) + "\n")
        return ["--locust", str(p)], "run_stats.csv", "no requests"
    if name == "locust_wrong_format":
        (tmp_path / "run_stats.csv").write_bytes(gzip.decompress(K6_CSV.read_bytes()))
        return ["--locust", str(p)], "run_stats.csv", "missing column"
    if name == "locust_bad_number":
        t = (tmp_path / "run_stats.csv").read_text().splitlines()
        f = t[1].split(",")
        f[2] = "many"
        t[1] = ",".join(f)
        (tmp_path / "run_stats.csv").write_text("\n".join(t) + "\n")
        return ["--locust", str(p)], "run_stats.csv", "not a number"
    if name == "hdr_garbage":
        t = (tmp_path / "run_hdr.csv").read_text().splitlines()
        t[1] = t[1].rsplit(",", 1)[0] + ",HISTFAAAAnotbase64atall"
        (tmp_path / "run_hdr.csv").write_text("\n".join(t) + "\n")
        return ["--locust", str(p)], "run_hdr.csv", "HdrHistogram"
    if name in ("locust_duplicate_row", "hdr_duplicate_row"):  # one (Type, Name) twice: pick neither silently
        f = tmp_path / ("run_stats.csv" if name == "locust_duplicate_row" else "run_hdr.csv")
        t = f.read_text().splitlines()
        i = next(i for i, line in enumerate(t) if ",sendmsg," in line)
        f.write_text("\n".join(t[:i + 1] + [t[i]] + t[i + 1:]) + "\n")
        return ["--locust", str(p)], f.name, f"lines {i + 1} and {i + 2} both hold Type 'chldo', Name 'sendmsg'"
    if name == "k6_json_truncated_gz":
        bad = tmp_path / "k6.json.gz"
        bad.write_bytes(K6_JSON.read_bytes()[:3000])
        return ["--k6-json", str(bad)], "k6.json.gz", "truncated"
    if name == "k6_json_truncated_line":
        bad = tmp_path / "k6.json"
        data = gzip.decompress(K6_JSON.read_bytes())
        bad.write_bytes(data[: len(data) - 40])
        return ["--k6-json", str(bad)], "k6.json", "truncated"
    if name == "k6_json_given_csv":
        bad = tmp_path / "k6.csv"
        bad.write_bytes(gzip.decompress(K6_CSV.read_bytes()))
        return ["--k6-json", str(bad)], "k6.csv", "not JSON"
    if name == "k6_json_given_summary":
        return ["--k6-json", str(K6_SUMMARY)], K6_SUMMARY.name, "--k6-summary"
    if name == "k6_summary_given_ndjson":
        return ["--k6-summary", str(K6_JSON)], K6_JSON.name, "--k6-json"
    if name == "k6_csv_given_json":
        return ["--k6-csv", str(K6_JSON)], K6_JSON.name, "not a k6 --out csv"
    if name == "k6_json_empty_run":
        bad = tmp_path / "meta_only.json"
        lines = gzip.decompress(K6_JSON.read_bytes()).splitlines(keepends=True)
        bad.write_bytes(b"".join(line for line in lines if b'"type":"Metric"' in line))
        return ["--k6-json", str(bad)], "meta_only.json", "empty run"
    if name == "k6_csv_truncated":
        bad = tmp_path / "k6.csv"
        data = gzip.decompress(K6_CSV.read_bytes())
        bad.write_bytes(data[: data.rfind(b",", 0, len(data) - 10) - 20])
        return ["--k6-csv", str(bad)], "k6.csv", "truncated"
    if name == "k6_summary_not_k6":
        bad = tmp_path / "other.json"
        bad.write_text('{"hello": 1}')
        return ["--k6-summary", str(bad)], "other.json", "not a k6 summary"
    if name == "k6_missing":
        return ["--k6-json", str(tmp_path / "absent.json")], "absent.json", "not found"
    if name == "out_is_a_file":
        f = tmp_path / "file"
        f.write_text("x")
        return ["--locust", str(p), "--out", str(f)], "file", "not a directory"
    if name == "no_input":
        return [], None, "no input"
    raise AssertionError(name)


CASES = [
    "locust_missing", "locust_truncated_stats", "locust_truncated_history", "locust_empty_file", "locust_empty_run",
    "locust_wrong_format", "locust_bad_number", "hdr_garbage", "locust_duplicate_row", "hdr_duplicate_row", "k6_json_truncated_gz", "k6_json_truncated_line",
    "k6_json_given_csv", "k6_json_given_summary", "k6_summary_given_ndjson", "k6_csv_given_json", "k6_json_empty_run",
    "k6_csv_truncated", "k6_summary_not_k6", "k6_missing", "out_is_a_file", "no_input",
]  # fmt: skip


# these also run as a real subprocess (the exact stderr a user sees, interpreter exit code)
SUBPROCESS = {"locust_truncated_stats", "k6_json_truncated_gz", "k6_json_given_csv", "no_input"}


@pytest.mark.parametrize("name", CASES)
def test_bad_input_gives_one_clear_line(tmp_path, name):
    args, must_name, words = _case(name, tmp_path)
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path / "out")]
    res = run_report(*args) if name in SUBPROCESS else run_report_inproc(*args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("loadkit report: error: "), lines[0]
    if must_name:
        assert must_name in lines[0], lines[0]
    assert words.lower() in lines[0].lower(), lines[0]
    assert not (tmp_path / "out" / "report.html").exists()
