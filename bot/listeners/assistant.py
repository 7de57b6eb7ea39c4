"""opsbot as a Slack AI app: assistant threads (the Agents & AI Apps split view, or a new chat
in the app's DM).

* ``assistant_thread_started``: suggested prompts, drawn from the recent incidents in channels
  the user is in (their investigation runs, newest first) and from the configured toolsets.
* A person's message in an assistant thread starts a run there, like a mention does in a
  channel: the same policy (``dm`` rules apply), approvals and audit; its answer streams into
  the thread and the thread's status says what the run is doing (``bot/slack_surface.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot import messages
from bot.deps import BotDeps
from bot.directory import channels_of
from bot.listeners.mentions import delivery
from graph.records.base import RunFilter
from graph.task import Source, Task

log = structlog.get_logger("opsbot.assistant")
MAX_PROMPTS = 4  # Slack shows at most four
INCIDENT_PROMPTS = 2
RECENT = timedelta(days=7)
TITLE = 40


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.event("assistant_thread_started")
    async def started(event, client) -> None:
        thread = event.get("assistant_thread") or {}
        if thread.get("user_id") and thread.get("channel_id") and thread.get("thread_ts"):
            deps.spawn(_suggest(deps, client, thread))

    @app.event("assistant_thread_context_changed")
    async def context_changed() -> None:
        return None  # prompts are per thread; the context channel is not used yet


def is_question(event: dict) -> bool:
    """A person's message in a thread of the app's DM (an assistant thread)."""
    return (event.get("channel_type") == "im" and bool(event.get("thread_ts"))
            and bool(event.get("user")) and not event.get("subtype")
            and not event.get("bot_id"))


async def question(deps: BotDeps, event: dict, body: dict) -> None:
    """The question starts a run in its assistant thread."""
    await deps.submit(Task(
        source=Source.ASSISTANT, team=body.get("team_id") or "", channel=event["channel"],
        user=event["user"], text=event.get("text") or "", is_dm=True,
        thread_ts=event["thread_ts"], message_ts=event["ts"]), delivery(body))


async def _suggest(deps: BotDeps, client, thread: dict) -> None:
    incidents = await _recent_incidents(deps, client, thread["user_id"])
    prompts = suggested_prompts(incidents, [t.name for t in deps.catalog.enabled()])
    try:
        await client.assistant_threads_setSuggestedPrompts(
            channel_id=thread["channel_id"], thread_ts=thread["thread_ts"], prompts=prompts,
            title=messages.PROMPTS_TITLE)
    except SlackApiError as e:
        log.warning("suggested prompts refused", error=e.response.get("error"))


async def _recent_incidents(deps: BotDeps, client, user: str) -> list[tuple[str, str]]:
    """``(incident title, channel id)`` of the latest incident runs in the user's channels."""
    try:
        channels = await channels_of(client, user)
    except SlackApiError as e:
        log.info("channels of user unknown", error=e.response.get("error"))
        return []
    since = datetime.now(UTC) - RECENT
    found: list[tuple[datetime, str, str]] = []
    for channel in channels:
        for listed in await deps.records.runs.listing(RunFilter(
                channel=channel, source=Source.ALERT.value, since=since, limit=INCIDENT_PROMPTS)):
            alert = listed.run.task.alert
            if alert is not None:
                found.append((listed.created_at, alert.title, channel))
    found.sort(reverse=True)
    unique = list(dict.fromkeys((title, channel) for _, title, channel in found))
    return unique[:INCIDENT_PROMPTS]


def suggested_prompts(incidents: list[tuple[str, str]], toolsets: list[str]) -> list[dict[str, str]]:
    """Up to four ``{title, message}``: the recent incidents first, then one per toolset."""
    prompts = [{"title": _clip(f"Incident: {title}"),
                "message": messages.PROMPT_INCIDENT.format(title=title, channel=channel)}
               for title, channel in incidents]
    prompts += [{"title": _clip(messages.PROMPT_TOOLSET_TITLE.format(toolset=name)),
                 "message": messages.PROMPT_TOOLSET.format(toolset=name)}
                for name in toolsets]
    return prompts[:MAX_PROMPTS] or [{"title": "What can you do?", "message": "help"}]


def _clip(text: str) -> str:
    return text if len(text) <= TITLE else text[: TITLE - 1] + "…"
