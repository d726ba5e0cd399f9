"""``loadkit report`` on k6 outputs recorded from a real run of k6/chldo_stream.js (tests/fixtures/k6)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from report_helpers import METRIC_NAMES, K6_FIXTURES, raw_k6_failures, raw_k6_samples, requests_and_metrics, run_report, run_report_inproc

JSON_GZ = K6_FIXTURES / "chldo.json.gz"


@pytest.fixture(scope="module")
def json_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("k6json")
    res = run_report("--k6-json", f"k6run={JSON_GZ}", "--out", str(out), "--title", "k6 fixture")
    assert res.returncode == 0, res.stderr
    return out, res


def test_counts_and_percentiles_match_raw_samples(json_report):
    out, _ = json_report
    summary = pd.read_csv(out / "summary.csv")
    both = requests_and_metrics(out)
    raw = raw_k6_samples(JSON_GZ)
    fails = raw_k6_failures(JSON_GZ)
    assert {"sendmsg", "connect"} <= set(summary["operation"])
    assert {"ttft", "som_to_eom", "time_to_start"} <= set(both.loc[both["table"] == "metrics", "operation"])
    assert not set(summary["operation"]) & METRIC_NAMES  # phases are loadkit metrics, not requests
    for op, values in raw.items():
        row = both[(both["operation"] == op)].iloc[0]
        assert row["tool"] == "k6" and row["run"] == "k6run"
        assert row["count"] == values.size + fails.get(op, 0), op
        if op not in METRIC_NAMES:
            assert summary.set_index("operation").at[op, "failures"] == fails.get(op, 0), op
        for col, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            assert row[col] == pytest.approx(np.percentile(values, q), abs=1e-3), (op, col)
        assert row["max"] == pytest.approx(values.max(), abs=1e-3)
    # Aggregated counts requests only: the k6 Trends of requests plus their untimed failures
    agg = summary[summary["operation"] == "Aggregated"].iloc[0]
    requests = {op: v for op, v in raw.items() if op not in METRIC_NAMES}
    assert agg["count"] == sum(v.size for v in requests.values()) + sum(n for op, n in fails.items() if op not in METRIC_NAMES)
    assert agg["p50"] == pytest.approx(np.percentile(np.concatenate(list(requests.values())), 50), abs=1e-3)


def test_html_is_self_contained_and_shows_the_numbers(json_report):
    out, res = json_report
    html = (out / "report.html").read_text()
    assert "<title>k6 fixture</title>" in html
    assert html.count("data:image/png;base64,") >= 3
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    for png in ("throughput_users_errors.png", "latency_over_time.png", "percentiles_by_operation.png", "latency_distribution.png"):
        assert (out / png).stat().st_size > 5000, png
    raw = raw_k6_samples(JSON_GZ)
    n_sendmsg = raw["sendmsg"].size + raw_k6_failures(JSON_GZ).get("sendmsg", 0)
    assert f"<td>{n_sendmsg:,}</td>" in html
    p95 = np.percentile(raw["ttft"], 95)
    shown = f"{p95:.1f}" if p95 >= 10 else f"{p95:.2f}"
    assert shown in html
    assert "sendmsg" in res.stdout and "report:" in res.stdout  # console summary


def test_timeseries_counts_add_up(json_report):
    out, _ = json_report
    ts = pd.read_csv(out / "timeseries.csv")
    assert list(ts.columns[:9]) == ["tool", "run", "t", "operation", "rps", "p50", "p95", "users", "errors"]
    raw = raw_k6_samples(JSON_GZ)
    fails = raw_k6_failures(JSON_GZ)
    sendmsg = ts[ts["operation"] == "sendmsg"]
    # 1 s buckets: requests = rps * 1 s, summed over the run
    assert sendmsg["rps"].sum() == pytest.approx(raw["sendmsg"].size + fails.get("sendmsg", 0))
    assert sendmsg["errors"].sum() == pytest.approx(fails.get("sendmsg", 0))
    assert ts["users"].max() == 2  # the fixture ran --vus 2


@pytest.mark.parametrize("csv_name", ["chldo_rfc3339.csv.gz", "chldo_unix.csv.gz"])
def test_csv_output_gives_the_same_numbers(tmp_path, csv_name):
    res = run_report_inproc("--k6-csv", str(K6_FIXTURES / csv_name), "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = requests_and_metrics(tmp_path).set_index("operation")
    raw = raw_k6_samples(JSON_GZ)  # same run, other output
    for op, values in raw.items():
        # the CSV output rounds values to µs
        assert summary.at[op, "p95"] == pytest.approx(np.percentile(values, 95), abs=2e-3), op
        assert summary.at[op, "count"] >= values.size


@pytest.mark.parametrize("name", ["chldo_summary_export.json", "chldo_handle_summary.json"])
def test_summaries_carry_k6_own_percentiles(tmp_path, name):
    res = run_report_inproc("--k6-summary", str(K6_FIXTURES / name), "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = requests_and_metrics(tmp_path).set_index("operation")
    doc = json.loads((K6_FIXTURES / name).read_text())["metrics"]
    ttft = doc["ttft"].get("values", doc["ttft"])
    assert summary.at["ttft", "p95"] == pytest.approx(ttft["p(95)"], abs=1e-3)
    assert summary.at["ttft", "p50"] == pytest.approx(ttft["med"], abs=1e-3)
    raw = raw_k6_samples(JSON_GZ)
    assert summary.at["ttft", "p99"] == pytest.approx(np.percentile(raw["ttft"], 99), abs=1e-3)


def test_json_and_summary_of_one_run_make_one_run(tmp_path):
    res = run_report_inproc("--k6-json", str(JSON_GZ), "--k6-summary", str(K6_FIXTURES / "chldo_summary_export.json"), "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["run"].nunique() == 1


def test_ktb_fixture_operations_match_raw_samples(tmp_path):
    path = K6_FIXTURES / "ktb.json.gz"
    res = run_report_inproc("--k6-json", str(path), "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = requests_and_metrics(tmp_path).set_index("operation")
    raw = raw_k6_samples(path)
    for op in ("connect", "joinRoom", "chatMessage", "fetchPreviousMessages", "markMessagesAsRead", "messageReaction", "leaveRoom", "delivery"):
        assert op in raw, op
        assert summary.at[op, "count"] == raw[op].size + raw_k6_failures(path).get(op, 0)
        assert summary.at[op, "p95"] == pytest.approx(np.percentile(raw[op], 95), abs=1e-3)
    # REST calls are http_req_duration points named by their `name` tag, method as type
    assert pd.read_csv(tmp_path / "summary.csv").set_index("operation").at["/api/auth/login", "type"] == "POST"


@pytest.mark.parametrize("flag,name", [("--k6-json", "chldo.json.gz"), ("--k6-csv", "chldo_rfc3339.csv.gz")])
def test_failures_carry_kind_and_server_text(tmp_path, flag, name):
    res = run_report_inproc(flag, str(K6_FIXTURES / name), "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr
    failures = pd.read_csv(tmp_path / "failures.csv")
    n = raw_k6_failures(JSON_GZ).get("sendmsg", 0)
    assert n > 0  # the fixture was recorded with --llm-failure-rate 0.1
    assert failures["occurrences"].sum() == n
    assert failures["error"].str.startswith("stream_error: Error code: 503").all()
