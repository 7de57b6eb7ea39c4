"""Approve / Deny buttons and the deny-reason modal.

Every handler acks first. Button values are untrusted: they only name an approval id and the
action hash the card showed; the desk checks both against its records, the channel and the
card's message before anything is recorded. A click whose payload can't be read (a value that
is not JSON, a channel that disagrees with its container) is refused with a sentence and an
audit row, like every other refused click.
"""

from __future__ import annotations

import json

from slack_bolt.async_app import AsyncApp

from approvals.cards import APPROVE_ACTION, DENY_ACTION, DENY_VIEW, deny_reason_view, parse_button_value
from bot import messages
from bot.deps import BotDeps
from bot.home import publish
from graph.desk import Click


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.action(APPROVE_ACTION)
    async def approve(ack, body, client) -> None:
        await ack()
        deps.spawn(_approve(deps, body, client))

    @app.action(DENY_ACTION)
    async def deny(ack, body, client) -> None:
        await ack()
        deps.spawn(_open_deny_modal(deps, body, client))

    @app.view(DENY_VIEW)
    async def deny_reason(ack, body, view, client) -> None:
        await ack()
        deps.spawn(_deny(deps, body, view, client))


async def _approve(deps: BotDeps, body: dict, client) -> None:
    parsed = parse_button_value(_value(body))
    where = await _clicked_at(deps, body, parsed)
    user = body.get("user", {}).get("id") or ""
    if parsed is None or where is None:
        await deps.runs.desk.refuse(None, user, messages.BAD_BUTTON, approve=True,
                                    value=_value(body)[:200])
        await tell(client, body, messages.BAD_BUTTON)
        return
    click = Click(approval_id=parsed[0], shown_hash=parsed[1], user=user,
                  groups=await deps.directory.groups_of(user), approve=True,
                  channel=where[0], message_ts=where[1])
    await tell(client, body, await deps.runs.desk.click(click))
    if _from_home(body):
        await publish(deps, client, user)


async def _open_deny_modal(deps: BotDeps, body: dict, client) -> None:
    """Deny asks for an optional reason first; the decision is taken on submit."""
    parsed = parse_button_value(_value(body))
    where = await _clicked_at(deps, body, parsed)
    request = await deps.records.approvals.get(parsed[0]) if parsed else None
    if request is None or where is None:
        problem = messages.BAD_BUTTON if parsed is None or where is None else messages.DENY_GONE
        await deps.runs.desk.refuse(parsed[0] if parsed else None,
                                    body.get("user", {}).get("id") or "", problem, approve=False)
        await tell(client, body, problem)
        return
    view = deny_reason_view(request)
    view["private_metadata"] = json.dumps(
        {"approval": parsed[0], "hash": parsed[1], "channel": where[0], "message_ts": where[1],
         "home": _from_home(body)})
    await client.views_open(trigger_id=body["trigger_id"], view=view)


async def _deny(deps: BotDeps, body: dict, view: dict, client) -> None:
    try:
        meta = json.loads(view["private_metadata"])
        approval, shown, channel, ts = (meta["approval"], meta["hash"], meta["channel"],
                                        meta.get("message_ts"))
    except (ValueError, KeyError, TypeError):
        await deps.runs.desk.refuse(None, body.get("user", {}).get("id") or "",
                                    messages.BAD_BUTTON, approve=False)
        return
    values = view.get("state", {}).get("values", {})
    reason = (values.get("reason", {}).get("reason", {}).get("value") or "").strip()
    user = body["user"]["id"]
    click = Click(approval_id=approval, shown_hash=shown, user=user,
                  groups=await deps.directory.groups_of(user), approve=False,
                  channel=channel, message_ts=ts, reason=reason[:500])
    said = await deps.runs.desk.click(click)
    if meta.get("home"):
        await publish(deps, client, user)
    await client.chat_postEphemeral(channel=channel, user=user, text=said)


def _value(body: dict) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value") or "")


def _from_home(body: dict) -> bool:
    return ((body.get("container") or {}).get("type") == "view"
            and (body.get("view") or {}).get("type") == "home")


async def _clicked_at(deps: BotDeps, body: dict,
                      parsed: tuple[str, str] | None) -> tuple[str, str | None] | None:
    """Where the clicked card is. A card in the clicker's Home tab (``bot/home.py``) is a copy
    of the one in the run's thread: it stands for that card (its channel and message, from the
    approval's record); the desk still checks the hash it showed and who may decide."""
    if not _from_home(body):
        return _where(body)
    request = await deps.records.approvals.get(parsed[0]) if parsed else None
    return (request.channel, request.card_ts) if request is not None else None


def _where(body: dict) -> tuple[str, str | None] | None:
    """The channel and message the button was clicked on; None when the payload's two
    accounts of the channel disagree (one of them was forged)."""
    container = body.get("container") or {}
    named = (body.get("channel") or {}).get("id")
    contained = container.get("channel_id")
    if named and contained and named != contained:
        return None
    channel = named or contained
    return (channel, container.get("message_ts")) if channel else None


async def tell(client, body: dict, text: str) -> None:
    """An ephemeral reply where the button was (the container's channel: Slack sets it)."""
    channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
    if not channel or not body.get("user", {}).get("id"):
        return
    await client.chat_postEphemeral(channel=channel, user=body["user"]["id"], text=text)
