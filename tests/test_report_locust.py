"""``loadkit report`` on Locust runs: a real short run against ``loadkit serve chldo``, and fixtures."""

from __future__ import annotations

import html as html_lib
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from loadkit.procs import free_port, loadkit_argv
from report_helpers import FIXTURES, METRIC_NAMES, ROOT, requests_and_metrics, run_report, run_report_inproc

LOCUST_FIXTURE = FIXTURES / "locust" / "chldo_full"


def _locustfile() -> str:
    """The project's chldo locustfile (fallback: our own copy); both write ``_hdr.csv``, because
    ``loadkit.users.chldo`` imports ``loadkit.metrics.hdr``."""
    project = ROOT / "locustfiles" / "chldo_stream.py"
    return str(project if project.exists() else FIXTURES / "locust" / "chldo_locustfile.py")


@pytest.mark.timeout(120)
def test_real_locust_run_numbers(spawn, tmp_path):
    port = free_port()
    spawn(loadkit_argv("serve", "chldo", "--host", "127.0.0.1", "--port", str(port), "--first-token-ms", "30",
                       "--token-ms", "3", "--answer-tokens", "6", "--llm-failure-rate", "0.1"), port=port, name="chldo")  # fmt: skip
    prefix = tmp_path / "run"
    locust = spawn(
        [sys.executable, "-m", "locust", "-f", _locustfile(), "--headless", "-u", "4", "-r", "4", "-t", "5s",
         "--host", f"ws://127.0.0.1:{port}", "--csv", str(prefix), "--csv-full-history", "--only-summary",
         "--chldo-think-time", "0.05", "--loglevel", "WARNING"],
        name="locust", cwd=str(ROOT),
    )  # fmt: skip
    locust.wait(60)
    assert (tmp_path / "run_stats.csv").exists(), locust.output()[-2000:]
    out = tmp_path / "report"
    res = run_report("--locust", f"chldo={prefix}", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "counts differ" not in res.stdout  # loadkit's final CSV write: _stats.csv counts = _hdr.csv counts

    stats = pd.read_csv(tmp_path / "run_stats.csv", keep_default_na=False)
    summary = pd.read_csv(out / "summary.csv")
    loc = summary[summary["tool"] == "locust"].set_index("operation")
    both = requests_and_metrics(out).set_index("operation")
    requests = stats[~stats["Name"].isin(METRIC_NAMES | {"Aggregated"})]
    for _, row in stats.iterrows():
        op = row["Name"]
        if op in METRIC_NAMES:  # a Locust row of a loadkit metric (runs before the metric channel): a metric here
            assert both.at[op, "table"] == "metrics" and both.at[op, "count"] == row["Request Count"], op
            continue
        if op == "Aggregated":  # requests only
            assert loc.at[op, "count"] == requests["Request Count"].sum()
            assert loc.at[op, "failures"] == requests["Failure Count"].sum()
            continue
        assert loc.at[op, "count"] == row["Request Count"], op
        assert loc.at[op, "failures"] == row["Failure Count"], op
        if row["Request Count"]:
            assert loc.at[op, "locust_p95"] == pytest.approx(float(row["95%"])), op
    assert loc.at["sendmsg", "count"] > 10

    # exact percentiles: recompute from the HdrHistogram bytes with hdrh itself (requests in _hdr.csv,
    # loadkit metrics in _hdr.csv or, since the metric channel, _metrics.csv)
    from hdrh.histogram import HdrHistogram

    hdr = pd.concat([pd.read_csv(tmp_path / f"run_{f}.csv", keep_default_na=False) for f in ("hdr", "metrics")
                     if (tmp_path / f"run_{f}.csv").exists()]).set_index("Name")  # fmt: skip
    for op in ("sendmsg", "ttft", "som_to_eom"):
        hist = HdrHistogram.decode(hdr.at[op, "Histogram"])
        assert (loc.at[op, "pct_source"] if op in loc.index else pd.read_csv(out / "metrics.csv").set_index("name").at[op, "source"]) == "hdr exact"
        for col, q in (("p50", 50), ("p95", 95), ("p99", 99)):
            assert both.at[op, col] == pytest.approx(hist.get_value_at_percentile(q) / 1000.0, rel=2e-3, abs=0.002), (op, col)

    html = (out / "report.html").read_text()
    assert f"<td>{int(loc.at['sendmsg', 'count']):,}</td>" in html
    assert html.count("data:image/png;base64,") == 5  # overview, over time, per operation, distribution, latency metrics

    ts = pd.read_csv(out / "timeseries.csv")
    assert set(ts["pct_window"]) == {"10s window"}
    assert {"sendmsg", "Aggregated"} <= set(ts["operation"])
    # the throughput curve integrates to the requests (not metric events) counted while users ran
    hist_csv = pd.read_csv(tmp_path / "run_stats_history.csv", keep_default_na=False)
    hist_csv = hist_csv.drop_duplicates(["Timestamp", "Type", "Name"], keep="last")
    users = hist_csv[hist_csv["Name"] == "Aggregated"].set_index("Timestamp")["User Count"]
    req_total = hist_csv[~hist_csv["Name"].isin(METRIC_NAMES | {"Aggregated"})].groupby("Timestamp")["Total Request Count"].sum()
    req_total = req_total.reindex(users.index).fillna(0)
    last_active = users[users > 0].index.max()
    agg = ts[ts["operation"] == "Aggregated"].sort_values("t")
    dt = np.diff(agg["t"].to_numpy(), prepend=np.nan)
    counted = np.nansum(agg["rps"].to_numpy()[1:] * dt[1:])
    assert counted == pytest.approx(req_total[last_active] - req_total.iloc[0], abs=0.5)
    assert np.isnan(agg.loc[agg["users"] == 0, "rps"].to_numpy()[-1:]).all()  # no rate once the users stopped
    assert agg["users"].max() == 4


def _copy_fixture(tmp_path, name="run"):
    for src in LOCUST_FIXTURE.parent.glob(LOCUST_FIXTURE.name + "_*"):
        shutil.copy(src, tmp_path / (name + src.name[len(LOCUST_FIXTURE.name):]))
    return tmp_path / name


def test_fixture_with_hdr_shows_both_values(tmp_path):
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(LOCUST_FIXTURE), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    html = (out / "report.html").read_text()
    assert "Locust's own (bucketed) value" in html_lib.unescape(html)
    hdr = pd.read_csv(str(LOCUST_FIXTURE) + "_hdr.csv", keep_default_na=False).set_index("Name")
    summary = pd.read_csv(out / "summary.csv").set_index("operation")
    assert summary.at["sendmsg", "p99"] == pytest.approx(hdr.at["sendmsg", "99%"], abs=1e-3)
    # ttft is a loadkit metric (this run predates the metric channel): exact, in metrics.csv
    metrics = pd.read_csv(out / "metrics.csv").set_index("name")
    assert metrics.at["ttft", "p99"] == pytest.approx(hdr.at["ttft", "99%"], abs=1e-3)
    # per-turn figures are not passed off as latencies: not in the requests' (ms) table, shown with their unit
    assert "chunks" not in set(summary.index)
    assert (metrics.at["chunks", "unit"], metrics.at["chunks", "kind"]) == ("count", "count")
    section = html_lib.unescape(html[html.index('<h2 id="metrics">'):])
    assert "<td class=\"l\">chunks</td>" in section.split("</table>")[1]  # the counts table, after the latencies


def test_without_full_history_percentiles_are_cumulative(tmp_path):
    prefix = _copy_fixture(tmp_path)
    hist = pd.read_csv(str(prefix) + "_stats_history.csv", keep_default_na=False, dtype=str)
    hist[hist["Name"] == "Aggregated"].to_csv(str(prefix) + "_stats_history.csv", index=False)
    (tmp_path / "run_hdr.csv").unlink()
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(prefix), "--out", str(out))
    assert res.returncode == 0, res.stderr
    ts = pd.read_csv(out / "timeseries.csv")
    assert set(ts["operation"]) == {"Aggregated"}
    assert set(ts["pct_window"]) == {"cumulative"}
    assert "cumulative since the start" in res.stdout
    summary = pd.read_csv(out / "summary.csv")
    requests = summary[summary["operation"] != "Aggregated"]
    assert set(requests["pct_source"]) == {"locust buckets"}
    # Locust's Aggregated pooled this old run's metric events with its requests: no percentile is passed off for it
    agg = summary[summary["operation"] == "Aggregated"].iloc[0]
    assert agg["count"] == requests["count"].sum() and pd.isna(agg["p50"])
    assert ts["rps"].isna().all()  # the Aggregated-only history counts metrics as requests: no throughput drawn from it


def test_four_column_failures_file(tmp_path):
    prefix = _copy_fixture(tmp_path)
    fail = pd.read_csv(str(prefix) + "_failures.csv", keep_default_na=False)
    fail[["Method", "Name", "Error", "Occurrences"]].to_csv(str(prefix) + "_failures.csv", index=False)
    out = tmp_path / "out"
    res = run_report_inproc("--locust", str(prefix), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    failures = pd.read_csv(out / "failures.csv")
    assert failures["occurrences"].sum() == fail["Occurrences"].sum()
    assert fail["Error"].iloc[0][:30] in html_lib.unescape((out / "report.html").read_text())


def test_locust_and_k6_side_by_side(tmp_path):
    out = tmp_path / "out"
    res = run_report_inproc("--locust", f"locust={LOCUST_FIXTURE}", "--k6-json", f"k6={FIXTURES / 'k6' / 'chldo.json.gz'}", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    summary = requests_and_metrics(out)
    both = summary.groupby("operation")["tool"].nunique()
    assert both[["sendmsg", "ttft", "som_to_eom", "connect", "time_to_start"]].eq(2).all()
