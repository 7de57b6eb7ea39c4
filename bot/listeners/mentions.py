"""``@opsbot ...`` in a channel or thread: one run in that thread."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from graph.task import Source, Task


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.event("app_mention")
    async def mention(event, body) -> None:
        if not event.get("user") or not event.get("channel") or not event.get("ts"):
            return
        deps.spawn(deps.submit(Task(
            source=Source.MENTION, team=body.get("team_id") or "", channel=event["channel"],
            user=event["user"], text=event.get("text") or "",
            thread_ts=event.get("thread_ts") or event["ts"], message_ts=event["ts"],
        ), delivery=delivery(body)))


def delivery(body: dict) -> str | None:
    """The dedupe key of an Events API delivery (Slack retries it with the same id)."""
    event_id = body.get("event_id")
    return f"slack:{event_id}" if event_id else None
