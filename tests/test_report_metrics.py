"""``loadkit report`` and issue #13: requests and loadkit metrics apart, honest rates, labelled runs.

Fixtures: ``tests/fixtures/locust/chldo_full_*`` is a real run recorded before loadkit had a metric
channel (ttft, chunks… are Locust request rows there); the "new" runs are built from it in the test
the way the master writes them now: request rows only in ``_stats.csv``/``_hdr.csv``, the metrics
in ``_metrics.csv`` with Kind and Unit. Expected numbers are read from the files with the csv
module and ``hdrh``, never from the report's own code.
"""

from __future__ import annotations

import csv
import html as html_lib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from hdrh.histogram import HdrHistogram

from report_helpers import FIXTURES, METRIC_NAMES, run_report_inproc

OLD = FIXTURES / "locust" / "chldo_full"
UNITS = {"chunks": ("count", "count"), "chars": ("count", "count"), "chunks_per_s": ("rate", "1/s")}  # else latency, ms
REQUESTS = {"connect", "sendmsg"}


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def _copy_old(tmp_path, name="run"):
    for src in OLD.parent.glob(OLD.name + "_*"):
        shutil.copy(src, tmp_path / (name + src.name[len(OLD.name):]))
    return tmp_path / name


def _new_style(tmp_path, name="run", keep_metric_rows: set[str] = frozenset()):
    """The old fixture as the master writes it since issue #13: requests in _stats/_hdr, metrics in _metrics.csv."""
    prefix = _copy_old(tmp_path, name)
    stats = _rows(f"{prefix}_stats.csv")
    cols = list(stats[0])
    req = [r for r in stats if r["Name"] in REQUESTS | keep_metric_rows]
    agg = next(r for r in stats if r["Name"] == "Aggregated")
    agg = {**agg, "Request Count": sum(int(r["Request Count"]) for r in req), "Failure Count": sum(int(r["Failure Count"]) for r in req)}
    _write(f"{prefix}_stats.csv", req + [agg], cols)
    hdr = _rows(f"{prefix}_hdr.csv")
    hcols = list(hdr[0])
    _write(f"{prefix}_hdr.csv", [r for r in hdr if r["Name"] in REQUESTS | keep_metric_rows], hcols)
    metrics = []
    for r in hdr:
        if r["Name"] in METRIC_NAMES:
            kind, unit = UNITS.get(r["Name"], ("latency", "ms"))
            metrics.append({**r, "Kind": kind, "Unit": unit})
    mcols = ["Type", "Name", "Kind", "Unit", "Count", "Min", "Mean", "Max", "50%", "75%", "90%", "95%", "99%", "99.9%", "99.99%", "Histogram"]
    _write(f"{prefix}_metrics.csv", metrics, mcols)
    hist = _rows(f"{prefix}_stats_history.csv")
    _write(f"{prefix}_stats_history.csv", [r for r in hist if r["Name"] in REQUESTS | {"Aggregated"}], list(hist[0]))
    return prefix, metrics


def _report(tmp_path, *args):
    out = tmp_path / "out"
    res = run_report_inproc(*args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    return out, res, html_lib.unescape((out / "report.html").read_text(encoding="utf-8"))


def test_metrics_file_is_shown_in_its_units_grouped_by_kind(tmp_path):
    prefix, metrics = _new_style(tmp_path)
    out, res, page = _report(tmp_path, "--locust", str(prefix))
    got = pd.read_csv(out / "metrics.csv").set_index("name")
    assert set(got.index) == {m["Name"] for m in metrics}
    for m in metrics:
        row = got.loc[m["Name"]]
        assert (row["kind"], row["unit"], int(row["count"])) == (m["Kind"], m["Unit"], int(m["Count"]))
        for col, src in (("p50", "50%"), ("p90", "90%"), ("p95", "95%"), ("p99", "99%"), ("p99.9", "99.9%"), ("max", "Max")):
            assert row[col] == pytest.approx(float(src and m[src]), abs=1e-3), (m["Name"], col)
    # one table per kind, latencies first; count and rate metrics never under a ms header
    section = page[page.index('<h2 id="metrics">'):page.index("<h2", page.index('<h2 id="metrics">') + 5)]
    tables = section.split("<table")[1:]
    assert [t.split('data-kind="')[1].split('"')[0] for t in tables] == ["latency", "count", "rate"]
    assert "latencies (ms)" in tables[0] and "counts (count)" in tables[1] and "rates (1/s)" in tables[2]
    rate_row = tables[2].split('<td class="l">chunks_per_s</td>')[1].split("</tr>")[0]
    mps = next(m for m in metrics if m["Name"] == "chunks_per_s")
    assert f"<td>{float(mps['50%']):,.0f}</td>" in rate_row and "<td class=\"l\">1/s</td>" in rate_row
    assert "ms" not in tables[1] + tables[2]
    n_lat = sum(m["Kind"] == "latency" for m in metrics)
    assert f"all {n_lat} latency metrics in ms; not on a ms axis, in the table only: chars, chunks, chunks_per_s" in page
    # the summary holds requests only, and the console lists the metrics with their unit
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["operation"]) == REQUESTS | {"Aggregated"}
    line = next(x for x in res.stdout.splitlines() if " chunks_per_s " in x)
    assert line.rstrip().endswith("1/s") and " rate " in line


def test_an_old_run_keeps_its_metric_rows_out_of_the_requests(tmp_path):
    prefix = _copy_old(tmp_path)
    out, res, page = _report(tmp_path, "--locust", str(prefix))
    stats = _rows(f"{prefix}_stats.csv")
    req = [r for r in stats if r["Name"] in REQUESTS]
    agg_locust = next(r for r in stats if r["Name"] == "Aggregated")
    n_req = sum(int(r["Request Count"]) for r in req)
    summary = pd.read_csv(out / "summary.csv").set_index("operation")
    assert set(summary.index) == REQUESTS | {"Aggregated"}
    assert summary.at["Aggregated", "count"] == n_req < int(agg_locust["Request Count"])
    # requests/s over Locust's own run duration (its Aggregated count ÷ rps), requests only
    duration = int(agg_locust["Request Count"]) / float(agg_locust["Requests/s"])
    assert summary.at["Aggregated", "rps"] == pytest.approx(n_req / duration, rel=1e-3)
    # Aggregated percentiles: the requests' exact histograms added together (hdrh's own add)
    hdr = {r["Name"]: r for r in _rows(f"{prefix}_hdr.csv")}
    pooled = HdrHistogram.decode(hdr["sendmsg"]["Histogram"])
    pooled.add(HdrHistogram.decode(hdr["connect"]["Histogram"]))
    for col, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert summary.at["Aggregated", col] == pytest.approx(pooled.get_value_at_percentile(q) / 1000.0, abs=1e-3), col
    # the metrics are there, with their units, from the exact histograms
    metrics = pd.read_csv(out / "metrics.csv").set_index("name")
    assert set(metrics.index) == {r["Name"] for r in stats} - REQUESTS - {"Aggregated"}
    assert metrics.at["chunks_per_s", "unit"] == "1/s" and metrics.at["ttft", "unit"] == "ms"
    assert metrics.at["ttft", "p99"] == pytest.approx(float(hdr["ttft"]["99%"]), abs=1e-3)
    assert "recorded before loadkit had its own metrics channel" in res.stdout
    # throughput over time: the request rows' cumulative counts, not Locust's Aggregated one
    hist = _rows(f"{prefix}_stats_history.csv")
    ts = pd.read_csv(out / "timeseries.csv")
    agg = ts[ts["operation"] == "Aggregated"].sort_values("t")
    assert set(ts["operation"]) == REQUESTS | {"Aggregated"}
    last = max(int(r["Timestamp"]) for r in hist)
    first = min(int(r["Timestamp"]) for r in hist)
    counted = np.nansum(agg["rps"].to_numpy()[1:] * np.diff(agg["t"].to_numpy()))
    at = {int(r["Timestamp"]): 0 for r in hist}
    for r in hist:
        if r["Name"] in REQUESTS:
            at[int(r["Timestamp"])] += int(r["Total Request Count"])
    assert counted == pytest.approx(at[last] - at[first], abs=0.5)


def test_metric_rows_also_sent_as_requests_are_shown_once(tmp_path):
    prefix, metrics = _new_style(tmp_path, keep_metric_rows={"ttft"})  # the opt-in "phases as request rows" too
    out, res, _ = _report(tmp_path, "--locust", str(prefix))
    summary = pd.read_csv(out / "summary.csv").set_index("operation")
    assert "ttft" not in summary.index
    assert summary.at["Aggregated", "count"] == sum(int(r["Request Count"]) for r in _rows(f"{prefix}_stats.csv") if r["Name"] in REQUESTS)
    got = pd.read_csv(out / "metrics.csv")
    assert (got["name"] == "ttft").sum() == 1
    assert "also has 1 loadkit metric(s) as request rows (ttft)" in res.stdout


@pytest.mark.parametrize("text, says", [
    ("Type,Name,Kind,Unit,Count,Min,Mean,Max,50%,75%,90%,95%,99%,99.9%,99.99%,Histogram\nchldo,chunks,bytes,count,3,1,1,1,1,1,1,1,1,1,1,\n",
     "line 2, 'Kind': 'bytes' is not one of latency, count, rate"),
    ("Type,Name,Count\nchldo,ttft,3\n", "missing column(s) Kind, Unit"),
    ("Type,Name,Kind,Unit,Count,Min,Mean,Max,50%,75%,90%,95%,99%,99.9%,99.99%,Histogram\nchldo,ttft,latency,ms,3,1,1,1,1,1,1,1,1,1,1,bm90aGlzdA==\n",
     "not a base64 HdrHistogram"),
    ("Type,Name,Kind,Unit,Count,Min,Mean,Max,50%,75%,90%,95%,99%,99.9%,99.99%,Histogram\nktb,unfinished_age,latency,ms,3,1,1,1,1,1,1,1,1,1,1,\n"
     "chldo,unfinished_age,latency,ms,3,1,1,1,1,1,1,1,1,1,1,\nktb,unfinished_age,latency,ms,2,1,1,1,1,1,1,1,1,1,1,\n",
     "lines 2 and 4 both hold Type 'ktb', Name 'unfinished_age'"),
])
def test_a_bad_metrics_file_is_one_line_naming_it(tmp_path, text, says):
    prefix, _ = _new_style(tmp_path)
    (tmp_path / "run_metrics.csv").write_text(text)
    res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(tmp_path / "run_metrics.csv") in res.stderr and says in res.stderr, res.stderr


def test_a_metrics_file_with_only_its_header_means_no_metrics(tmp_path):
    prefix, _ = _new_style(tmp_path)
    (tmp_path / "run_metrics.csv").write_text("Type,Name,Kind,Unit,Count,Min,Mean,Max,50%,75%,90%,95%,99%,99.9%,99.99%,Histogram\n")
    out, _, page = _report(tmp_path, "--locust", str(prefix))
    assert '<h2 id="metrics">' not in page and not (out / "metrics.csv").exists()


def _metric_row(typ: str, name: str, values_ms: list[float]) -> dict:
    """One _metrics.csv row as the master writes it: an HdrHistogram of value × 1000 and its figures."""
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in values_ms:
        h.record_value(int(v * 1000))
    pct = {c: h.get_value_at_percentile(q) / 1000 for c, q in (("50%", 50), ("75%", 75), ("90%", 90), ("95%", 95), ("99%", 99),
                                                                  ("99.9%", 99.9), ("99.99%", 99.99))}  # fmt: skip
    return {"Type": typ, "Name": name, "Kind": "latency", "Unit": "ms", "Count": h.get_total_count(), "Min": h.get_min_value() / 1000,
            "Mean": h.get_mean_value() / 1000, "Max": h.get_max_value() / 1000, **pct, "Histogram": h.encode().decode()}


def test_one_metric_name_of_two_types_is_two_metrics(tmp_path):
    # a run that ended with requests of both protocols still waiting: unfinished_age is a ktb row and a
    # chldo row of _metrics.csv (the k8s test's 8 s run: "internal error: ValueError: The truth value
    # of a Series is ambiguous", from the metric chart indexing the two rows by name)
    _stats(tmp_path / "run_stats.csv", {"connect": 3})
    rows = [_metric_row("chldo", "ttft", [300.0, 310.0, 320.0]), _metric_row("chldo", "unfinished_age", [1169.4, 1180.0, 1201.1]),
            _metric_row("ktb", "unfinished_age", [9.696])]  # fmt: skip
    _write(tmp_path / "run_metrics.csv", rows, list(rows[0]))
    out, res, page = _report(tmp_path, "--locust", str(tmp_path / "run"))
    got = pd.read_csv(out / "metrics.csv", keep_default_na=False).set_index(["type", "name"])
    assert len(got) == 3
    for r in rows:
        row = got.loc[(r["Type"], r["Name"])]
        assert int(row["count"]) == r["Count"] and row["p50"] == pytest.approx(r["50%"], abs=1e-3), r["Type"]
    # told apart wherever only a label is shown: console, chart caption, chart
    lines = {x.split()[2] + " " + x.split()[3]: x for x in res.stdout.splitlines() if "unfinished_age" in x}
    assert set(lines) == {"chldo unfinished_age", "ktb unfinished_age"}
    assert f"{rows[2]['50%']:.2f}" in lines["ktb unfinished_age"] and f"{rows[1]['50%']:,.0f}" in lines["chldo unfinished_age"]
    assert "all 3 latency metrics in ms." in page
    # each keeps its own histogram
    from loadkit.reports.locust_csv import read_locust_run

    run = read_locust_run(str(tmp_path / "run"), "run")
    assert {k: int(c.sum()) for k, (_, c) in run.metric_histograms.items()} == {(r["Type"], r["Name"]): r["Count"] for r in rows}


def _history(path, rows: list[tuple[int, int, int]], name="op") -> None:
    """A --csv-full-history file: (timestamp, users, cumulative requests) per second, one operation."""
    cols = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "95%", "100%", "Total Request Count",
            "Total Failure Count", "Total Max Response Time"]
    out = []
    for ts, users, total in rows:
        for typ, n in (("ktb", name), ("", "Aggregated")):
            out.append({"Timestamp": ts, "User Count": users, "Type": typ, "Name": n, "Requests/s": 0, "Failures/s": 0, "50%": 5,
                        "95%": 9, "100%": 12, "Total Request Count": total, "Total Failure Count": 0, "Total Max Response Time": 12})
    _write(path, out, cols)


def _stats(path, ops: dict[str, int]) -> None:
    cols = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time", "Average Response Time", "Min Response Time",
            "Max Response Time", "Average Content Size", "Requests/s", "Failures/s", "50%", "90%", "95%", "99%", "100%"]
    rows = [{"Type": "ktb", "Name": n, "Request Count": c, "Failure Count": 0, "Median Response Time": 5, "Average Response Time": 5,
             "Min Response Time": 1, "Max Response Time": 12, "Average Content Size": 0, "Requests/s": c / 20, "Failures/s": 0,
             "50%": 5, "90%": 8, "95%": 9, "99%": 11, "100%": 12} for n, c in ops.items()]
    total = sum(ops.values())
    rows.append({**rows[0], "Type": "", "Name": "Aggregated", "Request Count": total, "Requests/s": total / 20})
    _write(path, rows, cols)


def test_no_spike_after_the_users_stopped(tmp_path):
    # a distributed master: workers reporting every 3 s, 30 req/s in all; after t=21 the users stop and
    # the workers' final reports (up to 3 s of requests each) land at once
    rows, total = [], 0
    for t in range(22):
        if t and t % 3 == 0:
            total += 90
        rows.append((1_800_000_000 + t, 10 if t >= 1 else 0, total))
    rows.append((1_800_000_000 + 22, 0, total + 150))
    _history(tmp_path / "run_stats_history.csv", rows)
    _stats(tmp_path / "run_stats.csv", {"op": total + 150})
    out, res, _ = _report(tmp_path, "--locust", str(tmp_path / "run"))
    ts = pd.read_csv(out / "timeseries.csv")
    agg = ts[ts["operation"] == "Aggregated"].sort_values("t")
    assert agg["rps"].max() == pytest.approx(30.0)  # never more than the steady rate
    users = agg["users"].to_numpy()
    after = agg["t"].to_numpy() > agg["t"].to_numpy()[np.flatnonzero(users > 0)[-1]]
    assert after.any() and np.isnan(agg["rps"].to_numpy()[after]).all()  # no rate drawn once no user runs
    assert "the last 150 requests were reported after that" in res.stdout
    summary = pd.read_csv(out / "summary.csv").set_index("operation")
    assert summary.at["Aggregated", "count"] == total + 150  # the totals keep them


def test_charts_say_which_operations_they_leave_out(tmp_path):
    ops = {f"op{i:02d}": 1000 - i for i in range(13)}
    ops["rare"] = 2
    cols = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", "50%", "95%", "100%", "Total Request Count",
            "Total Failure Count", "Total Max Response Time"]
    rows = []
    for t in range(10):
        for n, c in ops.items():
            if n == "rare" and t < 8:
                continue  # seen in 2 time steps only
            rows.append({"Timestamp": 1_800_000_000 + t, "User Count": 5, "Type": "ktb", "Name": n, "Requests/s": 1, "Failures/s": 0,
                         "50%": 5, "95%": 9, "100%": 12, "Total Request Count": c * t // 10, "Total Failure Count": 0,
                         "Total Max Response Time": 12})
        rows.append({**rows[-1], "Type": "", "Name": "Aggregated"})
    _write(tmp_path / "run_stats_history.csv", rows, cols)
    _stats(tmp_path / "run_stats.csv", ops)
    out, _, page = _report(tmp_path, "--locust", f"ktb={tmp_path / 'run'}")
    over_time = page[page.index("<h2>Latency percentiles over time</h2>"):]
    caption = over_time[:over_time.index("<img")]
    assert "top 10 of 13 operations with a curve (by count); not drawn: op10, op11, op12" in caption
    assert "fewer than 3 time points, no curve: rare" in caption
    per_op = page[page.index("<h2>Latency percentiles per operation</h2>"):]
    assert "all 14 operations" in per_op[:per_op.index("<img")]


def test_ms_axis_ticks_stay_in_ms():
    import matplotlib.pyplot as plt

    from loadkit.reports import charts

    fig, ax = plt.subplots()
    ax.plot([1, 8000], [0, 1])
    ax.set_xscale("log")
    charts._log_axis(ax.xaxis, 1, 8000)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert labels and "1,000" in labels
    assert all(lab.replace(",", "").replace(".", "").isdigit() for lab in labels), labels  # no "1 s" on a ms axis
    fmt = charts._ms_formatter()
    assert [fmt(v, 0) for v in (0.5, 20, 1500, 20000)] == ["0.5", "20", "1,500", "20,000"]


def test_run_is_labelled_by_its_scenario_and_warnings_are_shown(tmp_path):
    from loadkit.demo_results import shared_cpu_note, write_run_json

    folder = tmp_path / "20260101-120000"
    folder.mkdir()
    prefix = _copy_old(folder, "locust")  # the demo's layout: reports/<timestamp>/locust_*
    note = shared_cpu_note(["KTB", "chldo"], 2, 2)
    write_run_json(prefix, FIXTURES.parent.parent / "locustfiles" / "mixed.py", [note])
    t0 = int(_rows(f"{prefix}_stats_history.csv")[0]["Timestamp"])
    (folder / "locust_saturation.csv").write_text(
        f"Worker,Start,End,Seconds,Mean CPU %,Peak CPU %\n1 (host-a pid 42),{t0 + 1}.2,{t0 + 8}.2,7.0,96.4,100.0\n")
    out, res, page = _report(tmp_path, "--locust", str(prefix))
    assert "locust · locust" not in page and "locust mixed" in page
    assert pd.read_csv(out / "summary.csv")["run"].unique().tolist() == ["mixed"]
    box = page[page.index('class="warning"'):page.index("<h2>Summary</h2>")]
    assert note in box  # the demo's CPU-sharing warning, now in the report too
    assert "worker 1 (host-a pid 42)'s own CPU stayed at or above 90 %" in box and "7 s" in box and "mean 96 %" in box
    assert "t = 1–8 s" in box
    assert sum("generator saturated" in line and line.startswith("WARNING") for line in res.stdout.splitlines()) == 1
    assert "Red bands: a load generator's CPU" in page  # drawn on the throughput chart, and said


def test_unlabelled_demo_prefix_is_named_after_its_folder_and_no_saturation_is_said(tmp_path):
    folder = tmp_path / "20260101-120000"
    folder.mkdir()
    prefix = _copy_old(folder, "locust")
    (folder / "locust_saturation.csv").write_text("Worker,Start,End,Seconds,Mean CPU %,Peak CPU %\n")
    out, res, page = _report(tmp_path, "--locust", str(prefix))
    assert pd.read_csv(out / "summary.csv")["run"].unique().tolist() == ["20260101-120000"]
    assert 'class="warning"' not in page and "Red bands" not in page
    assert "no worker stayed at or above 90 % for 5 s or more" in res.stdout


def test_two_demo_runs_of_one_scenario_get_their_folders_in_the_label(tmp_path):
    from loadkit.demo_results import write_run_json

    prefixes = []
    for stamp in ("20260101-120000", "20260102-120000"):
        (tmp_path / stamp).mkdir()
        prefixes.append(_copy_old(tmp_path / stamp, "locust"))
        write_run_json(prefixes[-1], tmp_path / "mixed.py", [])
    out, _, _ = _report(tmp_path, "--locust", str(prefixes[0]), "--locust", str(prefixes[1]))
    assert pd.read_csv(out / "summary.csv")["run"].unique().tolist() == ["mixed", "mixed (20260102-120000)"]


@pytest.mark.parametrize("name, text, says", [
    ("locust_saturation.csv", "Worker,Start,End,Seconds,Mean CPU %,Peak CPU %\n1,10,5,5,95,99\n", "End 5 is before Start 10"),
    ("locust_saturation.csv", "Worker,Start\n1,10\n", "missing column(s) End"),
    ("locust_run.json", json.dumps({"scenario": "x", "warnings": "not a list"}), "'warnings' must be a list of strings"),
    ("locust_run.json", "{", "not valid JSON"),
])
def test_bad_run_facts_files_are_one_line_naming_them(tmp_path, name, text, says):
    prefix = _copy_old(tmp_path, "locust")
    (tmp_path / name).write_text(text)
    res = run_report_inproc("--locust", str(prefix), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(tmp_path / name) in res.stderr and says in res.stderr, res.stderr


def test_pooled_percentiles_equal_hdrh_add():
    from loadkit.reports.locust_metrics import decode_histogram, pooled_percentiles

    rng = np.random.default_rng(7)
    hists = []
    for scale in (1_000, 50_000, 900):
        h = HdrHistogram(1, 3_600_000_000, 3)
        for v in rng.lognormal(np.log(scale), 0.7, 700).astype(int) + 1:
            h.record_value(int(v))
        hists.append(h)
    total = HdrHistogram(1, 3_600_000_000, 3)
    for h in hists:
        total.add(h)
    arrays = [decode_histogram(None, "test", h.encode().decode()) for h in hists]
    got = pooled_percentiles(arrays, (50, 90, 95, 99, 99.9, 100))
    want = [total.get_value_at_percentile(q) / 1000.0 for q in (50, 90, 95, 99, 99.9, 100)]
    assert got == pytest.approx(want, abs=1e-9)
