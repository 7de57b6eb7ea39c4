"""Issue "start here", item 7: a second opsbot on the same host leaves the first one alone.

Each process runs its own sandbox instance (containers, networks, firewall chain, a lock file
it holds while it lives). A second `opsbot serve` on the same data directory refuses to start
(embedded mode is one process per data directory); one on another data directory starts and
reaps nothing of the first; once the first is SIGKILLed, the next start reaps what it left.
"""

import subprocess

import pytest

from tests.fakes.payloads import SlackClient
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.process import (  # noqa: F401 (fixture)
    BotExited,
    BotProcesses,
    ProcessHarness,
    bot_env,
    bot_processes,
    leftovers,
)

pytestmark = pytest.mark.docker


def chain_rules(instance: str) -> list[str]:
    listing = subprocess.run(["iptables", "-w", "-S", f"OPSBOT-{instance}"[:28]],
                             capture_output=True, text=True, check=False)
    return listing.stdout.splitlines() if listing.returncode == 0 else []


async def test_a_second_serve_leaves_the_first_ones_containers_and_rules_alone(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        redis_server, redis_db, sandbox_image, docker_client, tmp_path):
    env = bot_env(slack_emulator, tmp_path / "a", redis_server.url, sandbox_image)
    first = await bot_processes.start(env)
    pooled = await wait_until(lambda: leftovers(docker_client, first.instance).pooled, 60,
                              lambda: "the first bot's warm pool never filled")
    assert chain_rules(first.instance), "the first bot's firewall chain exists"

    with pytest.raises(BotExited, match="is in use by a running opsbot"):
        await bot_processes.start(env)  # same data directory: refused, nothing touched
    second = await bot_processes.start(bot_env(slack_emulator, tmp_path / "b", redis_server.url,
                                               sandbox_image))
    assert second.instance != first.instance
    assert pooled <= set(leftovers(docker_client, first.instance).containers)
    assert chain_rules(first.instance), "the second start left the first one's chain"
    async with SlackClient(first.events_url) as client:  # and the first still works
        h = ProcessHarness(first, slack_emulator, client)
        await h.command("redis info section=server")
        assert "redis_version:" in (await h.report(await h.run_thread())).text

    await first.kill()
    assert leftovers(docker_client, first.instance).containers, "a crash leaves its pool"
    third = await bot_processes.start(bot_env(slack_emulator, tmp_path / "c", redis_server.url,
                                              sandbox_image))
    assert leftovers(docker_client, first.instance).empty, "the dead one's leftovers are reaped"
    assert not chain_rules(first.instance)
    assert leftovers(docker_client, second.instance).containers, "the live sibling is kept"
    assert any(e.get("event") == "sandbox.reaped_dead" and first.instance in e["instances"]
               for e in third.logs())
