"""opsbot started with SLACK_APP_TOKEN talks to Slack over Socket Mode, not HTTP.

The process opens the link with ``apps.connections.open`` (app-level token), receives envelopes
over the emulator's WebSocket and acks each one on the same socket; the run's messages still go
through the Web API.
"""

import aiohttp
import pytest

from tests.fakes.payloads import slash_command
from tests.fakes.slack import APP_TOKEN, SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import CHANNEL, REQUESTER
from tests.scenarios.process import (  # noqa: F401 (fixture)
    BotProcesses,
    bot_env,
    bot_processes,
)

pytestmark = pytest.mark.docker


def _report(slack: SlackEmulator, thread: str):
    return next((m for m in slack.thread(CHANNEL, thread)
                 if m.ts != thread and "*Run `r-" in m.text), None)


async def test_redis_info_over_socket_mode(bot_processes: BotProcesses,  # noqa: F811
                                           slack_emulator: SlackEmulator,  # noqa: F811
                                           redis_server, redis_db, sandbox_image, tmp_path):
    slack = slack_emulator
    env = bot_env(slack, tmp_path / "data", redis_server.url, sandbox_image, socket_mode=True)
    bot = await bot_processes.start(env, console_script=True)
    await slack.socket.wait_for_connection(timeout=20)
    opened = slack.calls("apps.connections.open")
    assert opened and opened[0].headers["Authorization"] == f"Bearer {APP_TOKEN}"

    envelope = slack.socket.send_payload(
        slash_command("redis info section=server", user=REQUESTER, channel=CHANNEL, slack=slack))
    ack = await slack.socket.wait_for_ack(envelope, timeout=10)
    assert not ack.payload, "a run is acknowledged empty; its answer goes to the thread"

    roots = await slack.wait_for(lambda: [m for m in slack.messages(CHANNEL)
                                          if not m.is_reply and "opsbot" in m.text], 20)
    report = await slack.wait_for(lambda: _report(slack, roots[0].ts), 60)
    assert "redis_version:" in report.text and "done" in report.text

    helped = slack.socket.send_payload(slash_command("help", user=REQUESTER, channel=CHANNEL,
                                                     slack=slack))
    answer = await slack.socket.wait_for_ack(helped, timeout=10)
    assert "`redis info" in answer.payload["text"], "a typed answer rides on the ack itself"
    assert slack.socket.frames() == [], "nothing but acks went up the socket"
    async with aiohttp.ClientSession() as session, \
            session.post(bot.events_url, data=b"{}") as response:
        assert response.status == 404, "no HTTP Slack endpoint in Socket Mode"
