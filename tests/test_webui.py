"""The loadkit tabs of Locust's web UI: in-process through Flask's test client, and in a real
browser (headless Chromium) on a distributed run checked against the run's ``_hdr.csv`` /
``_metrics.csv``."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from locust import User
from locust.env import Environment
from locust.event import Events

from loadkit import plugin
from loadkit.metrics import counters, failures, hdr, saturation, webui
from loadkit.metrics.histograms import CSV_COLUMNS, METRIC_COLUMNS, read_csv
from loadkit.metrics.saturation import Interval
from loadkit.procs import free_port, loadkit_argv

ROOT = Path(__file__).resolve().parent.parent
PCT = {"p50": "50%", "p90": "90%", "p95": "95%", "p99": "99%", "p999": "99.9%", "max": "Max"}


class _Nobody(User):
    pass


def _clear_all() -> None:
    hdr.STORE.clear()
    hdr.METRICS.clear()
    failures.FAILURES.clear()
    counters.clear()
    saturation.RECORD.clear()
    webui.LIVE.restart()


@pytest.fixture
def web_env(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["locust"])  # the web UI parses the command line for its form
    _clear_all()
    env = Environment(user_classes=[_Nobody], events=Events())
    env.create_local_runner()
    env.create_web_ui("127.0.0.1", 0, delayed_start=True)
    assert plugin.install(env)
    yield env, env.web_ui.app.test_client()
    _clear_all()


def _fire(env, request_type, name, ms, exception=None):
    env.events.request.fire(request_type=request_type, name=name, response_time=ms, response_length=0,
                            exception=exception, context={})


class RateLimited(Exception):
    pass


def _tab(client, key):
    stats = client.get("/stats/requests").json
    return next(t["data"] for t in stats["extended_stats"] if t["key"] == key)


def test_tab_rows_are_the_csv_rows_with_units_failures_and_no_metric_among_requests(web_env, tmp_path):
    env, client = web_env
    for i in range(200):
        _fire(env, "ktb", "chatMessage", 2.0 + i * 0.137, RateLimited("slow down") if i % 50 == 0 else None)
        hdr.METRICS.record("chldo", "ttft", 300.0 + i / 7)
        hdr.METRICS.record("chldo", "chunks", 40 + i % 5)
    _fire(env, "chldo", "sendmsg", 1234.5, ValueError("boom"))
    rows = {(r["type"], r["operation"]): r for r in _tab(client, webui.TAB)}

    hdr.STORE.write_csv(tmp_path / "x_hdr.csv")
    hdr.METRICS.write_metrics_csv(tmp_path / "x_metrics.csv")
    files = {**read_csv(tmp_path / "x_hdr.csv"), **read_csv(tmp_path / "x_metrics.csv", METRIC_COLUMNS)}
    assert set(rows) == set(files) == {("ktb", "chatMessage"), ("chldo", "sendmsg"), ("", "Aggregated"),
                                       ("chldo", "ttft"), ("chldo", "chunks")}
    for key, row in rows.items():
        assert row["count"] == files[key]["Count"], key
        for col, csv_col in PCT.items():
            assert row[col] == pytest.approx(files[key][csv_col], abs=1e-9), (key, col)
    assert (rows["ktb", "chatMessage"]["kind"], rows["ktb", "chatMessage"]["unit"]) == ("request", "ms")
    assert (rows["chldo", "chunks"]["kind"], rows["chldo", "chunks"]["unit"]) == ("count", "count")
    assert (rows["chldo", "ttft"]["kind"], rows["chldo", "ttft"]["unit"]) == ("latency", "ms")
    assert rows["ktb", "chatMessage"]["failures"] == 4 and rows["chldo", "sendmsg"]["failures"] == 1
    assert rows["", "Aggregated"]["failures"] == 5 and rows["", "Aggregated"]["count"] == 201
    assert rows["chldo", "ttft"]["failures"] is None  # a metric has no failures, not zero of them
    events = _tab(client, webui.EVENTS_TAB)
    assert {(e["what"], e["type"], e["operation"], e["detail"], e["count"]) for e in events} == {
        ("failure", "ktb", "chatMessage", "RateLimited", 4), ("failure", "chldo", "sendmsg", "ValueError", 1)}


def test_fast_percentiles_equal_hdrh_percentiles_on_many_shapes():
    import random

    from loadkit.metrics.histograms import OpHistogram

    rng = random.Random(7)
    shapes = [lambda: rng.expovariate(1 / 20), lambda: rng.uniform(0, 0.01), lambda: 1000 + rng.paretovariate(1.2),
              lambda: rng.choice([0.001, 5.0, 3_600_000.0 * 2])]
    for n in (1, 2, 3, 7, 100, 5000):
        for shape in shapes:
            op = OpHistogram()
            op.record_many_ms([shape() for _ in range(n)])
            assert webui.percentiles_us(op) == op.percentiles_us(), (n, shape)
    merged = OpHistogram()
    for _ in range(3):
        part = OpHistogram()
        part.record_many_ms([rng.expovariate(1 / 50) for _ in range(999)])
        merged.add(OpHistogram.decode(part.encode(), part.count, part.sum_us, part.min_us, part.max_us))
    assert webui.percentiles_us(merged) == merged.percentiles_us()


def test_root_page_declares_the_tabs_and_the_downloads(web_env):
    _env, client = web_env
    page = client.get("/").get_data(as_text=True)
    start = page.index("window.templateArgs = ") + len("window.templateArgs = ")
    args, _ = json.JSONDecoder().raw_decode(page, start)
    assert {"title": "loadkit", "key": webui.TAB} in args["extended_tabs"]
    table = next(t for t in args["extended_tables"] if t["key"] == webui.TAB)
    assert [c["title"] for c in table["structure"]][:8] == ["Type", "Name", "Kind", "Unit", "Count", "Failures",
                                                            "Rate (/s)", "p50"]
    hrefs = {f["href"] for f in args["extended_csv_files"]}
    assert {"./loadkit/", "./loadkit/csv", "./loadkit/saturation.csv"} <= hrefs
    assert client.get("/loadkit/").status_code == 200
    assert "<svg" not in client.get("/loadkit/").get_data(as_text=True)[:200]  # drawn by the page's JS


def test_reset_stats_clears_the_tab_and_csv_download_follows(web_env):
    env, client = web_env
    _fire(env, "ktb", "chatMessage", 5.0)
    hdr.METRICS.record("ktb", "delivery", 7.5)
    counters.counters("ktb").bump("unknown_event")
    text = client.get("/loadkit/csv").get_data(as_text=True)
    got = list(csv.DictReader(io.StringIO(text)))
    assert [(r["Type"], r["Name"], r["Kind"], r["Unit"], r["Count"], r["p50"]) for r in got] == [
        ("ktb", "chatMessage", "request", "ms", "1", "5.0"), ("", "Aggregated", "request", "ms", "1", "5.0"),
        ("ktb", "delivery", "latency", "ms", "1", "7.5")]
    assert {(e["what"], e["operation"]) for e in _tab(client, webui.EVENTS_TAB)} == {("counter", "unknown_event")}
    assert client.post("/stats/reset").status_code == 200
    assert _tab(client, webui.TAB) == [] and _tab(client, webui.EVENTS_TAB) == []
    assert client.get("/loadkit/csv").get_data(as_text=True).strip() == (
        "Type,Name,Kind,Unit,Count,Failures,Rate (/s),p50,p90,p95,p99,p99.9,Max")


def test_saturation_is_shown_and_downloadable(web_env):
    _env, client = web_env
    saturation.RECORD.add(Interval("worker-a", 1_700_000_000.0, 1_700_000_006.5, 97.2, 100.0))
    events = _tab(client, webui.EVENTS_TAB)
    assert [(e["what"], e["operation"], e["count"]) for e in events] == [("saturation", "worker-a", 6.5)]
    assert "mean 97 %, peak 100 % CPU" in events[0]["detail"]
    rows = list(csv.DictReader(io.StringIO(client.get("/loadkit/saturation.csv").get_data(as_text=True))))
    assert rows == [{"Worker": "worker-a", "Start": "1700000000.000", "End": "1700000006.500", "Seconds": "6.5",
                     "Mean CPU %": "97.2", "Peak CPU %": "100.0"}]
    assert client.get("/loadkit/data.json").json["saturation"][0]["Worker"] == "worker-a"


def test_chart_points_are_percentiles_of_each_interval_not_cumulative(web_env):
    _env, _client = web_env
    for _ in range(100):
        hdr.METRICS.record("chldo", "ttft", 10.0)
    webui.LIVE.sample_charts(now=1.0)
    webui.LIVE.sample_charts(now=2.0)  # nothing new: an empty interval
    for _ in range(100):
        hdr.METRICS.record("chldo", "ttft", 500.0)
    webui.LIVE.sample_charts(now=3.0)
    points = webui.LIVE.series[("chldo", "ttft")]
    assert points[0] == [1.0, 100, 10.0, 10.0, 10.0]
    assert points[1] == [2.0, 0, None, None, None]
    assert points[2][:2] == [3.0, 100] and points[2][2:] == [pytest.approx(500.0, rel=1e-3)] * 3
    charts = webui.LIVE.charts()
    assert [(c["type"], c["name"], c["unit"]) for c in charts] == [("chldo", "ttft", "ms")]


# ------------------------------------------------------------------------------------ real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium is not installed (Debian packages chromium and chromium-driver; .ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="loadkit-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1600,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver, profile


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


def _wait(what: str, check, timeout: float, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _read_table(driver, selector: str = "table") -> list[dict[str, str]]:
    """The first table matching ``selector``: header titles → cell texts, row by row (read in one
    script call, so a table the page redraws meanwhile cannot go stale under the reader)."""
    heads, rows = driver.execute_script(
        "const t = document.querySelector(arguments[0]); if (!t) return [[], []];"
        "const text = e => e.textContent.trim();"
        "return [[...t.querySelectorAll('thead th')].map(text),"
        "        [...t.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(text))];", selector)
    return [dict(zip(heads, cells)) for cells in rows]


def _num(text: str) -> float:
    return float(text) if text not in ("", None) else float("nan")


@pytest.mark.timeout(170)
def test_browser_loadkit_tab_of_a_distributed_run_matches_the_csvs(spawn, tmp_path):
    driver, profile = _browser()
    try:
        _run_distributed_and_check(spawn, tmp_path, driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _run_distributed_and_check(spawn, tmp_path, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sio, rest, chldo_port = free_port(), free_port(), free_port()
    spawn(loadkit_argv("serve", "ktb", "--host", "127.0.0.1", "--port", str(sio), "--rest-port", str(rest)),
          port=rest, name="ktb")
    spawn(loadkit_argv("serve", "chldo", "--host", "127.0.0.1", "--port", str(chldo_port)), port=chldo_port,
          name="chldo")
    master_port, web_port = free_port(), free_port()
    prefix = tmp_path / "run"
    mixed = str(ROOT / "locustfiles" / "mixed.py")
    master = spawn([sys.executable, "-m", "locust", "-f", mixed, "--master", "--master-bind-host", "127.0.0.1",
                    "--master-bind-port", str(master_port), "--web-host", "127.0.0.1", "--web-port", str(web_port),
                    "--csv", str(prefix), "--mixed-ktb-url", f"http://127.0.0.1:{rest}",
                    "--ktb-socket-url", f"http://127.0.0.1:{sio}", "--mixed-chldo-url", f"ws://127.0.0.1:{chldo_port}"],
                   port=web_port, name="master")
    for i in range(2):
        spawn([sys.executable, "-m", "locust", "-f", mixed, "--worker", "--master-host", "127.0.0.1",
               "--master-port", str(master_port)], name=f"worker{i}")
    base = f"http://127.0.0.1:{web_port}"
    _wait("2 workers", lambda: _get_json(f"{base}/stats/requests").get("worker_count") == 2, 60)

    # start the run with the web UI's own swarm form
    driver.get(base + "/")
    _wait("the swarm form", lambda: driver.find_elements(By.NAME, "userCount"), 30)

    def type_into(name: str, value: str) -> None:
        box = driver.find_element(By.NAME, name)
        box.send_keys(Keys.CONTROL, "a")  # React's controlled inputs ignore WebElement.clear()
        box.send_keys(value)
        assert box.get_attribute("value") == value, (name, box.get_attribute("value"))

    type_into("userCount", "6")
    type_into("spawnRate", "6")
    if not driver.find_element(By.NAME, "runTime").is_displayed():  # under "Advanced options"
        driver.find_element(By.XPATH, "//button[contains(., 'Advanced options')]").click()
        _wait("the run time field", lambda: driver.find_element(By.NAME, "runTime").is_displayed(), 10)
    type_into("runTime", "12s")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait("the run to start", lambda: _get_json(f"{base}/stats/requests")["state"] in ("spawning", "running"), 20)
    _wait("the run to stop by its run time", lambda: _get_json(f"{base}/stats/requests")["state"] == "stopped", 60, 1)

    # the workers' last reports (every 3 s) come after the stop: wait until the totals hold still
    def settled():
        first = _get_json(f"{base}/loadkit/data.json")["rows"]
        time.sleep(3.5)
        return first == _get_json(f"{base}/loadkit/data.json")["rows"] and first
    _wait("final worker reports", settled, 30, 0)

    # the loadkit tab on Locust's own page, as a user opens it
    driver.get(base + "/")
    tab = _wait("the loadkit tab", lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                            if e.text.strip().lower() == "loadkit"], 30)
    tab[0].click()
    shown = _wait("the loadkit table", lambda: len(_read_table(driver)) > 3 and _read_table(driver), 20)
    if os.environ.get("LOADKIT_SCREENSHOTS"):
        driver.save_screenshot(os.path.join(os.environ["LOADKIT_SCREENSHOTS"], "loadkit-tab.png"))
    assert list(shown[0]) == [title for _key, title in webui.COLUMNS]
    events_tab = [e for e in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                  if e.text.strip().lower() == "loadkit events"]
    events_tab[0].click()
    _wait("the events table", lambda: [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table thead th")]
          == [title for _key, title in webui.EVENT_COLUMNS], 20)
    shown_events = _read_table(driver)
    # the live page with the charts
    driver.get(base + "/loadkit/")
    _wait("the charts", lambda: driver.find_elements(By.CSS_SELECTOR, "#charts svg path.series"), 20)
    # (one script call: the page redraws its charts every 2 s, so element handles would go stale)
    charted = set(driver.execute_script(
        "return [...document.querySelectorAll('#charts svg')].filter(s => s.querySelector('path.series'))"
        ".map(s => s.dataset.name)"))
    if os.environ.get("LOADKIT_SCREENSHOTS"):  # to look at the page by eye
        driver.save_screenshot(os.path.join(os.environ["LOADKIT_SCREENSHOTS"], "loadkit-page.png"))
    page_rows = _read_table(driver, "#figures")

    # quitting makes the master write its final CSVs
    master.stop()
    hdr_rows = read_csv(f"{prefix}_hdr.csv", CSV_COLUMNS)
    metric_rows = read_csv(f"{prefix}_metrics.csv", METRIC_COLUMNS)
    with open(f"{prefix}_stats.csv", newline="") as f:
        locust_failures = {(r["Type"], r["Name"]): int(r["Failure Count"]) for r in csv.DictReader(f)}
    with open(f"{prefix}_saturation.csv", newline="") as f:
        sat_reader = csv.DictReader(f)
        assert tuple(sat_reader.fieldnames) == saturation.COLUMNS
        sat_rows = list(sat_reader)

    files = {**hdr_rows, **metric_rows}
    by_key = {(r["Type"], r["Name"]): r for r in shown}
    assert set(by_key) == set(files), set(by_key) ^ set(files)
    assert {"ttft", "som_to_eom", "delivery", "chunks"} <= {n for (_t, n) in metric_rows}
    assert {"sendmsg", "chatMessage"} <= {n for (_t, n) in hdr_rows}
    for key, row in by_key.items():
        expected = files[key]
        assert int(row["Count"]) == expected["Count"], (key, row, expected["Count"])
        for col, csv_col in (("p50", "50%"), ("p90", "90%"), ("p95", "95%"), ("p99", "99%"), ("p99.9", "99.9%"),
                             ("Max", "Max")):
            assert _num(row[col]) == pytest.approx(expected[csv_col], abs=0.0015), (key, col, row, expected[csv_col])
        if key in metric_rows:
            assert (row["Kind"], row["Unit"]) == (expected["Kind"], expected["Unit"]), key
            assert row["Failures"] == ""
        else:
            assert (row["Kind"], row["Unit"]) == ("request", "ms"), key
            assert int(row["Failures"]) == locust_failures[key], key
    # the live page shows the same figures as the tab (Locust's table may order them its own way)
    assert sorted(page_rows, key=lambda r: (r["Type"], r["Name"])) == sorted(shown, key=lambda r: (r["Type"], r["Name"]))
    assert {"chldo ttft", "chldo som_to_eom", "ktb chatMessage", "ktb delivery"} <= charted, charted
    # saturation: what the tab said is what the file holds (often nothing, on a quiet machine)
    shown_sat = sorted((r["Name"], float(r["Count"])) for r in shown_events if r.get("What") == "saturation")
    assert shown_sat == sorted((r["Worker"], float(r["Seconds"])) for r in sat_rows)
