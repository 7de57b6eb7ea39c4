"""``/ops``: typed commands answered at once, everything else acked and queued as a run."""

from __future__ import annotations

from datetime import UTC, datetime

from slack_bolt.async_app import AsyncApp

from bot import messages
from bot.deps import ACKED_ELSEWHERE, BotDeps
from graph import commands
from graph.help import help_text
from graph.task import Source, Task


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.command("/ops")
    async def ops(ack, command, respond, context) -> None:
        answer = _answering(deps, ack, respond, context)
        user, channel = command.get("user_id"), command.get("channel_id")
        if not user or not channel:
            await answer(response_type="ephemeral", text=messages.MALFORMED_COMMAND)
            return
        text = command.get("text") or ""
        try:
            parsed = commands.parse(text, deps.catalog)
        except commands.ParseError as e:
            await answer(response_type="ephemeral", text=f":warning: {e}")
            return
        if isinstance(parsed, commands.Help):
            await answer(response_type="ephemeral", text=help_text(deps.catalog, parsed.toolset))
        elif isinstance(parsed, commands.ListRuns):
            await ack()  # the list comes from the database: answered after the ack
            deps.spawn(_list(deps, respond, channel))
        elif isinstance(parsed, commands.ListSchedules):
            await ack()  # last results come from the database
            deps.spawn(_schedules(deps, respond))
        elif isinstance(parsed, commands.Cancel):
            await ack()
            deps.spawn(_cancel(deps, respond, parsed.run_id, user))
        else:
            await ack()
            deps.spawn(deps.submit(Task(
                source=Source.SLASH, team=command.get("team_id") or "", channel=channel,
                channel_name=command.get("channel_name") or "", user=user, text=text,
                is_dm=(command.get("channel_name") == "directmessage"),
            )))


def _answering(deps: BotDeps, ack, respond, context):
    """How the command's immediate answer goes out: in the ack, or — when the acceptor process
    already acked the request (``bot/acceptor.py``) — through its ``response_url``."""
    if not context.get(ACKED_ELSEWHERE):
        return ack

    async def later(**message) -> None:
        await ack()
        deps.spawn(respond(**message))

    return later


async def _list(deps: BotDeps, respond, channel: str) -> None:
    await respond(response_type="ephemeral", text=messages.runs_list(await deps.runs.active(channel)))


async def _schedules(deps: BotDeps, respond) -> None:
    rows = {r.name: r for r in await deps.records.schedules.all()}
    text = messages.schedules_list(deps.schedules, rows, datetime.now(UTC))
    await respond(response_type="ephemeral", text=text)


async def _cancel(deps: BotDeps, respond, run_id: str, user: str) -> None:
    groups = await deps.directory.groups_of(user)
    await respond(response_type="ephemeral", text=await deps.runs.cancel(run_id, user, groups))
