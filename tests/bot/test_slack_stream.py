"""A run's streamed message (``bot/slack_stream.py``) against the Slack emulator: the pacing
of ``appendStream`` never holds the first piece, whatever the host's monotonic clock reads."""

from __future__ import annotations

import time

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_stream import AnswerStream
from graph.surface import Checklist, RunState, StepState
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator
from tests.fakes.test_slack_web import client, slack  # noqa: F401 - fixtures
from tests.scenarios.test_streaming import StoppedPacing


async def opened(client: AsyncWebClient) -> str:
    parent = await client.chat_postMessage(channel="C1", text="is redis up?")
    started = await client.chat_startStream(channel="C1", thread_ts=parent["ts"],
                                            recipient_user_id="U1", recipient_team_id="T1")
    return started["ts"]


async def test_the_first_piece_goes_at_once_even_just_after_the_host_booted(
        client: AsyncWebClient, slack: SlackEmulator) -> None:
    """An interval longer than the clock has run is what a host sees in its first seconds
    (``time.monotonic`` starts near 0 at boot): the first piece must not wait for it; the
    second, right after, does."""
    pacing = StoppedPacing()
    stream = AnswerStream(client, "C1", await opened(client),
                          interval=time.monotonic() + 3600, pace=pacing)
    checklist = Checklist(run_id="r-1", state=RunState.RUNNING)
    checklist.step("c1", "Read INFO", StepState.RUNNING)
    stream.show(checklist)
    await wait_until(lambda: slack.calls("chat.appendStream"), 5,
                     lambda: f"the first piece waited {pacing.held} s")

    checklist.step("c1", "Read INFO", StepState.OK)
    stream.show(checklist)
    await wait_until(lambda: pacing.held, 5, lambda: "the second piece was not paced")
    assert len(slack.calls("chat.appendStream")) == 1 and pacing.held[0] > 3000

    assert await stream.finish("Redis is up.", "Run r-1 · done")
    assert [c.method for c in slack.calls()][-1] == "chat.stopStream"
