"""opsbot is SIGKILLed while an action runs; the next start cleans up and tells the thread.

How the action is made slow for real: the test pauses its private Redis server with
``CLIENT PAUSE 30000``, so the production ``redis info`` action, in its hardened container
behind its egress forwarder, connects and then blocks waiting for the server's answer (it
would give up at redis-py's 10 s socket timeout). Nothing in opsbot or the image is changed
for the test; the Slack progress line "Running `redis info` in the sandbox" (written by the
in-container entrypoint) proves the action is under way when the bot is killed.
"""

import subprocess

import docker
import pytest

from tests.fakes.payloads import SlackClient
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import CHANNEL, RUN_ID
from tests.scenarios.process import (  # noqa: F401 (fixture)
    AuditFile,
    BotProcesses,
    Leftovers,
    ProcessHarness,
    bot_env,
    bot_processes,
    leftovers,
    storage_env,
)
from tests.services.redis import private_redis

pytestmark = [pytest.mark.docker,
              pytest.mark.parametrize("storage", ["sqlite", "postgres"], indirect=True)]
RUNNING_LINE = "Running `redis info` in the sandbox"


@pytest.fixture
def paused_redis(tmp_path):
    """A private Redis server (pausing the session's one would stall other tests)."""
    with private_redis(tmp_path / "redis") as server:
        yield server


async def _action_container(client: docker.DockerClient, instance: str, run_id: str,
                            timeout: float = 15) -> tuple[str, Leftovers]:
    """The running container whose name carries the run's call id (cold, or a renamed pool box)."""
    def running() -> tuple[str, Leftovers] | None:
        seen = leftovers(client, instance)
        return next(((cid, seen) for cid, attrs in seen.containers.items()
                     if attrs["State"] == "running" and any(run_id in n for n in attrs["Names"])),
                    None)

    return await wait_until(running, timeout, lambda: f"no running container for {run_id}: "
                                                      f"{leftovers(client, instance).containers}")


def _bridges(client: docker.DockerClient, networks: set[str]) -> set[str]:
    options = (client.api.inspect_network(n).get("Options") or {} for n in networks)
    return {o["com.docker.network.bridge.name"] for o in options
            if "com.docker.network.bridge.name" in o}


def _firewall_rules() -> str:
    done = subprocess.run(["iptables", "-S"], check=True, capture_output=True, text=True)
    return done.stdout


async def test_sigkill_mid_action_is_reaped_and_reported(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        paused_redis, sandbox_image, docker_client, tmp_path, storage):
    env = bot_env(slack_emulator, tmp_path / "data", paused_redis.url, sandbox_image,
                  **storage_env(storage))
    first = await bot_processes.start(env)
    paused_redis.client().execute_command("CLIENT", "PAUSE", "30000")
    async with SlackClient(first.events_url) as client:
        h = ProcessHarness(first, slack_emulator, client)
        assert (await h.command("redis info")).status == 200
        thread = await h.run_thread()
        await h.slack.wait_for(lambda: RUNNING_LINE in h.slack.message(CHANNEL, thread).text, 30)
    run_id = RUN_ID.search(h.slack.message(CHANNEL, thread).text).group(1)
    action, before = await _action_container(docker_client, first.instance, run_id)
    bridges = _bridges(docker_client, before.networks)
    assert bridges and all(b in _firewall_rules() for b in bridges), "egress was confined"

    await first.kill()
    orphaned = leftovers(docker_client, first.instance)
    assert action in orphaned.containers, "the crash left the action's container behind"
    audit = AuditFile.of(env)
    assert audit.run_state(run_id) == "running"

    second = await bot_processes.start(env)
    after = leftovers(docker_client, second.instance)
    assert not set(orphaned.containers) & set(after.containers), "the dead bot's containers"
    assert not orphaned.networks & after.networks, "the dead bot's networks"
    assert set(after.containers) == after.pooled, "only the new bot's warm pool remains"
    rules = _firewall_rules()
    assert not [b for b in bridges if b in rules], "the dead bot's firewall rules"

    notice = await h.slack.wait_for(lambda: [m for m in h.slack.thread(CHANNEL, thread)
                                             if f"Run `{run_id}` was interrupted" in m.text], 20)
    assert "Nothing is retried automatically" in notice[0].text
    await h.slack.wait_for(  # the notice goes first; the status message's last edit follows
        lambda: f"`{run_id}` · interrupted" in h.slack.message(CHANNEL, thread).text, 20)
    await wait_until(lambda: audit.run_state(run_id) == "interrupted", 20,  # recorded last
                     lambda: f"run {run_id} is {audit.run_state(run_id)}")
    assert audit.rows("credential.lease", run_id) and not audit.rows("sandbox.exec", run_id)
    assert [r["data"]["state"] for r in audit.rows("run.state", run_id)] == ["interrupted"]

    assert await second.terminate() == 0
    assert leftovers(docker_client, second.instance).empty, "a clean stop leaves nothing"
