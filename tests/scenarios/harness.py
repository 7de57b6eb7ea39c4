"""The whole bot, in-process, on a real port: Slack emulator in front, real Redis, Docker
sandbox and SQLite behind. Scenarios drive it with signed HTTP deliveries and read the outcome
from the emulator (what the bot sent) and from the real services.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from approvals.cards import APPROVE_ACTION, DENY_ACTION, DENY_VIEW
from bot.server import RunningBot, running_bot
from bot.settings import Settings
from tests.fakes.payloads import (
    SIGNING_SECRET,
    Delivery,
    Payload,
    SlackClient,
    block_actions,
    slash_command,
    view_submission,
)
from tests.fakes.slack import BOT_TOKEN, SlackEmulator
from tests.fakes.slack_workspace import Message

REQUESTER, APPROVER, LEAD, OUTSIDER, GROUPIE = "UREQ1", "UAPPR1", "ULEAD1", "UOUT1", "UGRP1"
CHANNEL = "C0OPS"
POLICY = f"""\
version: 1
groups:
  sre: {{users: [{APPROVER}, {LEAD}], slack_groups: [S0SRE]}}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
  requester_may_approve: {{3: true}}
"""
RUN_ID = re.compile(r"`(r-[0-9a-f]{8})`")


def settings_for(slack: SlackEmulator, redis_url: str, data_dir: Path, policy_text: str = POLICY,
                 **more: Any) -> Settings:
    data_dir.mkdir(parents=True, exist_ok=True)
    policy = data_dir / "policy.yml"
    if not policy.exists():
        policy.write_text(policy_text)
    values = dict(slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET,
                  slack_api_url=slack.base_url, redis_url=redis_url, data_dir=data_dir,
                  policy=policy, port=0, workers=2)
    values.update(more)
    return Settings(**values)


@dataclass
class Harness:
    bot: RunningBot
    slack: SlackEmulator
    client: SlackClient
    channel: str = CHANNEL

    async def command(self, text: str, user: str = REQUESTER, **kw: Any) -> Delivery:
        return await self.client.post(slash_command(text, user=user, channel=self.channel,
                                                    slack=self.slack), **kw)

    async def post(self, payload: Payload, **kw: Any) -> Delivery:
        return await self.client.post(payload, **kw)

    def top_level(self) -> list[Message]:
        return [m for m in self.slack.messages(self.channel) if not m.is_reply]

    async def run_thread(self, index: int = -1, timeout: float = 20) -> str:
        """The ts of a run's status message (the thread root for slash-command runs); with
        ``index >= 0``, waits until that many runs have posted theirs."""
        need = index + 1 if index >= 0 else 1

        def roots():
            found = [m for m in self.top_level() if "opsbot" in m.text]
            return found if len(found) >= need else None

        return (await self.slack.wait_for(roots, timeout))[index].ts

    async def report(self, thread_ts: str, timeout: float = 60) -> Message:
        """The run's report in the thread, once the run is recorded as ended (its status
        message's last edit, which follows the report under its own pacing, has landed)."""
        report = await self.posted_report(thread_ts, timeout)
        await self.ended(RUN_ID.search(report.text).group(1), timeout)
        return report

    async def posted_report(self, thread_ts: str, timeout: float = 60) -> Message:
        """The run's report as soon as it is in the thread."""
        def find():
            return next((m for m in self.slack.thread(self.channel, thread_ts)
                         if m.ts != thread_ts and "*Run `r-" in m.text), None)
        return await self.slack.wait_for(find, timeout)

    async def ended(self, run_id: str, timeout: float = 30) -> None:
        async def over() -> bool:
            row = await self.bot.runtime.records.runs.row(run_id)
            return row is not None and row.state.final
        await self.slack.wait_for(over, timeout)

    async def card(self, thread_ts: str, timeout: float = 30) -> Message:
        def find():
            return next((m for m in self.slack.thread(self.channel, thread_ts)
                         if any(b.get("block_id", "").startswith("approval:") for b in m.blocks)),
                        None)
        return await self.slack.wait_for(find, timeout)

    def button_value(self, card: Message, action_id: str = APPROVE_ACTION) -> str:
        for block in card.blocks:
            for element in block.get("elements", []):
                if element.get("action_id") == action_id:
                    return element["value"]
        raise AssertionError(f"no {action_id} button on the card: {card.blocks}")

    async def click(self, card: Message, user: str, action_id: str = APPROVE_ACTION,
                    value: str | None = None, channel: str | None = None) -> Delivery:
        current = self.slack.message(self.channel, card.ts) or card
        value = value if value is not None else self.button_value(current, action_id)
        return await self.post(block_actions(user=user, channel=channel or self.channel,
                                             message_ts=card.ts, action_id=action_id,
                                             value=value, slack=self.slack))

    async def deny(self, card: Message, user: str, reason: str = "") -> Delivery:
        opened = len(self.slack.views())  # the modal this click opens, not an earlier one
        await self.click(card, user, DENY_ACTION)
        view = (await self.slack.wait_for(lambda: self.slack.views()[opened:]))[-1]
        return await self.post(view_submission(
            user=user, callback_id=DENY_VIEW, view_id=view.id, slack=self.slack,
            private_metadata=view.view["private_metadata"],
            values={"reason": {"reason": {"type": "plain_text_input", "value": reason}}}))

    async def ephemeral(self, user: str, contains: str, timeout: float = 10) -> str:
        found = await self.slack.wait_for(
            lambda: [e.text for e in self.slack.ephemerals(user) if contains in e.text], timeout)
        return found[-1]

    def card_state(self, card: Message) -> Message:
        return self.slack.message(self.channel, card.ts)


@asynccontextmanager
async def harness(settings: Settings, slack: SlackEmulator, runbooks: Any = None,
                  incident_grace_s: float = 5.0, streaming: bool = False,
                  **bot_options: Any) -> AsyncIterator[Harness]:
    """``bot_options`` go to :func:`~bot.server.running_bot` (status pacing, say).

    The workspace can't stream (``chat.*Stream`` answer ``unknown_method``) unless
    ``streaming``: agent runs then show the edited status message, the fallback that the
    scenarios written before streaming check; ``test_streaming.py`` runs with it."""
    if not streaming:
        slack.without_streaming()
    slack.add_channel(CHANNEL, "ops")
    slack.set_usergroup("S0SRE", [GROUPIE])
    bot_options.setdefault("status_interval", 0.05)
    async with (
        running_bot(settings, host="127.0.0.1", runbooks=runbooks,
                    incident_grace_s=incident_grace_s, **bot_options) as bot,
        SlackClient(f"{bot.url}/slack/events") as client,
    ):
        yield Harness(bot, slack, client)
