"""The Slack side of a run: one status message edited in place, cards, the report.

Status edits are coalesced per message (at most one ``chat.update`` per ``interval``); the last
state always lands because ``final=True`` flushes under the same lock that orders every edit.
429s are absorbed by slack_sdk's ``AsyncRateLimitErrorRetryHandler`` (it sleeps ``Retry-After``),
so a rate-limit storm delays messages but never drops or duplicates them. Every outgoing string
passes through the redactor.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvals.cards import approval_card
from approvals.models import ApprovalRequest
from bot.blocks import clip, report_message
from graph.surface import Checklist, Report, RunRef, RunState
from tools.secrets import REDACTOR

log = structlog.get_logger("opsbot.slack")
REACTIONS = {
    RunState.RUNNING: "eyes",
    RunState.WAITING: "hourglass_flowing_sand",
    RunState.DONE: "white_check_mark",
    RunState.FAILED: "x",
    RunState.CANCELLED: "heavy_multiplication_x",
    RunState.INTERRUPTED: "warning",
}


class StatusMessage:
    """Coalesces edits of one message: ≤ 1 ``chat.update`` per interval, last state always sent."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, interval: float):
        self.client, self.channel, self.ts, self.interval = client, channel, ts, interval
        self._latest = self._sent = ""
        self._last = 0.0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    async def show(self, text: str, final: bool = False) -> None:
        self._latest = text
        wait = self.interval - (time.monotonic() - self._last)
        if final or wait <= 0:
            await self.flush()
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._later(wait))

    async def flush(self) -> None:
        async with self._lock:
            text = self._latest
            if text == self._sent:
                return
            await self.client.chat_update(channel=self.channel, ts=self.ts, text=text)
            self._sent, self._last = text, time.monotonic()

    async def _later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.flush()
        except SlackApiError as e:
            log.warning("status update failed", error=e.response.get("error"))


class SlackSurface:
    def __init__(self, client: AsyncWebClient, interval: float = 1.0):
        self.client = client
        self.interval = interval
        self._status: dict[str, StatusMessage] = {}

    async def open_run(self, run: RunRef, checklist: Checklist) -> RunRef:
        text = self._status_text(run, checklist)
        thread = run.thread_ts or run.task.thread_ts
        response = await self._post(channel=run.task.channel, thread_ts=thread, text=text)
        ts = response["ts"]
        located = run.model_copy(update={"thread_ts": thread or ts, "status_ts": ts})
        self._status[run.run_id] = StatusMessage(self.client, run.task.channel, ts, self.interval)
        await self._react(located, RunState.RUNNING)
        return located

    async def progress(self, run: RunRef, checklist: Checklist, final: bool = False) -> None:
        status = self._status_message(run)
        if status is None:
            return
        try:
            await status.show(REDACTOR.redact(self._status_text(run, checklist)), final=final)
        except SlackApiError as e:
            log.warning("status update failed", error=e.response.get("error"))
        if final:
            await self._react(run, checklist.state)
            self._status.pop(run.run_id, None)

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        response = await self._post(channel=run.task.channel, thread_ts=run.thread_ts,
                                    **approval_card(request))
        return response["ts"]

    async def update_approval(self, run: RunRef, request: ApprovalRequest) -> None:
        if request.card_ts:
            await self.client.chat_update(channel=request.channel, ts=request.card_ts,
                                          **REDACTOR.redact_obj(approval_card(request)))

    async def report(self, run: RunRef, report: Report) -> None:
        message, full = report_message(report)
        await self._post(channel=run.task.channel, thread_ts=run.thread_ts, **message)
        if full is not None:
            await self.client.files_upload_v2(
                channel=run.task.channel, thread_ts=run.thread_ts,
                filename=f"opsbot-{run.run_id}.md", title=f"Run {run.run_id} report",
                content=REDACTOR.redact(full),
            )

    async def say(self, run: RunRef, text: str) -> None:
        await self._post(channel=run.task.channel, thread_ts=run.thread_ts, text=text)

    async def _post(self, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return await self.client.chat_postMessage(**REDACTOR.redact_obj(kwargs))

    def _status_message(self, run: RunRef) -> StatusMessage | None:
        if run.run_id not in self._status and run.status_ts:
            self._status[run.run_id] = StatusMessage(self.client, run.task.channel,
                                                     run.status_ts, self.interval)
        return self._status.get(run.run_id)

    def _status_text(self, run: RunRef, checklist: Checklist) -> str:
        asked = f"<@{run.task.user}> asked" if run.task.source != "alert" else "PagerDuty alert"
        return clip(f"{asked}\n{checklist.render()}", 3900)

    async def _react(self, run: RunRef, state: RunState) -> None:
        name = REACTIONS.get(state)
        if not name or not run.task.message_ts:
            return
        try:
            await self.client.reactions_add(channel=run.task.channel, timestamp=run.task.message_ts,
                                            name=name)
        except SlackApiError as e:
            log.info("reaction not added", error=e.response.get("error"))
