"""Issue 9 ("Trust"), end to end: what an approver sees is what runs, and what a real network,
a hostile user or a hostile model does to the bot's promises.
"""

import json

import pytest

from approvals.cards import APPROVE_ACTION
from tests.fakes.openai import text
from tests.fakes.payloads import block_actions, post_in_pieces
from tests.scenarios.harness import APPROVER, CHANNEL
from tests.scenarios.llm_harness import INCIDENTS, incident_event, pd_signature, reports

pytestmark = pytest.mark.docker


async def test_signed_bodies_that_arrive_in_three_segments_are_served(hl, llm_api, redis_db):
    """A 20 KB Approve click and a PagerDuty webhook, each in 3 writes 150 ms apart: the
    signature is checked on the whole body, so the click approves and the webhook starts."""
    redis_db.set("session:1", "a")
    await hl.command("redis flushdb")
    thread = await hl.run_thread()
    card = await hl.card(thread)
    message = hl.slack.message(CHANNEL, card.ts).to_api()
    message["text"] = "card fallback " + "x" * 20_000  # clicks carry the whole card
    click = block_actions(user=APPROVER, channel=CHANNEL, message_ts=card.ts, message=message,
                          action_id=APPROVE_ACTION, value=hl.button_value(card), slack=hl.slack)
    assert len(click.body) > 20_000
    url = f"{hl.bot.url}/slack/events"
    assert await post_in_pieces(url, click.body, hl.client.headers(click)) == 200
    report = await hl.report(thread)
    assert "Flushed the database" in report.text and redis_db.dbsize() == 0

    llm_api.push(text("The cache is fine."))
    body = json.dumps(incident_event("incident.triggered", incident="QSEGMENT")).encode()
    headers = {"Content-Type": "application/json", "X-Webhook-Id": "wh-segmented",
               "X-PagerDuty-Signature": pd_signature(body)}
    assert await post_in_pieces(f"{hl.bot.url}/webhooks/pagerduty", body, headers) == 202
    root = await hl.slack.wait_for(
        lambda: [m for m in hl.slack.messages(INCIDENTS) if "*opsbot* `r-" in m.text], 20)
    await reports(hl, root[0].ts, 1, channel=INCIDENTS)
