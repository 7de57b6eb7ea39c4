"""A runner killed with SIGKILL mid-action leaves things behind; its successor removes them all."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import docker
import pytest

from sandbox.config import SandboxConfig
from sandbox.firewall import Firewall
from sandbox.hardening import LABEL
from sandbox.image import ROOT
from sandbox.runner import SandboxRunner
from tests.services.docker import session_instance

pytestmark = pytest.mark.docker

# Starts a runner (with a warm pool) and runs a 30 s action that has egress, so a container,
# its network, forwarders and firewall rules all exist when the parent kills this process.
CRASHER = """
import asyncio, json, sys
from sandbox.config import SandboxConfig
from sandbox.protocol import SandboxRequest
from sandbox.runner import SandboxRunner
from tools.base import Endpoint

instance, image, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
SLEEPER = ("import json, sys, time; sys.stdin.read(); "
           "sys.stderr.write(json.dumps({'progress': 'sleeping'}) + '\\\\n'); "
           "sys.stderr.flush(); time.sleep(30)")

async def main():
    runner = await SandboxRunner.start(SandboxConfig(instance=instance, image=image, warm_pool=1))
    await runner.pool.wait_ready()
    request = SandboxRequest(run_id="crash", call_id="sleeper", toolset="test", action="sleep",
                             egress=[Endpoint(host="127.0.0.1", port=port)], timeout=60)
    async def started(text):
        print("STARTED", flush=True)
    await runner.execute(request, ["python3", "-c", SLEEPER], started)

asyncio.run(main())
"""


async def started(stdout: asyncio.StreamReader) -> None:
    """Until the crasher says its action runs (its log lines come first)."""
    while (line := await stdout.readline()).strip() != b"STARTED":
        assert line, "the crasher exited before its action started"


def owned(client: docker.DockerClient, instance: str) -> dict[str, list[str]]:
    label = {"label": f"{LABEL}.instance={instance}"}
    return {
        "containers": sorted(c.name for c in client.containers.list(all=True, filters=label)),
        "networks": sorted(n.name for n in client.networks.list(filters=label)),
    }


def iptables_listing(*chain: str) -> str:
    return subprocess.run(["iptables", "-w", "-S", *chain], capture_output=True, text=True,
                          check=False).stdout


def firewall_rules(instance: str) -> list[str]:
    listing = iptables_listing(Firewall(instance).chain)
    return [line for line in listing.splitlines() if line.startswith("-A ")]


async def test_sigkilled_runner_is_reaped_by_its_successor(sandbox_image, redis_server,
                                                           docker_client):
    instance = session_instance("-crash")
    crasher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHER, instance, sandbox_image, str(redis_server.port),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(started(crasher.stdout), 60)
    finally:
        crasher.kill()  # SIGKILL: no cleanup code runs
        await crasher.wait()

    left = owned(docker_client, instance)
    assert any("-sleeper-" in name for name in left["containers"])
    # run + warm pool, and spare networks made ahead (as many as were ready at the kill)
    assert len(left["containers"]) == 3 and len(left["networks"]) >= 2
    assert firewall_rules(instance)

    successor = await SandboxRunner.start(
        SandboxConfig(instance=instance, image=sandbox_image, warm_pool=0, spare_networks=0)
    )
    try:
        assert owned(docker_client, instance) == {"containers": [], "networks": []}
        assert firewall_rules(instance) == []
        assert await successor.reap() == 0
    finally:
        await successor.close()
    chains = await asyncio.to_thread(iptables_listing)
    assert f"-N {Firewall(instance).chain}\n" not in chains
