"""Issue 13, opsbot's own image: it builds offline (``bot/image.py``: the sandbox's base plus a
host-side wheelhouse, built with networking disabled), runs as uid 10001 on a read-only root,
and a container from it answers ``/healthz`` and runs a typed ``/ops redis info`` end to end:
the Slack emulator delivers the signed command, the action runs in a sandbox container against
the test Redis, and the report lands in the thread.

How the container reaches the test services: **host networking**, on purpose and only here.
opsbot's sandbox gives each action with egress an internal network of the Docker engine and
listens for it on that network's gateway, which exists only in the engine's network namespace
(the host's, for this engine); the Slack emulator and Redis listen on the host's loopback too.
A user-defined network would give the container neither. The container still gets its own
hostname, so it never takes another opsbot's sandbox containers on this engine for a dead
instance's (reaping is per host name). In a cluster the engine runs beside opsbot in the pod
instead (deploy/kubernetes/README.md).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import aiohttp
import pytest

from bot.image import build_app_image
from sandbox.image import ImageBuildError
from tests.fakes.payloads import SlackClient, slash_command
from tests.fakes.slack import BOT_TOKEN, SlackEmulator
from tests.fakes.payloads import SIGNING_SECRET
from tests.services import free_port

pytestmark = pytest.mark.docker
CHANNEL = "C0IMAGE"
SOCKET = "/var/run/docker.sock"
POLICY = "version: 1\ndefaults:\n  autonomous_max_tier: 2\n"


@pytest.fixture(scope="session")
def app_image(docker_client) -> str:
    try:
        return build_app_image(log=lambda line: None, client=docker_client)
    except ImageBuildError as e:
        pytest.fail(f"opsbot's image could not be built: {e}")


def run_container(client, image: str, port: int, env: dict[str, str], policy: Path):
    name = f"opsbot-image-test-{secrets.token_hex(3)}"
    return client.containers.run(
        image, ["serve"], detach=True, name=name, hostname=name, network_mode="host",
        user="10001:10001", group_add=[str(os.stat(SOCKET).st_gid)], read_only=True,
        tmpfs={"/tmp": "", "/var/lib/opsbot": "uid=10001,gid=10001"}, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], environment=env,
        volumes={SOCKET: {"bind": SOCKET, "mode": "rw"},
                 str(policy): {"bind": "/etc/opsbot/policy.yml", "mode": "ro"}})


async def healthy(url: str, container, timeout: float = 180) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            container.reload()
            assert container.status == "running", container.logs(tail=30).decode()
            assert asyncio.get_running_loop().time() < deadline, container.logs(tail=30).decode()
            await asyncio.sleep(0.5)


async def test_the_image_serves_healthz_and_runs_a_typed_command(
        app_image, docker_client, sandbox_image, slack_emulator: SlackEmulator, redis_server,
        redis_db, tmp_path):
    slack_emulator.add_channel(CHANNEL, "image")
    redis_db.set("image:probe", "1")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    policy.chmod(0o644)
    tmp_path.chmod(0o755)
    port = free_port()
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "OPSBOT_SLACK_API_URL": slack_emulator.base_url, "REDIS_URL": redis_server.url,
           "OPSBOT_PORT": str(port), "OPSBOT_POLICY": "/etc/opsbot/policy.yml",
           "OPSBOT_SANDBOX_IMAGE": sandbox_image, "OPSBOT_WORKERS": "2"}
    container = await asyncio.to_thread(run_container, docker_client, app_image, port, env,
                                        policy)
    url = f"http://127.0.0.1:{port}"
    try:
        attrs = container.attrs
        assert attrs["HostConfig"]["ReadonlyRootfs"] is True
        assert attrs["Config"]["User"] == "10001:10001"
        await healthy(url, container)
        async with SlackClient(f"{url}/slack/events") as client:
            delivery = await client.post(slash_command("redis info section=server", user="UREQ1",
                                                       channel=CHANNEL, slack=slack_emulator))
        assert delivery.status == 200
        report = await slack_emulator.wait_for(lambda: next(
            (m for m in slack_emulator.messages(CHANNEL) if "*Run `r-" in m.text), None), 180)
        assert "done" in report.text and "redis_version" in report.text, report.text
    finally:
        await asyncio.to_thread(container.stop, timeout=30)
        logs = container.logs(tail=200).decode()
        await asyncio.to_thread(container.remove, force=True)
    assert "Traceback" not in logs, logs
