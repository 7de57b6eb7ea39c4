"""The Slack side of a run: one status message edited in place, cards, the report.

An agent run (``RunRef.stream``) gets a streamed message instead of the status message
(``bot/slack_stream.py``: a plan with a task per step, and the answer as the model writes it);
where Slack refuses to stream (an older workspace answers ``unknown_method``) the run falls
back to the status message, and the surface stops trying.

Status edits are coalesced per message: at most one ``chat.update`` per ``interval`` (1 s in
production; Slack's ``chat.update`` is Tier 3, shared by every run in the workspace). Progress
never waits for Slack: intermediate states are sent by a background flusher, so a slow or
rate-limited Slack delays the message, not the investigation. ``final=True`` waits until the
last state has landed (still respecting the interval), under the same lock that orders every
edit, so nothing is lost and edits never arrive out of order. The pacing holds back edits of the
status message only: a run's report is a new message (``chat.postMessage``, another rate-limit
bucket) that the driver posts before the last status edit, so the answer never waits for it.

429s are absorbed by slack_sdk's ``AsyncRateLimitErrorRetryHandler`` (``bot/app.py``; it sleeps
``Retry-After`` and retries), so a rate-limit storm delays messages but never drops or
duplicates them. Every outgoing string passes through the redactor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvals.cards import approval_card, attachment, attachment_name
from approvals.mrkdwn import truncate
from approvals.models import ApprovalRequest
from bot.blocks import TEXT, report_message, report_text
from bot.slack_stream import AnswerStream, plan_chunk, plan_title
from graph.surface import Checklist, Report, RunRef, RunState, StepState
from graph.task import Source, Task
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
NO_STREAMING = ("unknown_method", "not_allowed_token_type", "missing_scope", "not_allowed")
STATUS_TEXT = 3900
STATUS_LINE = 150  # an assistant thread's status  # chat.update refuses text over 4,000 characters
Pace = Callable[[float], Awaitable[None]]  # waits out the rest of an edit interval


class StatusMessage:
    """One message edited in place: ≤ 1 ``chat.update`` per ``interval``, the last state always
    sent. Steps are debounced: the first edit of a burst waits an interval, so a quick run's
    final state supersedes its steps and lands at once — its drive does not wait out the pacing
    of an edit nobody needed (the final state waits only for an edit sent less than an interval
    ago).

    Usage::

        status = StatusMessage(client, channel, ts, interval=1.0)
        await status.show("step 1")              # returns at once; sent in the background
        await status.show("done", final=True)    # returns once "done" is in Slack
    """

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, interval: float,
                 pace: Pace = asyncio.sleep):
        self.client, self.channel, self.ts, self.interval = client, channel, ts, interval
        self.pace = pace
        self._latest = self._sent = ""
        self._last: float | None = None  # monotonic time of the last edit
        self._final = False
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def show(self, text: str, final: bool = False) -> None:
        self._latest = text
        if final:
            self._final = True  # a step edit still debouncing will not follow it
            try:
                await self._send_latest()
            finally:
                self._final = False
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        try:
            if self._last is None:
                await self.pace(self.interval)  # debounce the burst's first edit
            while self._latest != self._sent and not self._final:
                await self._send_latest()
        except SlackApiError as e:
            log.warning("status update failed", error=e.response.get("error"))
        except Exception as e:  # noqa: BLE001 - a background edit must not die unseen
            log.warning("status update failed", error=type(e).__name__)

    async def _send_latest(self) -> None:
        async with self._lock:
            if self._latest == self._sent:
                return
            if self._last is not None:
                await self.pace(max(0.0, self.interval - (time.monotonic() - self._last)))
            text = self._latest
            try:
                await self._send(text)
            finally:
                self._last = time.monotonic()
            self._sent = text

    async def _send(self, text: str) -> None:
        await self.client.chat_update(channel=self.channel, ts=self.ts, text=text)


class ThreadStatus(StatusMessage):
    """An assistant thread's status line (``assistant.threads.setStatus``: "is reading Redis
    INFO…"), paced and coalesced like the status message; Slack clears it when opsbot replies."""

    async def _send(self, text: str) -> None:
        await self.client.assistant_threads_setStatus(channel_id=self.channel,
                                                      thread_ts=self.ts, status=text)


def doing(checklist: Checklist) -> str:
    """An assistant thread's status for a checklist: the step under way (``""`` clears it)."""
    if checklist.state.final:
        return ""
    waiting = [s for s in checklist.steps if s.state is StepState.WAITING]
    if waiting or checklist.state is RunState.WAITING:
        return truncate(f"is waiting for approval: {waiting[0].text}" if waiting
                        else "is waiting for approval", STATUS_LINE)
    running = [s for s in checklist.steps if s.state is StepState.RUNNING]
    return truncate(f"is working: {running[-1].text}…" if running else "is working…",
                    STATUS_LINE)


class SlackSurface:
    """:class:`graph.surface.Surface` for Slack: status message, approval cards, reports."""

    def __init__(self, client: AsyncWebClient, interval: float = 1.0,
                 pace: Pace = asyncio.sleep):
        self.client = client
        self.interval = interval
        self.pace = pace
        self._status: dict[str, StatusMessage] = {}
        self._streams: dict[str, AnswerStream] = {}
        self._thread_status: dict[str, ThreadStatus] = {}
        self._reactions: dict[str, str] = {}
        self._reacting: dict[str, asyncio.Task[None]] = {}  # a run's first reaction, under way
        self.streaming = True  # until the workspace answers that it can't stream

    async def open_run(self, run: RunRef, checklist: Checklist) -> RunRef:
        if run.stream:
            streamed = await self._open_stream(run, checklist)
            if streamed is not None:
                return streamed
            run = run.model_copy(update={"stream": False})
        text = self._status_text(run, checklist)
        thread = run.thread_ts or run.task.thread_ts
        response = await self._post(channel=run.task.channel, thread_ts=thread, text=text)
        ts = response["ts"]
        located = run.model_copy(update={"thread_ts": thread or ts, "status_ts": ts})
        self._status[run.run_id] = self._status_for(run.task.channel, ts)
        self._react_soon(located, RunState.RUNNING)
        return located

    async def _open_stream(self, run: RunRef, checklist: Checklist) -> RunRef | None:
        """The run's streamed message in its thread; None where Slack can't stream it (an
        older workspace, a run that starts its own thread, a requester who is not a person)."""
        thread = run.thread_ts or run.task.thread_ts
        if not (self.streaming and thread and run.task.team and run.task.user.startswith(("U", "W"))):
            return None
        try:
            response = await self.client.chat_startStream(
                channel=run.task.channel, thread_ts=thread, recipient_user_id=run.task.user,
                recipient_team_id=run.task.team, task_display_mode="plan",
                chunks=[plan_chunk(plan_title(checklist))])
        except SlackApiError as e:
            error = e.response.get("error")
            self.streaming = self.streaming and error not in NO_STREAMING
            log.info("streaming unavailable; using a status message", error=error)
            return None
        located = run.model_copy(update={"thread_ts": thread, "status_ts": response["ts"]})
        self._streams[run.run_id] = self._stream_for(run.task.channel, response["ts"])
        self._react_soon(located, RunState.RUNNING)
        return located

    async def answer(self, run: RunRef, reply_id: str, text: str, tools: bool = False) -> None:
        stream = self._answer_stream(run)
        if stream is not None:
            stream.write(reply_id, text, tools)

    async def progress(self, run: RunRef, checklist: Checklist, final: bool = False) -> None:
        await self._assistant_status(run, checklist, final)
        stream = self._answer_stream(run)
        if stream is not None:
            await self._stream_progress(run, stream, checklist, final)
            return
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

    async def _assistant_status(self, run: RunRef, checklist: Checklist, final: bool) -> None:
        """In an assistant thread, what the run is doing, as the thread's status."""
        if run.task.source != Source.ASSISTANT or not run.thread_ts:
            return
        status = self._thread_status.get(run.run_id)
        if status is None:
            status = self._thread_status[run.run_id] = ThreadStatus(
                self.client, run.task.channel, run.thread_ts, self.interval, self.pace)
        try:
            await status.show(REDACTOR.redact(doing(checklist)), final=final)
        except SlackApiError as e:
            log.info("thread status not set", error=e.response.get("error"))
        if final:  # a resumed drive sets it again from the run
            self._thread_status.pop(run.run_id, None)

    async def _stream_progress(self, run: RunRef, stream: AnswerStream, checklist: Checklist,
                               final: bool) -> None:
        stream.show(checklist)
        if not final:
            return
        if checklist.state.final:  # its report stopped it; if not (stopped as it opened), here
            await stream.finish("", plan_title(checklist))
        else:
            # a run parked at its card sends its last state at once: waiting out the pacing
            # would hold the thread from the click that resumes it, and leaving it to the
            # background could land it after the resumed drive's own pieces (on another worker)
            await stream.flush(paced=False)
        await self._react(run, checklist.state)
        self._streams.pop(run.run_id, None)  # a resumed drive continues it from status_ts

    async def ask_approval(self, run: RunRef, request: ApprovalRequest) -> str | None:
        """The card; first, when the card can't show the whole action, the file that does."""
        complete = attachment(request)
        if complete is not None:
            await self.client.files_upload_v2(
                channel=run.task.channel, thread_ts=run.thread_ts,
                filename=attachment_name(request), title=f"Approval {request.id}: the action",
                content=REDACTOR.redact(complete),
            )
        response = await self._post(channel=run.task.channel, thread_ts=run.thread_ts,
                                    **approval_card(request))
        return response["ts"]

    async def update_approval(self, run: RunRef, request: ApprovalRequest) -> None:
        if request.card_ts:
            await self.client.chat_update(channel=request.channel, ts=request.card_ts,
                                          **REDACTOR.redact_obj(approval_card(request)))

    async def report(self, run: RunRef, report: Report) -> None:
        """The report in the thread; the full text as a file when it had to be shortened. A
        streamed run's answer is finished in its stream; the report then leaves it out (it
        keeps it when the stream was refused, so the answer is never lost)."""
        stream = self._answer_stream(run)
        if stream is not None and await stream.finish(
                report.answer, f"Run {run.run_id} · {report.state.value}"):
            report = report.model_copy(update={"answer": ""})
        message, full = report_message(report)
        try:
            await self._post(channel=run.task.channel, thread_ts=run.thread_ts, **message)
        except SlackApiError as e:  # never lose a report to a layout Slack refuses
            log.warning("report refused; sending it as text and a file",
                        error=e.response.get("error"))
            full = report_text(report)
            await self._post(channel=run.task.channel, thread_ts=run.thread_ts,
                             text=truncate(full, TEXT))
        if full is not None:
            await self.client.files_upload_v2(
                channel=run.task.channel, thread_ts=run.thread_ts,
                filename=f"opsbot-{run.run_id}.md", title=f"Run {run.run_id} report",
                content=REDACTOR.redact(full),
            )

    async def say(self, run: RunRef, text: str) -> None:
        await self._post(channel=run.task.channel, thread_ts=run.thread_ts, text=text)

    async def refused(self, task: Task, text: str) -> None:
        """An ephemeral message to the requester where they asked (the thread, if any)."""
        where = {k: v for k, v in {"thread_ts": task.thread_ts}.items() if v}
        try:
            await self.client.chat_postEphemeral(
                channel=task.channel, user=task.user, text=REDACTOR.redact(text), **where)
        except SlackApiError as e:  # e.g. the bot is not in that channel: nothing can reach them
            log.warning("refusal not delivered", error=e.response.get("error"))

    async def _post(self, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return await self.client.chat_postMessage(**REDACTOR.redact_obj(kwargs))

    def _answer_stream(self, run: RunRef) -> AnswerStream | None:
        if not run.stream:
            return None
        if run.run_id not in self._streams and run.status_ts:  # another process opened it
            self._streams[run.run_id] = self._stream_for(run.task.channel, run.status_ts)
        return self._streams.get(run.run_id)

    def _stream_for(self, channel: str, ts: str) -> AnswerStream:
        return AnswerStream(self.client, channel, ts, self.interval, self.pace)

    def _status_message(self, run: RunRef) -> StatusMessage | None:
        if run.run_id not in self._status and run.status_ts:
            self._status[run.run_id] = self._status_for(run.task.channel, run.status_ts)
        return self._status.get(run.run_id)

    def _status_for(self, channel: str, ts: str) -> StatusMessage:
        return StatusMessage(self.client, channel, ts, self.interval, self.pace)

    def _status_text(self, run: RunRef, checklist: Checklist) -> str:
        alert = run.task.alert if run.task.source in (Source.ALERT, Source.WEBHOOK) else None
        asked = f"{alert.origin} alert" if alert else f"<@{run.task.user}> asked"
        return truncate(f"{asked}\n{checklist.render()}", STATUS_TEXT)

    def _react_soon(self, run: RunRef, state: RunState) -> None:
        """The reaction without holding the run's first step up for a Slack round trip; the
        run's next reaction waits for this one, so they land in order."""
        task = asyncio.ensure_future(self._react(run, state))
        self._reacting[run.run_id] = task
        task.add_done_callback(lambda done: self._reacted(run.run_id, done))

    def _reacted(self, run_id: str, task: asyncio.Task[None]) -> None:
        if self._reacting.get(run_id) is task:
            del self._reacting[run_id]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("reaction not changed", error=f"{type(error).__name__}: {error}")

    async def _react(self, run: RunRef, state: RunState) -> None:
        """Show the run's state on the triggering message: one reaction, swapped as it moves."""
        earlier = self._reacting.get(run.run_id)
        if earlier is not None and earlier is not asyncio.current_task():
            await asyncio.wait({earlier})  # its outcome is its own (logged when it failed)
        name = REACTIONS.get(state)
        shown = self._reactions.get(run.run_id)
        if not name or not run.task.message_ts or name == shown:
            return
        where = {"channel": run.task.channel, "timestamp": run.task.message_ts}
        try:
            await self.client.reactions_add(name=name, **where)
            if shown:
                await self.client.reactions_remove(name=shown, **where)
        except SlackApiError as e:
            log.info("reaction not changed", error=e.response.get("error"))
        if state.final:
            self._reactions.pop(run.run_id, None)
        else:
            self._reactions[run.run_id] = name