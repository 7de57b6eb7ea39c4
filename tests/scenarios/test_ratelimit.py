"""Issue 5, streaming progress under Slack's rate limits: status edits are coalesced, never block
the run, honour ``Retry-After`` on 429, and the last state and the report always land — in
order and exactly once. Issue 16: the report never waits for the status message's pacing.
"""

import asyncio
import itertools
import time

import pytest

from bot.app import slack_client
from bot.settings import Settings
from bot.slack_surface import StatusMessage
from tests.fakes.openai import Delay, text, tool_call
from tests.fakes.server import wait_until
from tests.fakes.slack import BOT_TOKEN
from tests.scenarios.harness import CHANNEL as OPS, RUN_ID, harness, settings_for
from tests.scenarios.llm_harness import mention
from tests.scenarios.process import AuditFile


CHANNEL = "C0STATUS"


@pytest.fixture
async def status(slack_emulator):
    slack_emulator.add_channel(CHANNEL, "status")
    client = slack_client(Settings(slack_bot_token=BOT_TOKEN,
                                   slack_api_url=slack_emulator.base_url))
    posted = await client.chat_postMessage(channel=CHANNEL, text="starting")
    return lambda interval, pace=asyncio.sleep: StatusMessage(client, CHANNEL, posted["ts"],
                                                              interval, pace)


def reported(h) -> bool:
    """The run manager audits a report after its final status and the report have landed."""
    return bool(AuditFile(h.bot.runtime.settings.data_dir).rows("report"))


def gaps(calls) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(calls)]


async def test_edits_are_coalesced_to_one_per_interval_and_the_last_state_lands(
        slack_emulator, status):
    message = status(0.4)
    for i in range(40):
        await message.show(f"step {i}")
        await asyncio.sleep(0.02)
    await message.show("final", final=True)

    updates = slack_emulator.calls("chat.update")
    assert 2 <= len(updates) <= 4, [u.params["text"] for u in updates]
    assert all(gap >= 0.38 for gap in gaps(updates)), gaps(updates)
    assert updates[-1].params["text"] == "final"
    assert slack_emulator.messages(CHANNEL)[0].text == "final"


async def test_a_final_state_right_after_steps_supersedes_them_without_waiting(
        slack_emulator, status):
    pacing = HeldPacing()
    message = status(5.0, pacing)
    await message.show("step 1")
    await message.show("step 2")
    await wait_until(lambda: pacing.held, 5, lambda: "the steps' edit never waited")
    began = time.monotonic()
    await message.show("final", final=True)
    assert time.monotonic() - began < 1.0, "no step edit was sent, so nothing to wait out"
    pacing.released.set()
    await message._flusher  # the steps' edit, released: it finds the final state sent
    assert [u.params["text"] for u in slack_emulator.calls("chat.update")] == ["final"]


async def test_steps_after_a_final_state_are_still_shown(slack_emulator, status):
    """A parked run's status is final (waiting for approval), then its resume shows steps."""
    message = status(0.05)
    await message.show("waiting", final=True)
    await message.show("running again")
    await slack_emulator.wait_for(lambda: slack_emulator.messages(CHANNEL)[0].text
                                  == "running again", 5)


async def test_a_slow_slack_never_blocks_the_run(slack_emulator, status):
    slack_emulator.delay("chat.update", 0.5)
    message = status(0.05)
    began = time.monotonic()
    for i in range(20):
        await message.show(f"step {i}")
    assert time.monotonic() - began < 0.1
    await message.show("final", final=True)
    assert slack_emulator.messages(CHANNEL)[0].text == "final"


async def test_final_state_waits_out_429s_and_lands_once(slack_emulator, status):
    slack_emulator.rate_limit("chat.update", times=2, retry_after=1)
    message = status(0.05)
    began = time.monotonic()
    await message.show("final", final=True)
    assert time.monotonic() - began >= 2.0, "Retry-After: 1 was honoured twice"
    updates = slack_emulator.calls("chat.update")
    assert [u.status for u in updates] == [429, 429, 200]
    assert all(gap >= 0.95 for gap in gaps(updates))
    assert slack_emulator.messages(CHANNEL)[0].text == "final"


@pytest.mark.docker
async def test_a_429_storm_during_a_run_delays_but_never_drops_reorders_or_duplicates(
        hl, llm_api, redis_db):
    slack = hl.slack
    slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    slack.rate_limit("chat.update", times=3, retry_after=1)
    llm_api.push(tool_call("redis__info", {"section": "server"}), Delay(1.0),
                 text("Redis is up and answering."))
    thread = await mention(hl, "is redis up?")
    await llm_api.wait_for(lambda: len(llm_api.requests()) >= 2, 30)
    slack.rate_limit("chat.postMessage", times=1, retry_after=1)  # hits the report
    report = await hl.report(thread, timeout=60)
    await slack.wait_for(lambda: reported(hl))  # the run is over: nothing more will be sent

    replies = [m for m in slack.thread("C0OPS", thread) if m.ts != thread]
    assert len(replies) == 2, [m.text[:60] for m in replies]
    status_message, last = replies
    assert last.ts == report.ts and "Redis is up and answering." in report.text
    assert "· done" in status_message.text and "✅ Read Redis INFO (server)" in status_message.text

    posts = slack.calls("chat.postMessage")
    updates = [u for u in slack.calls("chat.update") if u.params.get("ts") == status_message.ts]
    assert [p.status for p in posts] == [429, 200, 429, 200], "one status, one report, no dupes"
    assert sum(u.status == 429 for u in updates) == 3
    for calls in (posts, updates):
        for limited, retry in itertools.pairwise(calls):
            if limited.status == 429:
                assert retry.at - limited.at >= 0.95, "Retry-After honoured"
    final_update = max(u.at for u in updates if u.status == 200 and "· done" in u.params["text"])
    assert posts[-1].at < final_update, "the report goes first; the last status follows it"


class HeldPacing:
    """Status-edit pacing held until released: whatever reaches Slack while it is held did
    not wait for an edit interval."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.held: list[float] = []  # the waits asked for
        self.returned = 0  # the waits that ended (each one's caller has then gone on)

    async def __call__(self, seconds: float) -> None:
        if seconds > 0:
            self.held.append(seconds)
            await self.released.wait()
            self.returned += 1


@pytest.mark.docker
async def test_a_quick_runs_last_state_does_not_wait_for_the_pacing_of_its_steps(
        slack_emulator, redis_server, sandbox_image, tmp_path):
    """Steps are debounced (their first edit waits an interval, held here for good): the
    run's final state supersedes them and lands at once, after the report; the held step edit,
    released, sends nothing more."""
    pacing = HeldPacing()
    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data")
    async with harness(settings, slack_emulator, status_interval=3600, status_pace=pacing) as h:
        await h.command("redis info section=server")
        thread = await h.run_thread()
        report = await h.posted_report(thread, timeout=30)
        assert "redis_version:" in report.text
        await h.ended(RUN_ID.search(report.text).group(1))  # while every paced wait is held
        assert pacing.held, "a step edit is waiting out its debounce"
        status = h.slack.message(OPS, thread)
        assert "· done" in status.text and "✅ Read Redis INFO (server)" in status.text

        pacing.released.set()
        await wait_until(lambda: pacing.returned == len(pacing.held), 5,
                         lambda: "a held step edit never went on")  # and found nothing to send
        posted = next(c for c in slack_emulator.calls("chat.postMessage")
                      if c.params.get("thread_ts") == thread)
        edits = [u for u in slack_emulator.calls("chat.update") if u.params.get("ts") == thread]
        assert ["· done" in u.params["text"] for u in edits] == [True], "the last state, once"
        assert posted.at < edits[0].at, "after the report"
