"""A run's streamed message (Slack's ``chat.startStream`` / ``appendStream`` / ``stopStream``):
the run's plan, one task per step (each tool call: pending → in progress → complete / error, or
pending "waiting for approval"), and the model's answer as it is written.

Like the status message it replaces (``bot/slack_surface.py``), it never makes the run wait:
changes are coalesced and sent by a background flusher, at most one ``appendStream`` per
``interval``. ``finish`` sends the rest with ``stopStream`` at once: that is the run's answer,
and ``stopStream`` is another method with its own rate-limit bucket, so it does not wait out
the pacing of ``appendStream`` (a flusher waiting for its interval is stopped); it takes the
same lock as every piece, so it waits only for a piece already in flight, and pieces arrive
once and in order. Rate limits are the client's business: HTTP 429 and Slack's
``{"ok": false, "error": "ratelimited"}`` answered with HTTP 200 are both retried by the Web
API client's handlers (``bot/app.py``), so a storm delays the text but never drops it. Any
other refusal marks the stream broken: nothing more is sent to it and ``finish`` says so, for
the caller to post the answer as a plain message instead.

Usage::

    stream = AnswerStream(client, channel, ts, interval=1.0)
    stream.show(checklist)                      # tasks, sent in the background
    stream.write("reply-1", "Redis is ")        # the model's words as they come
    landed = await stream.finish("Redis is up.", "Run r-1 · done")
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from approvals.mrkdwn import escape, truncate
from graph.surface import Checklist, StepState
from tools.secrets import REDACTOR

log = structlog.get_logger("opsbot.slack")
Pace = Callable[[float], Awaitable[None]]
TASK_STATUS = {
    StepState.PENDING: "pending",
    StepState.RUNNING: "in_progress",
    StepState.OK: "complete",
    StepState.FAILED: "error",
    StepState.WAITING: "pending",
    StepState.SKIPPED: "complete",
}
MARKDOWN_CHUNK = 12_000  # Slack's limit on one markdown_text chunk
TASK_TITLE = 250
TASK_DETAILS = 500
PLAN_TITLE = 250


def task_chunk(key: str, text: str, state: StepState, detail: str) -> dict[str, Any]:
    """A ``task_update`` chunk for one checklist step (slack_sdk's ``TaskUpdateChunk`` shape)."""
    chunk = {"type": "task_update", "id": key[:64],
             "title": truncate(REDACTOR.redact(text or key), TASK_TITLE),
             "status": TASK_STATUS[state]}
    if detail:
        chunk["details"] = truncate(REDACTOR.redact(detail), TASK_DETAILS)
    return chunk


def plan_chunk(title: str) -> dict[str, Any]:
    return {"type": "plan_update", "title": truncate(REDACTOR.redact(title), PLAN_TITLE)}


def text_chunks(text: str) -> list[dict[str, Any]]:
    """The model's words as ``markdown_text`` chunks: redacted, Slack's control sequences
    escaped (``<!channel>`` shows as text), each within Slack's size limit."""
    safe = escape(REDACTOR.redact(text))
    return [{"type": "markdown_text", "text": safe[i:i + MARKDOWN_CHUNK]}
            for i in range(0, len(safe), MARKDOWN_CHUNK)]


class AnswerStream:
    """One streamed message, fed by progress (tasks) and by the model (text)."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, interval: float,
                 pace: Pace = asyncio.sleep):
        self.client, self.channel, self.ts = client, channel, ts
        self.interval, self.pace = interval, pace
        self.broken = False  # Slack refused a piece: nothing more goes to this stream
        self.answered = ""  # the words of the current reply that reached Slack
        self._title = self._sent_title = ""
        self._tasks: dict[str, dict[str, Any]] = {}
        self._sent_tasks: dict[str, dict[str, Any]] = {}
        self._reply = ""  # the model reply being written
        self._tool_replies: set[str] = set()  # replies that asked for tools: not the answer
        self._text = ""  # words of the current reply not sent yet
        self._stopped = False
        self._last: float | None = None  # monotonic time of the last piece sent
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._pacing: asyncio.Task[Any] | None = None  # the task waiting out an interval

    # what changes ----------------------------------------------------------------------------

    def show(self, checklist: Checklist) -> None:
        self._title = plan_title(checklist)
        for step in checklist.steps:
            self._tasks[step.key] = task_chunk(step.key, step.text, step.state, step.detail)
        self._kick()

    def write(self, reply_id: str, text: str, tools: bool = False) -> None:
        if reply_id in self._tool_replies:
            return
        if reply_id != self._reply:  # a new reply: the last one's unsent words were not it
            self._reply, self._text, self.answered = reply_id, "", ""
        if tools:
            self._tool_replies.add(reply_id)
            self._text = ""
            return
        self._text += text
        self._kick()

    # sending ---------------------------------------------------------------------------------

    async def flush(self, paced: bool = True) -> None:
        """Everything shown so far, in Slack before returning. ``paced=False`` sends it without
        waiting out the interval: the last piece of a drive that parks at its card, so that it
        is in Slack before the thread is let go (a resume may continue the stream elsewhere)."""
        if not paced:
            self._stop_pacing()
        async with self._lock:
            await self._send(final=False, paced=paced)

    async def finish(self, answer: str, title: str) -> bool:
        """The rest of ``answer`` (what the model's stream did not already deliver), the last
        tasks, and the stream stopped, without waiting for the pacing of ``appendStream``;
        False when Slack refused any of it."""
        self._stop_pacing()
        async with self._lock:
            if self._stopped:
                return not self.broken
            self._title = title
            self._text = self._unsent(answer)
            await self._send(final=True)
            self._stopped = True
            return not self.broken

    def _unsent(self, answer: str) -> str:
        """What of ``answer`` the stream has not shown yet ("": no answer, e.g. a run that
        ended before it began)."""
        if not answer or not self.answered:
            return answer
        if answer.startswith(self.answered):
            return answer[len(self.answered):]
        return f"\n\n{answer}"

    def _stop_pacing(self) -> None:
        if self._flusher is not None and self._flusher is self._pacing:
            self._flusher.cancel()  # it only waits out an interval: nothing is in flight

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_in_background())

    async def _flush_in_background(self) -> None:
        while self._changes() and not self._stopped and not self.broken:
            async with self._lock:
                if self._stopped:
                    return
                await self._send(final=False)

    async def _paced(self) -> None:
        """Wait out the rest of the ``appendStream`` interval (noting who waits, for finish).
        The first piece goes at once, however recently the host booted (the monotonic clock
        starts near 0 then: a start at 0.0 held the first piece up to ``interval``)."""
        if self._last is None:
            return
        self._pacing = asyncio.current_task()
        try:
            await self.pace(max(0.0, self.interval - (time.monotonic() - self._last)))
        finally:
            self._pacing = None

    def _changes(self) -> list[dict[str, Any]]:
        chunks = [plan_chunk(self._title)] if self._title != self._sent_title else []
        chunks += [c for k, c in self._tasks.items() if self._sent_tasks.get(k) != c]
        return chunks + (text_chunks(self._text) if self._text else [])

    async def _send(self, final: bool, paced: bool = True) -> None:
        if self.broken or self._stopped:
            return
        if not final and paced:
            await self._paced()
        chunks, title, tasks, text, reply = (self._changes(), self._title, dict(self._tasks),
                                             self._text, self._reply)
        if not chunks and not final:
            return
        method = self.client.chat_stopStream if final else self.client.chat_appendStream
        try:
            await method(channel=self.channel, ts=self.ts, **({"chunks": chunks} if chunks else {}))
        except SlackApiError as e:
            self.broken = True
            log.warning("stream refused", error=e.response.get("error"), final=final)
            return
        finally:
            self._last = time.monotonic()
        self._sent_title, self._sent_tasks = title, tasks
        if reply == self._reply:  # (a new reply may have begun while this was in flight)
            self.answered += text
            self._text = self._text[len(text):]


def plan_title(checklist: Checklist) -> str:
    head = f"Run {checklist.run_id} · {checklist.state.value}"
    return f"{head} · {checklist.headline.strip('`')}" if checklist.headline else head
