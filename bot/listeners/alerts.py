"""Channel messages: PagerDuty alerts in incident channels, and follow-ups in run threads.

A PagerDuty post counts only in a channel the policy lists as an incident channel and only from
a bot the policy names in ``pagerduty_bot_ids`` (or, when none are named, a bot called
PagerDuty). A human's reply in a thread that already has a run continues that conversation
(mentions are handled by the ``app_mention`` listener, so messages that mention the bot are
skipped here). A person's message in an assistant thread (the app's DM) is a question: a run.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.deps import BotDeps
from bot.listeners import assistant
from bot.listeners.mentions import delivery
from bot.pagerduty import alert_from_message
from graph.policy import Channel
from graph.task import Source, Task


def register(app: AsyncApp, deps: BotDeps, incidents=None) -> None:
    @app.event("message")
    async def message(event, body, context) -> None:
        team = body.get("team_id") or ""
        if event.get("bot_id"):
            deps.spawn(_maybe_alert(event, team, delivery(body)))
        elif assistant.is_question(event):
            deps.spawn(assistant.question(deps, event, body))
        elif _is_follow_up(event, context.get("bot_user_id")):
            deps.spawn(_follow_up(event, team, delivery(body)))

    async def _maybe_alert(event: dict, team: str, key: str | None) -> None:
        if incidents is None or not _from_pagerduty(event, deps):
            return
        if key is not None and not await deps.records.dedupe.first_time(key):
            return
        channel = Channel(id=event.get("channel", ""),
                          name=await deps.directory.channel_name(event.get("channel", "")))
        if not deps.policy.is_incident_channel(channel):
            return
        alert = alert_from_message(event)
        if alert is not None:
            await incidents.posted(alert, channel.id, event["ts"], team)

    async def _follow_up(event: dict, team: str, key: str | None) -> None:
        thread_id = f"{team}:{event['channel']}:{event['thread_ts']}"
        if await deps.records.runs.latest_in_thread(thread_id) is None:
            return
        await deps.submit(Task(source=Source.THREAD, team=team, channel=event["channel"],
                               user=event["user"], text=event.get("text") or "",
                               thread_ts=event["thread_ts"], message_ts=event["ts"]), key)


def _from_pagerduty(event: dict, deps: BotDeps) -> bool:
    bot_id = event.get("bot_id", "")
    if deps.policy.pagerduty_bot_ids:
        return deps.policy.is_pagerduty_bot(bot_id)
    name = (event.get("bot_profile") or {}).get("name") or event.get("username") or ""
    return name.lower() == "pagerduty"


def _is_follow_up(event: dict, bot_user: str | None) -> bool:
    if event.get("subtype") or not event.get("user") or not event.get("thread_ts"):
        return False
    if event.get("thread_ts") == event.get("ts"):
        return False
    return not (bot_user and f"<@{bot_user}>" in (event.get("text") or ""))
