"""Kubernetes manifests (deploy/k8s): valid against the Kubernetes schemas, consistent with each
other, sized as documented, and the headless Job's very commands leave the run's files where
docs/kubernetes.md says.

Offline: ``kubernetes-validate`` (PyPI, test extra) carries the schemas. The overlays are plain
Kustomize (``resources`` only), rendered here by reading the files; when ``kubectl`` is installed
its own ``kubectl kustomize`` must render the same objects.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadkit.procs import free_port, wait_for_port
from test_distributed import assert_complete_mixed_run

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("web", "headless", "targets")
SCHEMA_VERSION = "1.30.0"  # a version most clusters run; the schemas ship with kubernetes-validate
KUBECTL = shutil.which("kubectl")


def render(directory: Path) -> list[dict]:
    """The objects a ``resources``-only kustomization stands for, in order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, "keep the overlays plain (resources only)"
    docs: list[dict] = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def objects(overlay: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in render(K8S / overlay)}


def containers(obj: dict) -> list[dict]:
    return obj["spec"]["template"]["spec"]["containers"]


def config() -> dict[str, str]:
    return objects("web")[("ConfigMap", "loadkit-config")]["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_is_valid_kubernetes(overlay):
    import kubernetes_validate

    rendered = render(K8S / overlay)
    assert rendered
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_renders_the_same_objects(overlay):
    if not KUBECTL:
        pytest.skip("kubectl not installed; the overlays are resources-only, rendered by the other tests")
    out = subprocess.run([KUBECTL, "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    assert theirs == objects(overlay)


def test_master_service_reaches_the_master_of_either_variant_and_the_workers_reach_the_service():
    for overlay, kind in (("web", "Deployment"), ("headless", "Job")):
        objs = objects(overlay)
        service = objs[("Service", "loadkit-master")]
        masters = [o for (k, _), o in objs.items() if k == kind and o["metadata"]["labels"].get("app.kubernetes.io/component") == "master"]
        assert len(masters) == 1, overlay
        labels = masters[0]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), overlay
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports == {"master": 5557, "web": 8089, "metrics": 9646}
        workers = [o for (k, _), o in objs.items() if o["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]
        assert len(workers) == 1, overlay
        args = containers(workers[0])[0]["args"]
        assert args[args.index("--master-host") + 1] == "loadkit-master"
        assert args[args.index("--master-port") + 1] == str(ports["master"])
        # the master's command listens where the Service sends
        margs = containers(masters[0])[0]["args"]
        assert "0.0.0.0" in margs and "5557" in margs
        for c in (containers(workers[0])[0], containers(masters[0])[0]):
            # $(VAR) references name keys of the ConfigMap the container reads
            assert c["envFrom"] == [{"configMapRef": {"name": "loadkit-config"}}]
            for ref in re.findall(r"\$\((\w+)\)", " ".join(c["args"])):
                assert ref in config(), ref
    assert objects("web")[("Deployment", "loadkit-worker")]["spec"]["replicas"] >= 1
    workers_job = objects("headless")[("Job", "loadkit-workers")]["spec"]
    assert workers_job["parallelism"] == workers_job["completions"] >= 1


def test_resources_are_sized_from_the_benchmarks():
    """One core per worker (a gevent process never uses more); memory from the per-user budget."""
    def mib(text: str) -> float:
        m = re.fullmatch(r"(\d+)(Mi|Gi)", text)
        assert m, text
        return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)

    for overlay in ("web", "headless"):
        for (kind, name), obj in objects(overlay).items():
            if kind not in ("Deployment", "Job"):
                continue
            res = containers(obj)[0]["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"], name
            if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "worker":
                assert res["requests"]["cpu"] == res["limits"]["cpu"] == "1", name
                # docs/kubernetes.md: ~100 MiB per process + 48 KiB per user; the request carries 3 300 users
                assert mib(res["requests"]["memory"]) >= 100 + 3300 * 48 / 1024, name
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    assert "7.75 KB" in text and "48 KiB" in text  # the figure the sizing comes from, and the budget


def test_headless_job_command_parses_and_writes_to_the_documented_volume():
    from loadkit.cli import build_parser

    job = objects("headless")[("Job", "loadkit-run")]
    c = containers(job)[0]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert mounts == {"results": "/app/reports"} and volumes == {"results": "loadkit-results"}
    assert ("PersistentVolumeClaim", "loadkit-results") in objects("headless")
    assert re.search(r"^WORKDIR /app$", (ROOT / "Dockerfile").read_text(), re.M)  # reports/… = /app/reports/…
    args = [re.sub(r"\$\((\w+)\)", lambda m: config()[m.group(1)], a) for a in c["args"]]
    assert c["command"] == ["loadkit"]
    parsed = build_parser().parse_args(args)
    assert parsed.out is None  # default: reports/<UTC timestamp>/, i.e. on the volume
    assert parsed.workers == 0 and parsed.workers_window > 0 and not parsed.no_report
    assert "/app/reports/<UTC timestamp>/" in (ROOT / "docs" / "kubernetes.md").read_text()


@pytest.mark.timeout(150)
def test_headless_job_commands_run_as_processes(spawn, tmp_path):
    """The targets', the run Job's and two worker pods' commands, as processes on 127.0.0.1: the run
    ends with every file and report.html under <volume>/<UTC timestamp>/."""
    ports = {p: str(free_port()) for p in ("5001", "5002", "8765", "5557", "9646")}
    values = dict(config(), RUN_TIME="8s", USERS="6", SPAWN_RATE="6", WORKER_WINDOW="5", LOADKIT_MASTER_WAIT="60")

    def localize(arg: str) -> str:
        arg = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], str(arg))
        arg = re.sub(r"loadkit-(ktb|chldo|master)\b", "127.0.0.1", arg)
        arg = re.sub(r"(?<![\d.])(5001|5002|8765|5557|9646)(?!\d)", lambda m: ports[m.group(1)], arg)
        return "127.0.0.1" if arg == "0.0.0.0" else re.sub(r"=0\.0\.0\.0$", "=127.0.0.1", arg)

    def argv(obj: dict) -> list[str]:
        c = containers(obj)[0]
        exe = {"loadkit": [sys.executable, "-m", "loadkit"], "locust": [sys.executable, "-m", "locust"]}
        return exe[c["command"][0]] + [localize(a) for a in c["args"]]

    targets = objects("targets")
    (tmp_path / "locustfiles").symlink_to(ROOT / "locustfiles")  # the image's /app layout
    ktb = spawn(argv(targets[("Deployment", "loadkit-ktb")]), port=int(ports["5001"]), name="ktb", cwd=tmp_path)
    wait_for_port("127.0.0.1", int(ports["5002"]), proc=ktb.proc)
    spawn(argv(targets[("Deployment", "loadkit-chldo")]), port=int(ports["8765"]), name="chldo", cwd=tmp_path)
    headless = objects("headless")
    env = {k: values[k] for k in ("LOADKIT_MASTER_WAIT", "LOADKIT_MASTER_TIMEOUT")}
    run = spawn(argv(headless[("Job", "loadkit-run")]), name="run", cwd=tmp_path, env=env)
    workers = [spawn(argv(headless[("Job", "loadkit-workers")]), name=f"worker{i}", cwd=tmp_path, env=env)
               for i in range(2)]
    assert run.wait(120) == 0, run.output()[-4000:]
    out_dirs = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    assert len(out_dirs) == 1 and re.fullmatch(r"\d{8}-\d{6}", out_dirs[0].name), out_dirs
    assert_complete_mixed_run(out_dirs[0], workers=2)
    for w in workers:  # a worker pod ends with 0 when the master says quit: the Job completes
        assert w.wait(30) == 0, w.output()[-2000:]
