"""Live Prometheus metrics: the collector's series, and a real Prometheus server scraping a running
distributed run (master + 2 workers on 127.0.0.1 against the reference targets).

The integration test compares what Prometheus stored with the run's ``_hdr.csv`` (requests) and
``_metrics.csv`` (loadkit metrics): counts equal, quantiles within 1 %. Skipped with the reason when the ``prometheus`` binary is absent (``.ci/run``
installs Debian's package).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from loadkit.metrics.histograms import METRIC_COLUMNS, read_csv
from loadkit.procs import free_port, wait_for_port
from test_distributed import CORE_METRICS, CORE_OPERATIONS, assert_hdr_matches_locust

ROOT = Path(__file__).resolve().parent.parent
MIXED = str(ROOT / "locustfiles" / "mixed.py")
LOCUST = [sys.executable, "-m", "locust"]
PROMETHEUS = shutil.which("prometheus")
QUANTILE_COLUMNS = {"0.5": "50%", "0.9": "90%", "0.95": "95%", "0.99": "99%", "0.999": "99.9%"}


def scrape(registry) -> dict[str, list]:
    """Parse what ``/metrics`` would serve: ``{family name: [samples]}``."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_failure_class_reads_locust_error_strings():
    from loadkit.metrics.prometheus import failure_class

    assert failure_class("RateLimited('[ktb] chatMessage: RATE_LIMIT_EXCEEDED')") == "RateLimited"
    assert failure_class("CatchResponseError('HTTPError(\\'500 Server Error\\')')") == "HTTPError"
    assert failure_class("loadkit.protocols.chldo_turn.ChldoTimeout('no frame')") == "ChldoTimeout"
    assert failure_class(ValueError("x")) == "ValueError"
    assert failure_class("500 from server") == "other"
    assert failure_class(None) == "other"


def test_collector_serves_counts_failures_and_exact_quantiles(monkeypatch):
    from locust.stats import RequestStats

    from loadkit.metrics import hdr, prometheus
    from loadkit.metrics.histograms import HdrStore

    store, metrics = HdrStore(), HdrStore()
    monkeypatch.setattr(hdr, "STORE", store)
    monkeypatch.setattr(hdr, "METRICS", metrics)
    stats = RequestStats()
    values = [0.1 * i for i in range(1, 1001)]  # 0.1 .. 100 ms
    for v in values:
        store.record("ktb", "chatMessage", v)
        stats.log_request("ktb", "chatMessage", v, 0)
    for v in (3.0, 5.0, 7.0):
        metrics.record("chldo", "chunks", v)  # a loadkit metric: a count, not milliseconds
    metrics.record("chldo", "ttft", 300.0)
    for _ in range(3):
        stats.log_error("ktb", "chatMessage", "RateLimited('slow down')")
    stats.log_error("ktb", "chatMessage", "free text")
    env = SimpleNamespace(runner=SimpleNamespace(stats=stats, user_count=7, current_cpu_usage=42.0))
    prometheus.add_saturation_source("test", lambda: 0.25)
    prometheus.add_saturation_source("broken", lambda: 1 / 0)
    try:
        families = scrape(prometheus.make_registry(env))
    finally:
        prometheus._SATURATION.pop("test")
        prometheus._SATURATION.pop("broken")

    def value(family: str, sample: str | None = None, **labels) -> float:
        hits = [s.value for s in families[family] if (sample is None or s.name == sample)
                and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(hits) == 1, (family, labels, families.get(family))
        return hits[0]

    assert value("loadkit_requests", "loadkit_requests_total", type="ktb", name="chatMessage") == 1000
    assert value("loadkit_failures", "loadkit_failures_total", **{"class": "RateLimited"}) == 3
    assert value("loadkit_failures", "loadkit_failures_total", **{"class": "other"}) == 1
    expected = {"0.5": 50.0, "0.9": 90.0, "0.95": 95.0, "0.99": 99.0, "0.999": 99.9}
    for q, ms in expected.items():
        got = value("loadkit_hdr_quantile", type="ktb", name="chatMessage", quantile=q, unit="ms", kind="request")
        assert got == pytest.approx(ms, rel=0.001), q
    assert value("loadkit_hdr_count", type="ktb", name="chatMessage") == 1000
    assert value("loadkit_hdr_min", type="ktb", name="chatMessage") == pytest.approx(0.1)
    assert value("loadkit_hdr_max", type="ktb", name="chatMessage") == pytest.approx(100.0)
    assert value("loadkit_hdr_mean", type="ktb", name="chatMessage") == pytest.approx(50.05)
    # loadkit metrics come with their catalog kind and unit (a count is not milliseconds)
    assert value("loadkit_hdr_quantile", type="chldo", name="chunks", quantile="0.5") == pytest.approx(5.0, rel=0.001)
    assert value("loadkit_hdr_count", type="chldo", name="chunks", unit="count", kind="count") == 3
    assert value("loadkit_hdr_max", type="chldo", name="ttft", unit="ms", kind="latency") == pytest.approx(300.0)
    assert value("loadkit_users") == 7
    assert value("loadkit_generator_cpu_percent", node="local") == 42.0
    assert value("loadkit_generator_saturation", source="cpu") == pytest.approx(0.42)
    assert value("loadkit_generator_saturation", source="test") == 0.25
    assert not [s for s in families["loadkit_generator_saturation"] if s.labels["source"] == "broken"]
    assert value("loadkit_workers_connected") == 0 and value("loadkit_workers_lost") == 0
    assert "process_cpu_seconds" in families  # the master's own cost


def test_collector_counts_connected_and_lost_workers(monkeypatch):
    from locust.runners import MasterRunner
    from locust.stats import RequestStats

    from loadkit.metrics import prometheus, workers
    from loadkit.metrics.workers import WORKER_KEY, WorkerTracker

    class Master(MasterRunner):  # the master's view only; no sockets
        greenlet = None
        user_count = 5

        def __init__(self, nodes):
            self.clients = SimpleNamespace(all=nodes)
            self.environment = SimpleNamespace(stats=RequestStats())

    tracker = WorkerTracker()
    monkeypatch.setattr(workers, "TRACKER", tracker)
    now = time.time()
    tracker.on_connect("w0", 0, now=now)
    tracker.on_connect("w1", 1, now=now)
    tracker.on_report("w0", {WORKER_KEY: {}}, {"ktb connect": 4}, now=now)
    tracker.on_report("w1", {WORKER_KEY: {}}, {"ktb connect": 6}, now=now)
    nodes = [SimpleNamespace(id="w0", state="running", cpu_usage=30), SimpleNamespace(id="w1", state="missing", cpu_usage=99)]
    tracker.poll(SimpleNamespace(all=nodes))
    families = scrape(prometheus.make_registry(SimpleNamespace(runner=Master(nodes))))
    flat = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f}
    assert flat[("loadkit_workers_connected", ())] == 1
    assert flat[("loadkit_workers_lost", ())] == 1
    assert flat[("loadkit_workers", (("state", "missing"),))] == 1
    assert flat[("loadkit_worker_requests", (("worker", "w1"),))] == 6  # what the lost worker contributed
    assert flat[("loadkit_generator_cpu_percent", (("node", "w0"),))] == 30  # missing workers are left out
    assert flat[("loadkit_generator_saturation", (("source", "cpu"),))] == pytest.approx(0.30)
    assert flat[("loadkit_users", ())] == 5


# ------------------------------------------------------------------------------ real Prometheus


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


class Prom:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict]:
        answer = http_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def values(self, expr: str) -> dict[tuple, float]:
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in self.query(expr)}


def write_prometheus_config(path: Path, targets: dict[str, str]) -> None:
    jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{t}']\n" for job, t in targets.items())
    path.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}")


@pytest.mark.timeout(150)
def test_real_prometheus_scrapes_a_distributed_run(spawn, tmp_path):
    if not PROMETHEUS:
        pytest.skip("prometheus binary not installed (apt-get install prometheus); cannot scrape")
    rest, sio, chldo = free_port(), free_port(), free_port()
    ktb = spawn([sys.executable, "-m", "loadkit", "serve", "ktb", "--host", "127.0.0.1", "--port", str(sio),
                 "--rest-port", str(rest)], port=rest, name="ktb")
    wait_for_port("127.0.0.1", sio, proc=ktb.proc)
    spawn([sys.executable, "-m", "loadkit", "serve", "chldo", "--host", "127.0.0.1", "--port", str(chldo)],
          port=chldo, name="chldo")
    master_port, web_port, metrics_port, prom_port = free_port(), free_port(), free_port(), free_port()
    prefix = tmp_path / "run"
    # web UI master that starts by itself and stays up after the run: Prometheus scrapes the final state
    master = spawn([*LOCUST, "-f", MIXED, "--master", "--master-bind-host", "127.0.0.1",
                    "--master-bind-port", str(master_port), "--web-host", "127.0.0.1", "--web-port", str(web_port),
                    "--autostart", "--expect-workers", "2", "-u", "6", "-r", "6", "--run-time", "10s",
                    "--csv", str(prefix), "--metrics-port", str(metrics_port),
                    "--mixed-ktb-url", f"http://127.0.0.1:{rest}", "--ktb-socket-url", f"http://127.0.0.1:{sio}",
                    "--mixed-chldo-url", f"ws://127.0.0.1:{chldo}"], port=web_port, name="master")
    config = tmp_path / "prometheus.yml"
    write_prometheus_config(config, {"webui": f"127.0.0.1:{web_port}", "headless": f"127.0.0.1:{metrics_port}"})
    spawn([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{prom_port}"], port=prom_port, name="prometheus")
    for i in range(2):
        spawn([*LOCUST, "-f", MIXED, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)],
              name=f"worker{i}")
    prom = Prom(prom_port)

    # the run: 10 s after both workers connected; then the master (web UI) stays up, stopped
    deadline = time.monotonic() + 90
    while True:
        state = http_json(f"http://127.0.0.1:{web_port}/stats/requests")
        if state["state"] == "stopped":
            break
        assert time.monotonic() < deadline and master.returncode is None, master.output()[-3000:]
        time.sleep(0.5)
    # both endpoints were scraped during the run and saw the users and both workers
    up = prom.values("up")
    assert sorted(v for v in up.values()) == [1.0, 1.0], up
    for job in ("webui", "headless"):
        assert prom.values(f'max_over_time(loadkit_users{{job="{job}"}}[5m])') and \
            max(prom.values(f'max_over_time(loadkit_users{{job="{job}"}}[5m])').values()) == 6
        assert max(prom.values(f'max_over_time(loadkit_workers_connected{{job="{job}"}}[5m])').values()) == 2
    # let the workers' last reports arrive, and Prometheus scrape the final state twice
    time.sleep(3)
    final_total = http_json(f"http://127.0.0.1:{web_port}/stats/requests")["stats"][-1]["num_requests"]
    deadline = time.monotonic() + 20
    while True:
        got = prom.values('sum by (job) (loadkit_requests_total)')
        if got and all(v == final_total for v in got.values()):
            break
        assert time.monotonic() < deadline, (got, final_total)
        time.sleep(0.5)
    time.sleep(2)
    # everything Prometheus holds now, read before the master goes (its series then turn stale)
    seen = {}
    for job in ("webui", "headless"):
        seen[job] = {
            "counts": {(dict(k)["kind"], dict(k)["unit"], dict(k)["type"], dict(k)["name"]): v
                       for k, v in prom.values(f'loadkit_hdr_count{{job="{job}"}}').items()},
            "quantiles": {(dict(k)["kind"], dict(k)["type"], dict(k)["name"], dict(k)["quantile"]): v
                          for k, v in prom.values(f'loadkit_hdr_quantile{{job="{job}"}}').items()},
            "lost": list(prom.values(f'loadkit_workers_lost{{job="{job}"}}').values()),
            "chat": prom.values(f'loadkit_requests_total{{job="{job}",type="ktb",name="chatMessage"}}'),
            "saturation": prom.values(f'loadkit_generator_saturation{{job="{job}",source="cpu"}}'),
            "master_cpu": prom.values(f'process_cpu_seconds_total{{job="{job}"}}'),
        }
    master.stop()  # SIGTERM: the master writes _hdr.csv (again) at exit, from the very same state

    hdr = assert_hdr_matches_locust(prefix)
    assert {(t, n) for t, n in hdr if n != "Aggregated"} >= CORE_OPERATIONS
    metrics = read_csv(f"{prefix}_metrics.csv", METRIC_COLUMNS)
    assert set(metrics) >= CORE_METRICS
    # every request row of _hdr.csv and every metric row of _metrics.csv, with its kind and unit
    expected = {("request", "ms", *key): row for key, row in hdr.items() if key[1] != "Aggregated"}
    expected.update({(row["Kind"], row["Unit"], *key): row for key, row in metrics.items()})
    for job, got in seen.items():
        assert set(got["counts"]) == set(expected), (job, set(got["counts"]) ^ set(expected))
        for (kind, unit, rtype, name), row in expected.items():
            assert got["counts"][(kind, unit, rtype, name)] == row["Count"], (job, name)
            for q, column in QUANTILE_COLUMNS.items():
                assert got["quantiles"][(kind, rtype, name, q)] == pytest.approx(row[column], rel=0.01, abs=0.0005), \
                    (job, rtype, name, q)
        assert got["lost"] == [0.0], job
        assert got["chat"] and got["saturation"] and got["master_cpu"], (job, got)


def test_grafana_dashboard_is_valid_json_for_these_series():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "loadkit-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["panels"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for series in ("loadkit_hdr_quantile", "loadkit_requests_total", "loadkit_failures_total", "loadkit_users",
                   "loadkit_workers_connected", "loadkit_workers_lost", "loadkit_generator_saturation"):
        assert any(series in e for e in exprs), series
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
