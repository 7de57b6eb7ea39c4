"""👍 / 👎 on run reports (``feedback_buttons``) and the comment modal after a 👎.

Handlers ack first. A button's value names the rating and the run (``down:r-1a2b3c4d``); it is
untrusted, so :func:`graph.feedback.rate` records it only for a run that exists, with its audit
row in the same transaction. The clicker is told the outcome in an ephemeral message.
"""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot import messages
from bot.blocks import FEEDBACK_ACTION, FEEDBACK_COMMENT, FEEDBACK_VIEW, feedback_view
from bot.deps import BotDeps
from bot.listeners.actions import tell
from graph.feedback import Rating, comment, rate


def register(app: AsyncApp, deps: BotDeps) -> None:
    @app.action(FEEDBACK_ACTION)
    async def rated(ack, body, client) -> None:
        await ack()
        deps.spawn(_rated(deps, body, client))

    @app.view(FEEDBACK_VIEW)
    async def commented(ack, body, view, client) -> None:
        await ack()
        deps.spawn(_commented(deps, body, view, client))


def parse_value(value: str) -> tuple[Rating, str] | None:
    rating, _, run_id = value.partition(":")
    if rating not in (Rating.UP, Rating.DOWN) or not run_id.startswith("r-") or len(run_id) > 40:
        return None
    return Rating(rating), run_id


async def _rated(deps: BotDeps, body: dict, client) -> None:
    actions = body.get("actions") or [{}]
    parsed = parse_value(str(actions[0].get("value") or ""))
    user = (body.get("user") or {}).get("id") or ""
    if parsed is None or not user:
        await tell(client, body, messages.BAD_BUTTON)
        return
    rating, run_id = parsed
    recorded, sentence = await rate(deps.records, run_id, user, rating)
    await tell(client, body, sentence)
    channel = (body.get("container") or {}).get("channel_id") or ""
    if rating is Rating.DOWN and body.get("trigger_id") and recorded:
        await client.views_open(trigger_id=body["trigger_id"],
                                view=feedback_view(run_id, channel))


async def _commented(deps: BotDeps, body: dict, view: dict, client) -> None:
    run_id, _, channel = (view.get("private_metadata") or "").partition(" ")
    user = (body.get("user") or {}).get("id") or ""
    values = (view.get("state") or {}).get("values") or {}
    text = ((values.get(FEEDBACK_COMMENT) or {}).get(FEEDBACK_COMMENT) or {}).get("value") or ""
    if not text.strip() or not user or not run_id:
        return  # "Send" with nothing written: the rating stands alone
    sentence = await comment(deps.records, run_id, user, text)
    if channel:
        await client.chat_postEphemeral(channel=channel, user=user, text=sentence)
