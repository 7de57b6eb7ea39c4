"""The Docker connector against the real engine, through the real filtering proxy.

Two labelled containers play the services (``web``: env=staging, ``db``: env=prod). What the
proxy allows is probed from inside a sandbox container, the hostile way: a program with the
action's token tries the declared request, undeclared ones and another container's id.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator

import docker
import pytest
from pydantic import SecretStr

from sandbox.credentials import CredentialBroker, VaultConfig
from sandbox.credentials.docker import DockerToken
from sandbox.docker_inventory import DockerInventory
from sandbox.docker_proxy import DockerProxy
from sandbox.protocol import SandboxRequest
from tools.base import Status
from tools.catalog import Call, CallError, Catalog
from tools.docker import TOOLSET, DockerConfig

pytestmark = pytest.mark.docker
SOCKET = "/var/run/docker.sock"
PROGRAM = "import sys, time\nfor i in range(5): print('web line', i, flush=True)\n" \
          "print('web warning', file=sys.stderr, flush=True)\ntime.sleep(3600)\n"


@pytest.fixture(scope="module")
def services(docker_client: docker.DockerClient, sandbox_image: str) -> Iterator[dict]:
    tag = secrets.token_hex(4)
    made = {}
    for role, env in (("web", "staging"), ("db", "prod")):
        made[role] = docker_client.containers.run(
            sandbox_image, ["python3", "-c", PROGRAM], name=f"svc-{role}-{tag}", detach=True,
            labels={"env": env, "app": f"shop-{tag}", "role": f"{role}-{tag}"}, network_mode="none")
    yield made
    for container in made.values():
        container.remove(force=True)


@pytest.fixture
async def proxy() -> AsyncIterator[DockerProxy]:
    running = DockerProxy(SOCKET)
    await running.start()
    yield running
    await running.close()


@pytest.fixture
async def catalog(proxy, services) -> Catalog:
    facts = await DockerInventory(SOCKET).facts()
    return Catalog([TOOLSET], {"docker": DockerConfig(proxy_port=proxy.port, containers=facts)})


@pytest.fixture
def broker(proxy) -> CredentialBroker:
    broker = CredentialBroker(VaultConfig(addr="http://127.0.0.1:9", token=SecretStr("unused")))
    broker.register(DockerToken(proxy))
    return broker


PROBE = """
import json, os, sys, urllib.request, urllib.error
req = json.loads(sys.stdin.read())
base = "http://" + req["endpoints"][req["config"]["endpoint"]]
token = req["secrets"].get("docker_token", "")
seen = {"socket": os.path.exists("/var/run/docker.sock") or "docker.sock" in open("/proc/mounts").read()}
for name, method, path, with_token in req["config"]["probes"]:
    request = urllib.request.Request(base + path, method=method,
                                     headers={"X-Opsbot-Token": token} if with_token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            seen[name] = response.status
    except urllib.error.HTTPError as e:
        seen[name] = e.code
print(json.dumps({"status": "ok", "invocation": "probe", "output": json.dumps(seen)}))
"""


async def probe(runner, resolved, lease, probes) -> dict:
    endpoint = str(resolved.egress[0])
    request = SandboxRequest(run_id="run-d", call_id=f"d-{secrets.token_hex(3)}",
                             toolset="docker", action="logs", secrets=dict(lease.values),
                             config={"endpoint": endpoint, "probes": probes},
                             egress=resolved.egress, timeout=30)
    outcome = await runner.execute(request, ["python3", "-c", PROBE], None)
    assert outcome.result.status is Status.OK, outcome
    return json.loads(outcome.result.output)


async def test_the_proxy_forwards_only_what_the_action_declared_for_its_target(
        sandbox_runner, catalog, broker, services):
    web, db = services["web"].id, services["db"].id
    resolved = catalog.resolve(Call(id="d", toolset="docker", action="logs",
                                    params={"name": services["web"].name}))
    assert resolved.target.attrs["id"] == web and resolved.target.attrs["label.env"] == "staging"
    lease = await broker.mint("run-d", "d", resolved.secrets, 30)
    probes = [
        ["declared", "GET", f"/v1.41/containers/{web}/logs?stdout=1&tail=2", True],
        ["declared-inspect", "GET", f"/containers/{web}/json", True],
        ["exec", "POST", f"/v1.41/containers/{web}/exec", True],
        ["images", "GET", "/v1.41/images/json", True],
        ["other-container", "GET", f"/v1.41/containers/{db}/logs?stdout=1", True],
        ["follow", "GET", f"/v1.41/containers/{web}/logs?stdout=1&follow=1", True],
        ["restart", "POST", f"/v1.41/containers/{web}/restart", True],
        ["no-token", "GET", f"/v1.41/containers/{web}/json", False],
    ]
    try:
        seen = await probe(sandbox_runner, resolved, lease, probes)
    finally:
        await broker.revoke(lease)
    assert seen == {"socket": False, "declared": 200, "declared-inspect": 200, "exec": 403,
                    "images": 403, "other-container": 403, "follow": 403, "restart": 403,
                    "no-token": 403}


async def test_a_revoked_token_is_worthless(sandbox_runner, catalog, broker, services, proxy):
    web = services["web"].id
    resolved = catalog.resolve(Call(id="d", toolset="docker", action="inspect",
                                    params={"name": services["web"].name}))
    lease = await broker.mint("run-d", "d2", resolved.secrets, 30)
    kept = dict(lease.values)
    await broker.revoke(lease)
    lease.values.update(kept)  # the action kept its token past the end: it must not work
    seen = await probe(sandbox_runner, resolved, lease,
                       [["after", "GET", f"/containers/{web}/json", True]])
    assert seen["after"] == 403 and proxy.live() == 0


async def test_the_logs_action_reads_a_labelled_container(sandbox_runner, catalog, broker,
                                                          services):
    resolved = catalog.resolve(Call(id="l", toolset="docker", action="logs",
                                    params={"label": f"role={services['web'].labels['role']}",
                                            "tail": 20}))
    assert resolved.target.name == services["web"].name
    lease = await broker.mint("run-d", "l", resolved.secrets, 30)
    request = SandboxRequest(run_id="run-d", call_id="l", toolset="docker", action="logs",
                             params=resolved.params.model_dump(mode="json"),
                             config=resolved.config.model_dump(mode="json"),
                             secrets=dict(lease.values), egress=resolved.egress, timeout=30)
    try:
        outcome = await sandbox_runner.run(request)
    finally:
        await broker.revoke(lease)
    assert outcome.result.status is Status.OK, outcome.result
    lines = outcome.result.output.splitlines()
    out = [line.split(" ", 1)[1] for line in lines if not line.startswith("[stderr] ")]
    err = [line for line in lines if line.startswith("[stderr] ")]
    assert out == [f"web line {i}" for i in range(5)]  # timestamped; streams interleave freely
    assert len(err) == 1 and err[0].endswith("Z web warning")


def test_selection_names_one_container_and_its_labels(catalog, services):
    two = services["web"].labels["app"]
    with pytest.raises(CallError, match="2 containers are labelled"):
        catalog.resolve(Call(id="x", toolset="docker", action="restart",
                             params={"label": f"app={two}"}))
    with pytest.raises(CallError, match="No container named `nope`"):
        catalog.resolve(Call(id="x", toolset="docker", action="logs", params={"name": "nope"}))
    db = catalog.resolve(Call(id="x", toolset="docker", action="stop",
                              params={"name": services["db"].name}))
    assert db.target.kind == "container" and db.target.attrs["label.env"] == "prod"
    listing = catalog.resolve(Call(id="x", toolset="docker", action="ps",
                                   params={"label": f"app={two}"}))
    assert listing.target.attrs["count"] == "2" and "label.env" not in listing.target.attrs
    assert listing.target.attrs["label.app"] == two
    preview = dict(db.preview_secrets[0].params)["allow"]
    assert preview == "GET /containers/{id}/json"  # the stop's preview may only read
