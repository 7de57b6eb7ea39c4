"""opsbot's App Home tab: what the viewer can act on and what is going on around them.

Published (``views.publish``) when they open the tab, and again after they decide an
approval from it:

* approvals waiting for *them* (the policy's approver rule names them or one of their user
  groups), each as the card posted in its thread, with the same Approve / Deny buttons;
* their active runs (queued, running, waiting);
* recent runs in channels they are in.

``home_view`` is a pure function of those three lists; ``publish`` gathers them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError

from approvals.cards import approval_card
from approvals.models import ApprovalRequest
from approvals.mrkdwn import escape, one_line, truncate
from bot import messages
from bot.directory import channels_of
from graph.records.base import RunFilter, RunListing
from graph.surface import RunState
from tools.secrets import REDACTOR

log = structlog.get_logger("opsbot.home")
MAX_APPROVALS = 8  # a card is up to ~8 blocks; a Home view holds 100
MAX_RUNS = 10
RECENT_PER_CHANNEL = 5
ACTIVE = (RunState.QUEUED, RunState.RUNNING, RunState.WAITING)
STATE_ICONS = {"queued": "🕒", "running": "⏳", "waiting": "✋", "done": "✅", "failed": "❌",
               "cancelled": "✖️", "interrupted": "⚠️"}


def home_view(approvals: list[ApprovalRequest], active: list[RunListing],
              recent: list[RunListing]) -> dict[str, Any]:
    blocks = [_header(messages.HOME_APPROVALS)]
    for request in approvals[:MAX_APPROVALS]:
        blocks += [*approval_card(request)["blocks"], {"type": "divider"}]
    if not approvals:
        blocks.append(_context(messages.HOME_NO_APPROVALS))
    blocks += [_header(messages.HOME_ACTIVE), _runs(active, messages.HOME_NO_ACTIVE)]
    blocks += [_header(messages.HOME_RECENT), _runs(recent, messages.HOME_NO_RECENT)]
    return {"type": "home", "blocks": blocks}


async def publish(deps, client, user: str) -> None:
    """Gather what ``user`` may see and publish their Home tab."""
    groups = await deps.directory.groups_of(user)
    approvals = [a for a in await deps.records.approvals.pending()
                 if a.rule.includes(user, groups)]
    mine = await deps.records.runs.listing(RunFilter(requester=user, limit=50))
    active = [r for r in mine if r.state in ACTIVE][:MAX_RUNS]
    recent = await _recent_in_channels(deps, client, user)
    try:
        await client.views_publish(user_id=user, view=REDACTOR.redact_obj(
            home_view(approvals, active, recent)))
    except SlackApiError as e:
        log.warning("home not published", error=e.response.get("error"))


async def _recent_in_channels(deps, client, user: str) -> list[RunListing]:
    try:
        channels = await channels_of(client, user)
    except SlackApiError as e:
        log.info("channels of user unknown", error=e.response.get("error"))
        return []
    found: list[RunListing] = []
    for channel in channels:
        found += await deps.records.runs.listing(RunFilter(channel=channel,
                                                           limit=RECENT_PER_CHANNEL))
    return sorted(found, key=lambda r: r.created_at, reverse=True)[:MAX_RUNS]


def _runs(runs: list[RunListing], empty: str) -> dict[str, Any]:
    if not runs:
        return _context(empty)
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(
        "\n".join(_line(r) for r in runs), 3000)}}


def _line(listed: RunListing) -> str:
    task = listed.run.task
    asked = task.alert.title if task.alert else task.text
    icon = STATE_ICONS.get(listed.state.value, "•")
    return (f"{icon} `{listed.run.run_id}` {listed.state.value} · <#{task.channel}> · "
            f"{_when(listed.created_at)} · {escape(one_line(asked))[:120]}")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
