"""The Docker engine and the sandbox image, for tests that run real containers.

* ``docker_client``: a client of the local engine; starts ``dockerd`` when none answers (the
  suite runs as root, like CI).
* ``sandbox_image``: the image for the current code, built once per session if missing
  (seconds when only code changed; the debootstrap base and wheels are cached in
  ``sandbox/.build``).
* ``sandbox_runner``: a :class:`SandboxRunner` with a one-container warm pool, for the session.

Every runner here uses an instance key of its own (``t<pid>...``), so it reaps only what this
session left, never the containers of a parallel session on the same engine; instances of test
sessions that died are reaped at start-up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException

from sandbox.config import LOCAL_ENGINE, SandboxConfig
from sandbox.hardening import LABEL
from sandbox.image import ImageBuildError, build_image
from sandbox.protocol import SandboxOutcome, SandboxRequest
from sandbox.runner import SandboxRunner

DOCKERD_LOG = Path("/tmp/dockerd.log")
STALE_INSTANCE = re.compile(r"^t(\d+)(-[a-z0-9]+)?$")


def _ping(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except DockerException:
        return False


def _start_dockerd() -> None:
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.fail("No Docker engine answers and this session cannot start one: run as root "
                    "with docker.io installed (scripts/test.sh does both).")
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=LOCAL_ENGINE, timeout=120)
    if not _ping(client):
        _start_dockerd()
        deadline = time.monotonic() + 60
        while not _ping(client):
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd did not answer within 60 s; see {DOCKERD_LOG}")
            time.sleep(0.5)
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_image(docker_client: docker.DockerClient) -> str:
    try:
        return build_image(log=lambda line: None, client=docker_client)
    except ImageBuildError as e:
        pytest.fail(f"Could not build the sandbox image: {e}")


def session_instance(suffix: str = "") -> str:
    """An instance key owned by this test session (reaped by later sessions once it dies)."""
    return f"t{os.getpid()}{suffix}"


def leftovers(client: docker.DockerClient, call_id: str) -> list[str]:
    """Names of the containers and networks labelled with ``call_id`` (none once removed)."""
    label = {"label": f"{LABEL}.call_id={call_id}"}
    return [c.name for c in client.containers.list(all=True, filters=label)] + [
        n.name for n in client.networks.list(filters=label)
    ]


def _stale_instances(client: docker.DockerClient) -> set[str]:
    labels = [
        *(c.attrs.get("Labels") or {}
          for c in client.containers.list(all=True, sparse=True, filters={"label": LABEL})),
        *(n.attrs.get("Labels") or {} for n in client.networks.list(filters={"label": LABEL})),
    ]
    instances = {label.get(f"{LABEL}.instance", "") for label in labels} | _chain_instances()
    stale = set()
    for instance in instances:
        match = STALE_INSTANCE.match(instance)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            stale.add(instance)
    return stale


def _chain_instances() -> set[str]:
    """Instances that still have a firewall chain (a chain can outlive every container)."""
    if shutil.which("iptables") is None:
        return set()
    listing = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True, check=False)
    return {line.split()[1].removeprefix("OPSBOT-") for line in listing.stdout.splitlines()
            if line.startswith("-N OPSBOT-")}


async def reap_stale_test_instances(client: docker.DockerClient, image: str) -> None:
    """Containers, networks and firewall chains of test sessions whose process is gone."""
    for instance in _stale_instances(client):
        runner = await SandboxRunner.start(
            SandboxConfig(instance=instance, image=image, warm_pool=0)
        )
        await runner.close()


@pytest.fixture(scope="session")
async def sandbox_runner(
    docker_client: docker.DockerClient, sandbox_image: str
) -> AsyncIterator[SandboxRunner]:
    await reap_stale_test_instances(docker_client, sandbox_image)
    config = SandboxConfig(instance=session_instance(), image=sandbox_image, warm_pool=1)
    runner = await SandboxRunner.start(config)
    yield runner
    await runner.close()


async def run_once(request: SandboxRequest, image: str, name: str, egress_hosts: dict[str, str]
                   ) -> SandboxOutcome:
    """Run one request in a runner of its own (no warm pool) whose egress resolves
    ``egress_hosts`` (name -> address), e.g. a connector dialling an emulator by a host name."""
    runner = await SandboxRunner.start(SandboxConfig(
        instance=session_instance(f"-{name}"), image=image, warm_pool=0,
        egress_hosts=egress_hosts))
    try:
        return await runner.run(request)
    finally:
        await runner.close()
