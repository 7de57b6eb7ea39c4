"""Name-preserving egress through the real runner: HTTPS to a declared DNS name verifies.

A made-up name (``api.example.test``) is served on the host's loopback by an HTTPS server whose
certificate comes from a throwaway CA (tests/sandbox/tls.py). ``SandboxConfig.egress_hosts``
tells the forwarders where that name lives on the host, and the container dials the name
itself: it resolves to the run's gateway, the forwarder there listens on the declared port, and
the TLS client checks the certificate against the CA it got in the request. Hostile programs
then try everything else: the name on another port, other names, another SNI through the
forwarder, rewriting /etc/hosts. A pooled box learns names through its hosts file, and falls
back to a cold box when that file cannot be written.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator

import docker
import pytest
from structlog.testing import capture_logs

from sandbox.config import SandboxConfig
from sandbox.hardening import LABEL
from sandbox.protocol import SandboxRequest
from sandbox.runner import SandboxRunner
from tests.sandbox.tls import Authority, HttpsSite
from tests.services.docker import session_instance
from tools.base import Endpoint, Status

pytestmark = pytest.mark.docker

NAME = "api.example.test"
PRELUDE = """
import json, socket, ssl, sys, urllib.request
REQ = json.loads(sys.stdin.read())
CFG = REQ["config"]
TLS = ssl.create_default_context(cadata=CFG["ca"])
NAME, PORT = CFG["name"], CFG["port"]
def done(output):
    print(json.dumps({"status": "ok", "invocation": "tls", "output": output}))
    sys.exit(0)
def escaped(what):
    done("ESCAPED: " + what)
def fetch(host, port, context=TLS):
    return urllib.request.urlopen(f"https://{host}:{port}/", context=context, timeout=5).read()
"""


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority.create()


@pytest.fixture(scope="module")
def site(ca: Authority) -> Iterator[HttpsSite]:
    with HttpsSite(ca, NAME, bind="127.0.0.1") as served:
        yield served


@pytest.fixture(scope="module")
async def names_runner(sandbox_image: str) -> AsyncIterator[SandboxRunner]:
    config = SandboxConfig(instance=session_instance("-n"), image=sandbox_image, warm_pool=0,
                           egress_hosts={NAME: "127.0.0.1"})
    runner = await SandboxRunner.start(config)
    yield runner
    await runner.close()


def tls_request(call_id: str, ca: Authority, port: int, **config) -> SandboxRequest:
    return SandboxRequest(run_id="names", call_id=call_id, toolset="test", action="tls",
                          config={"ca": ca.pem, "name": NAME, "port": port, **config},
                          egress=[Endpoint(host=NAME, port=port)], timeout=20)


async def run_program(runner: SandboxRunner, request: SandboxRequest, program: str):
    outcome = await runner.execute(request, ["python3", "-c", PRELUDE + program], None)
    await runner.settle()
    return outcome


FETCH = 'done(json.dumps({"endpoints": REQ["endpoints"], "body": fetch(NAME, PORT).decode()}))'


async def test_https_to_a_declared_name_verifies_and_keeps_the_name(names_runner, site, ca):
    outcome = await run_program(names_runner, tls_request("tls-ok", ca, site.port), FETCH)
    assert outcome.result.status is Status.OK, (outcome.result.error, outcome.diagnostics)
    seen = json.loads(outcome.result.output)
    assert seen == {"endpoints": {f"{NAME}:{site.port}": f"{NAME}:{site.port}"},
                    "body": f"hello from {NAME}"}
    assert (NAME, f"{NAME}:{site.port}") in site.seen  # SNI and Host header kept the name


REFUSED = ("Connection refused",)
CASES = {
    "same-name-other-port": (
        "socket.create_connection((NAME, CFG['open_port']), timeout=5); escaped('other port')",
        REFUSED),
    "other-name": ("socket.getaddrinfo('other.example.test', PORT); escaped('resolved')",
                   ("Temporary failure in name resolution", "Name or service not known")),
    "other-name-through-the-forwarder": (
        "TLS.wrap_socket(socket.create_connection((NAME, PORT), timeout=5), "
        + "server_hostname='other.example.test'); escaped('other name verified')",
        ("Hostname mismatch",)),
    "without-the-ca": ("fetch(NAME, PORT, ssl.create_default_context()); escaped('no CA')",
                       ("certificate verify failed",)),
    "rewrite-etc-hosts": (
        "open('/etc/hosts', 'a').write('198.18.0.1 other.example.test\\n'); escaped('hosts')",
        ("Permission denied", "Read-only file system")),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_nothing_else_is_reachable_by_name(name, names_runner, site, ca, host_listener):
    program, expect = CASES[name]
    request = tls_request(name, ca, site.port, open_port=host_listener)
    outcome = await run_program(names_runner, request, program)
    assert outcome.result.status is Status.ERROR, outcome.result.output
    assert any(phrase in (outcome.result.error or "") for phrase in expect), (
        outcome.result.error, outcome.diagnostics)


FALLBACK = """
mapped = REQ["endpoints"][f"{NAME}:{PORT}"]
host, _, port = mapped.rpartition(":")
body = fetch(host, int(port)).decode()
try:
    socket.create_connection((NAME, PORT), timeout=5)
    direct = "connected"
except ConnectionRefusedError:
    direct = "refused"
done(json.dumps({"mapped": mapped, "body": body, "direct": direct}))
"""


async def test_a_port_taken_on_the_host_keeps_the_name_on_a_free_port(names_runner, ca):
    with HttpsSite(ca, NAME, bind="0.0.0.0") as wildcard, capture_logs() as logs:
        outcome = await run_program(names_runner, tls_request("tls-fallback", ca, wildcard.port),
                                    FALLBACK)
    assert outcome.result.status is Status.OK, (outcome.result.error, outcome.diagnostics)
    seen = json.loads(outcome.result.output)
    host, _, port = seen["mapped"].rpartition(":")
    assert host == NAME and int(port) != wildcard.port
    assert seen["body"] == f"hello from {NAME}" and seen["direct"] == "refused"
    assert [e["reason"] for e in logs if e["event"] == "sandbox.egress.port_fallback"] == [
        "EADDRINUSE"]


@pytest.mark.parametrize("host", ["api example.test", "x.test\n198.18.0.9 evil.test"])
async def test_a_malformed_endpoint_name_is_one_sentence(names_runner, host):
    request = SandboxRequest(run_id="names", call_id="bad-name", toolset="test", action="tls",
                             egress=[Endpoint(host=host, port=443)])
    outcome = await names_runner.execute(request, ["python3", "-c", "print(1)"], None)
    assert outcome.result.error == (
        f"The declared endpoint host {host!r} is neither an IP address nor a valid DNS name; "
        "fix the connector's configuration.")
    assert outcome.container_id is None


def redis_by_name(server, call_id: str) -> SandboxRequest:
    return SandboxRequest(run_id="names", call_id=call_id, toolset="redis", action="info",
                          params={"section": "server"},
                          config={"url": f"redis://redis.example.test:{server.port}/0"},
                          egress=[Endpoint(host="redis.example.test", port=server.port)])


def pooled_hosts_file(client: docker.DockerClient, instance: str) -> str:
    labels = [f"{LABEL}.instance={instance}", f"{LABEL}.pool=egress"]
    [pooled] = client.containers.list(filters={"label": labels})
    return pooled.attrs["HostsPath"]


def chattr(flag: str, path: str) -> None:
    subprocess.run(["chattr", flag, path], check=True, capture_output=True)


async def test_a_pooled_box_learns_names_or_the_run_goes_cold(sandbox_image, redis_server,
                                                             docker_client):
    instance = session_instance("-np")
    runner = await SandboxRunner.start(SandboxConfig(
        instance=instance, image=sandbox_image, warm_pool=1,
        egress_hosts={"redis.example.test": "127.0.0.1"}))
    try:
        await runner.pool.wait_ready()
        warm = await runner.run(redis_by_name(redis_server, "pooled-name"))
        await runner.settle()
        await runner.pool.wait_ready()
        path = pooled_hosts_file(docker_client, instance)
        chattr("+i", path)  # immutable even for root: the write opsbot makes will fail
        try:
            with capture_logs() as logs:
                cold = await runner.run(redis_by_name(redis_server, "cold-name"))
        finally:
            chattr("-i", path)
    finally:
        await runner.close()
    assert warm.pooled and warm.result.status is Status.OK, warm.result.error
    assert "redis_version:" in warm.result.output
    assert not cold.pooled and cold.result.status is Status.OK, cold.result.error
    assert runner.provisioner.pool_names is False
    assert [e["path"] for e in logs if e["event"] == "sandbox.pool.hosts_unwritable"] == [path]
    # The box whose hosts file was immutable could not be removed then ("dead" in Docker, left
    # after every full test run); close retried it once the file was writable again.
    owned = {"label": f"{LABEL}.instance={instance}"}
    assert docker_client.containers.list(all=True, filters=owned) == []
    assert docker_client.networks.list(filters=owned) == []
