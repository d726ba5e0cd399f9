"""docker-compose: the file validates, and its very commands run as plain processes on 127.0.0.1.

No Docker engine runs here. The first test asks ``docker-compose config`` (skipped, with the reason,
when the binary is absent). The second resolves the file (with ``docker-compose config`` when
available, else PyYAML plus ``${VAR:-default}`` interpolation), takes the headless profile's
services — ktb, chldo, headless (the master + report) and two workers — and runs their commands as
processes: ``loadkit``/``locust`` via this interpreter, service hostnames and 0.0.0.0 → 127.0.0.1,
every port a free one through the file's own variables.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from loadkit.procs import free_port, wait_for_port
from test_distributed import assert_complete_mixed_run

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SERVICE_HOSTS = {"ktb", "chldo", "master"}
HOST_FLAGS = {"--host", "--master-host", "--master-bind-host", "--web-host"}
COMPOSE_BIN = shutil.which("docker-compose")


def _interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        value = env.get(name)
        return value if value not in (None, "") else (default or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", sub, text)


def clean_env() -> dict[str, str]:
    """This environment without the file's own variables (their defaults are what is tested)."""
    names = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    return {k: v for k, v in os.environ.items() if k not in names}


def resolved_config(env: dict[str, str]) -> dict:
    if COMPOSE_BIN:
        out = subprocess.run([COMPOSE_BIN, "-f", str(COMPOSE), "config"], env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return yaml.safe_load(out.stdout)
    return yaml.safe_load(_interpolate(COMPOSE.read_text(), env))


def as_process(command: list[str]) -> list[str]:
    exe = {"loadkit": [sys.executable, "-m", "loadkit"], "locust": [sys.executable, "-m", "locust"]}[command[0]]
    argv, previous = [], ""
    for arg in map(str, command[1:]):
        if previous in HOST_FLAGS and (arg in SERVICE_HOSTS or arg == "0.0.0.0"):
            arg = "127.0.0.1"
        arg = re.sub(r"(?<=-host=)0\.0\.0\.0$", "127.0.0.1", arg)  # --locust-arg=--metrics-host=0.0.0.0
        arg = re.sub(r"(?<=://)(ktb|chldo|master)(?=[:/]|$)", "127.0.0.1", arg)
        argv.append(arg)
        previous = arg
    return exe + argv


@pytest.mark.timeout(60)
def test_compose_file_is_valid():
    if not COMPOSE_BIN:
        pytest.skip("docker-compose binary not installed (apt-get install docker-compose); cannot validate")
    out = subprocess.run([COMPOSE_BIN, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    services = subprocess.run([COMPOSE_BIN, "-f", str(COMPOSE), "--profile", "headless", "config", "--services"],
                              capture_output=True, text=True, timeout=60)
    assert set(services.stdout.split()) == {"ktb", "chldo", "master", "worker", "headless"}
    profiles = subprocess.run([COMPOSE_BIN, "-f", str(COMPOSE), "config", "--profiles"], capture_output=True,
                              text=True, timeout=60)
    assert profiles.stdout.split() == ["headless"]
    services = resolved_config(clean_env())["services"]  # as docker-compose itself resolves it
    for name in ("ktb", "chldo"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("master", "worker", "headless"):
        assert services[name]["depends_on"] == {"ktb": {"condition": "service_healthy"},
                                                "chldo": {"condition": "service_healthy"}}, name


def test_compose_structure():
    """One image for every service, UI on 8089, workers scalable (no fixed container name or port)."""
    config = resolved_config(clean_env())
    services = config["services"]
    assert {s.get("image") for s in services.values()} == {"loadkit:local"}
    assert all(s.get("build") for s in services.values())
    assert any("8089" in str(p) for p in services["master"].get("ports", []))
    worker = services["worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert services["headless"]["profiles"] == ["headless"]
    assert any("reports" in str(v) for v in services["headless"]["volumes"])
    assert "master" in str(services["headless"]["networks"])  # workers reach it as "master"
    # the targets say when they listen, and whoever loads them waits for that
    for name in ("ktb", "chldo"):
        check = services[name]["healthcheck"]
        assert check["test"][:3] == ["CMD", "python", "-c"] and check["interval"] and check["retries"], name
    for name in ("master", "worker", "headless"):
        assert {t: c["condition"] for t, c in services[name]["depends_on"].items()} == \
            {"ktb": "service_healthy", "chldo": "service_healthy"}, name
    # the worker count is counted by the master, not configured twice (no WORKERS to keep equal to --scale)
    assert "WORKERS" not in re.findall(r"\$\{(\w+)", COMPOSE.read_text())
    assert "--workers-window" in services["headless"]["command"]
    assert "--expect-workers" not in services["headless"]["command"]


def healthcheck_argv(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    return [sys.executable, *test[2:]]


def test_dockerignore_names_only_real_or_generated_paths():
    """Every line of .dockerignore names something in the checkout or something .gitignore says is generated."""
    generated = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
                 if line.strip() and not line.startswith(("#", "!"))}
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#") or "*" in entry:
            continue
        assert (ROOT / entry).exists() or entry in generated or f"{entry}/*" in generated, entry


@pytest.mark.timeout(150)
def test_headless_profile_runs_as_processes(spawn, tmp_path):
    env = clean_env()
    ports = {name: str(free_port()) for name in
             ("KTB_REST_PORT", "KTB_SOCKET_PORT", "CHLDO_PORT", "LOCUST_MASTER_PORT", "LOCUST_WEB_PORT")}
    ports["METRICS_PORT"] = str(free_port())
    env.update(ports, RUN_TIME="8s", USERS="6", SPAWN_RATE="6")  # no worker count: the master counts them
    services = resolved_config(env)["services"]
    (tmp_path / "locustfiles").symlink_to(ROOT / "locustfiles")  # the image's WORKDIR layout
    probes = {name: healthcheck_argv(services[name]) for name in ("ktb", "chldo")}
    for name, argv in probes.items():  # nothing listens yet: unhealthy
        assert subprocess.run(argv, capture_output=True, timeout=30).returncode != 0, name

    def start(name: str, port: str | None = None, index: int = 0):
        svc = services[name]
        return spawn(as_process(svc["command"]), port=int(port) if port else None, name=f"{name}{index}",
                     env={k: str(v) for k, v in (svc.get("environment") or {}).items()}, cwd=tmp_path)

    ktb = start("ktb", ports["KTB_REST_PORT"])
    wait_for_port("127.0.0.1", int(ports["KTB_SOCKET_PORT"]), proc=ktb.proc)
    start("chldo", ports["CHLDO_PORT"])
    for name, argv in probes.items():  # listening: healthy, so compose would now start the others
        probe = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert probe.returncode == 0, (name, probe.stderr)
    headless = start("headless")
    workers = [start("worker", index=i) for i in range(2)]  # they wait (bounded) for the master
    deadline = time.monotonic() + 60  # live metrics while it runs, on the compose file's METRICS_PORT
    while "loadkit_workers_connected 2.0" not in _metrics(ports["METRICS_PORT"]):
        assert time.monotonic() < deadline and headless.returncode is None, headless.output()[-3000:]
        time.sleep(0.5)

    assert headless.wait(120) == 0, headless.output()[-4000:]
    assert "2 worker(s) connected (none new for 5s); starting with 2" in (tmp_path / "reports").joinpath(
        next(p.name for p in (tmp_path / "reports").iterdir()), "logs", "master.log").read_text()
    out_dirs = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    assert len(out_dirs) == 1, out_dirs
    assert_complete_mixed_run(out_dirs[0], workers=2)
    for w in workers:
        assert w.wait(30) == 0, w.output()[-2000:]
    assert "report:" in headless.output()
    assert "workers: 2 reported; none lost" in headless.output()


def _metrics(port: str) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


@pytest.mark.timeout(90)
def test_web_ui_master_and_a_worker_run_as_processes(spawn, tmp_path):
    """The default (non-profile) master serves the web UI and accepts a scaled worker."""
    import json
    import urllib.request

    env = clean_env()
    ports = {name: str(free_port()) for name in
             ("KTB_REST_PORT", "KTB_SOCKET_PORT", "CHLDO_PORT", "LOCUST_MASTER_PORT", "LOCUST_WEB_PORT")}
    env.update(ports)
    services = resolved_config(env)["services"]
    (tmp_path / "locustfiles").symlink_to(ROOT / "locustfiles")
    master_cmd = as_process(services["master"]["command"])
    assert "0.0.0.0" not in master_cmd
    spawn(master_cmd, port=int(ports["LOCUST_WEB_PORT"]), name="master", cwd=tmp_path)
    spawn(as_process(services["worker"]["command"]), name="worker", cwd=tmp_path,
          env={k: str(v) for k, v in (services["worker"].get("environment") or {}).items()})
    base = f"http://127.0.0.1:{ports['LOCUST_WEB_PORT']}"
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        assert r.status == 200
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(base + "/stats/requests", timeout=10) as r:
            workers = json.load(r).get("workers", [])
        if workers:
            break
        assert time.monotonic() < deadline, "no worker connected to the web-UI master"
        time.sleep(0.5)
    assert len(workers) == 1


def test_dockerfile_copies_what_the_services_run():
    """Static check (no engine here): what the commands need is in the build context and the image."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copies = re.findall(r"^COPY\s+(?!--from)(\S+)\s+\S+\s*$", dockerfile, re.M)
    assert "locustfiles" in copies and "." in copies
    assert "k6" in copies  # the k6 scripts ship in the image (k6 run k6/ktb_chat.js)
    for src in copies:
        if src != ".":
            assert (ROOT / src).exists() and src not in ignored, src
    for needed in ("pyproject.toml", "loadkit", "locustfiles"):
        assert needed not in ignored
    assert re.search(r"^WORKDIR /app$", dockerfile, re.M)  # commands use locustfiles/… and reports/ relatively
    for name, svc in resolved_config(clean_env())["services"].items():
        command = svc["command"]
        assert command[0] in ("loadkit", "locust"), name  # console scripts of the installed package
        if "-f" in command:
            assert (ROOT / command[command.index("-f") + 1]).is_file(), name
