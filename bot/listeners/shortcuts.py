"""The message shortcut "Investigate this message": a run in that message's thread, asked by
the person who chose it, with the message as untrusted context.

The message's text is never parsed as a command (a message reading ``redis flushdb`` does not
flush anything): the task's text is a fixed request, and the message travels as
:class:`graph.task.Quote`, which the agent frames as untrusted data.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot import messages
from bot.deps import BotDeps
from graph.task import Quote, Source, Task

INVESTIGATE = "investigate_message"  # the shortcut's callback_id in manifest.yml
QUOTE_CHARS = 8000


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.shortcut(INVESTIGATE)
    async def investigate(ack, shortcut) -> None:
        await ack()
        task = task_for(shortcut)
        if task is not None:
            deps.spawn(deps.submit(task))


def task_for(shortcut: dict) -> Task | None:
    """The run a ``message_action`` asks for; None when the payload lacks what it needs."""
    message = shortcut.get("message") or {}
    channel = (shortcut.get("channel") or {}).get("id")
    user = (shortcut.get("user") or {}).get("id")
    ts = message.get("ts") or shortcut.get("message_ts")
    if not (channel and user and ts):
        return None
    author = message.get("user") or message.get("bot_id") or ""
    return Task(source=Source.SHORTCUT, team=(shortcut.get("team") or {}).get("id") or "",
                channel=channel, user=user, text=messages.INVESTIGATE_REQUEST,
                thread_ts=message.get("thread_ts") or ts, message_ts=ts,
                quote=Quote(author=author, text=_text(message)[:QUOTE_CHARS]))


def _text(message: dict) -> str:
    """The message's words: its text, or its attachments' when it has none (alert bots)."""
    if message.get("text"):
        return str(message["text"])
    parts = [a.get("fallback") or a.get("text") or "" for a in message.get("attachments") or []]
    return "\n".join(p for p in parts if p)
