"""Issue 13, deployment files: both Kustomize overlays render (``kubectl kustomize``) and
validate offline against the Kubernetes schemas (``kubernetes-validate``; the ServiceMonitor
against the CRD's schema for the fields used), every pod is locked down and probed, and
``docker-compose config`` accepts the Compose file.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose.yaml"
K8S_VERSION = "1.30"
ENGINE = "engine"  # the Docker engine sidecar: the one container allowed privileges


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: scripts/install.sh installs it (kubernetes-client)"
    done = subprocess.run([kubectl, "kustomize", str(KUBERNETES / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def invalid(doc: dict[str, Any]) -> str:
    """Why ``doc`` is not a valid object of its kind (empty when it is)."""
    if doc["kind"] == "ServiceMonitor":
        schema = json.loads((ROOT / "tests/fixtures/servicemonitor.schema.json").read_text())
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(doc))
        return "; ".join(e.message for e in errors)
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    return ""


def pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in ("Deployment", "Job")]


def lockdown_problems(name: str, pod: dict[str, Any], serves: bool) -> list[str]:
    """What a pod's opsbot containers lack: non-root, read-only root, no privilege escalation,
    seccomp RuntimeDefault, no capabilities, requests; liveness on /healthz and readiness on
    /readyz for long-running pods."""
    problems = []
    pod_seccomp = (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: mounts a service account token")
    for c in pod["containers"]:
        where, sc = f"{name}/{c['name']}", c.get("securityContext") or {}
        if c["name"] == ENGINE:
            continue
        for key, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True),
                          ("allowPrivilegeEscalation", False)):
            if sc.get(key) is not want:
                problems.append(f"{where}: securityContext.{key} is not {want}")
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if (sc.get("seccompProfile", {}).get("type") or pod_seccomp) != "RuntimeDefault":
            problems.append(f"{where}: seccomp profile is not RuntimeDefault")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: capabilities are not all dropped")
        if not c.get("resources", {}).get("requests"):
            problems.append(f"{where}: no resource requests")
        if serves:
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                if (c.get(probe) or {}).get("httpGet", {}).get("path") != path:
                    problems.append(f"{where}: {probe} is not GET {path}")
    return problems


@pytest.fixture(scope="module", params=["embedded", "scale-out"])
def overlay(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_overlays_render_and_validate_against_the_kubernetes_schemas(overlay):
    name, docs = overlay
    problems = {f"{d['kind']}/{d['metadata']['name']}": invalid(d) for d in docs}
    assert not {k: v for k, v in problems.items() if v}
    kinds = sorted(d["kind"] for d in docs)
    assert {"ServiceAccount", "ServiceMonitor", "NetworkPolicy", "Service"} <= set(kinds)
    if name == "scale-out":
        deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
        assert set(deployments) == {"opsbot-ingress", "opsbot-worker"}
        args = {n: d["spec"]["template"]["spec"]["containers"][0]["args"]
                for n, d in deployments.items()}
        assert args == {"opsbot-ingress": ["serve", "--role", "ingress"],
                        "opsbot-worker": ["worker"]}
        assert kinds.count("HorizontalPodAutoscaler") == 2
        assert kinds.count("PodDisruptionBudget") == 2
        job = next(d for d in docs if d["kind"] == "Job")
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]
    else:
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve"]
        assert "PersistentVolumeClaim" in kinds


def test_the_validation_catches_a_broken_object(overlay):
    _, docs = overlay
    broken = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    broken["spec"]["replicas"] = "two"
    assert "replicas" in invalid(broken)
    monitor = copy.deepcopy(next(d for d in docs if d["kind"] == "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    assert "intervall" in invalid(monitor)


def test_every_pod_is_locked_down_and_probed(overlay):
    _, docs = overlay
    found = pods(docs)
    assert found
    problems = [p for name, pod in found
                for p in lockdown_problems(name, pod, serves=name.startswith("Deployment"))]
    assert problems == []
    for name, pod in found:  # secrets come by reference, never as values
        for c in pod["containers"]:
            assert all("value" not in e or not _secret_name(e["name"]) for e in c.get("env", []))
            refs = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
            assert c["name"] == ENGINE or "opsbot" in refs, name
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are created by the operator"


def test_the_lockdown_check_fails_for_a_loosened_pod(overlay):
    _, docs = overlay
    name, pod = pods(docs)[0]
    for key in ("readOnlyRootFilesystem", "runAsNonRoot"):
        loose = copy.deepcopy(pod)
        del loose["containers"][0]["securityContext"][key]
        assert any(key in p for p in lockdown_problems(name, loose, serves=True))
    unprobed = copy.deepcopy(pod)
    unprobed["containers"][0].pop("readinessProbe", None)
    assert any("readinessProbe" in p for p in lockdown_problems(name, unprobed, serves=True))


def test_only_pods_that_run_actions_have_the_engine_sidecar(overlay):
    _, docs = overlay
    for name, pod in pods(docs):
        names = [c["name"] for c in pod["containers"]]
        runs_actions = pod["containers"][0]["args"][0] in ("worker",) or (
            pod["containers"][0]["args"] == ["serve"])
        assert (ENGINE in names) == runs_actions, name


def _secret_name(name: str) -> bool:
    return any(word in name for word in ("TOKEN", "SECRET", "PASSWORD", "KEY", "DATABASE_URL"))


def compose_config(path: Path, env_file: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: scripts/install.sh installs it (Debian package)"
    return subprocess.run([binary, "-f", str(path), "config"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin",
                                           "OPSBOT_ENV_FILE": str(env_file)})


def test_docker_compose_config_accepts_the_compose_file(tmp_path):
    done = compose_config(COMPOSE, COMPOSE.parent / "compose.env.example")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"postgres", "openbao", "redis", "migrate", "ingress-1",
                             "ingress-2", "worker-1", "worker-2"}
    for name in ("migrate", "ingress-1", "ingress-2", "worker-1", "worker-2"):
        service = services[name]
        assert service["read_only"] is True and service["user"] == "10001:10001"
        assert service["cap_drop"] == ["ALL"]
        assert service["environment"]["SLACK_BOT_TOKEN"] == "xoxb-your-bot-token"  # env_file
    written = yaml.safe_load(COMPOSE.read_text())["x-opsbot"]["environment"]
    assert not [k for k in written if k.startswith(("SLACK_", "OPENAI_"))]  # env_file only
    assert services["worker-1"]["command"] == ["worker"]
    assert services["worker-1"]["hostname"] != services["worker-2"]["hostname"]  # reaping
    assert services["ingress-2"]["command"] == ["serve", "--role", "ingress"]
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("read_only: true", "read_only: maybe"))
    refused = compose_config(broken, COMPOSE.parent / "compose.env.example")
    assert refused.returncode != 0 and "read_only" in refused.stderr
