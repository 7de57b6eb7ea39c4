"""Issue 9 ("Trust"), end to end: what an approver sees is what runs, and what a real network,
a hostile user or a hostile model does to the bot's promises.
"""

import json

import pytest

from approvals.cards import APPROVE_ACTION
from tests.fakes.openai import text, tool_call
from tests.fakes.openai_script import tool_results
from tests.fakes.payloads import block_actions, post_in_pieces
from tests.scenarios.harness import APPROVER, CHANNEL
from tests.scenarios.llm_harness import INCIDENTS, incident_event, mention, pd_signature, reports

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


# 1. what an approver sees is what runs ----------------------------------------------------

LONG_KEY = "a" * 3000


def all_text(message) -> str:
    parts = [message.text]
    for block in message.blocks:
        parts.append(block.get("text", {}).get("text", ""))
        parts += [f["text"] for f in block.get("fields", [])]
    return "\n".join(parts)


def is_card(message) -> bool:
    return any(b.get("block_id", "").startswith("approval:") for b in message.blocks)


async def card_or_report(h, thread: str):
    """The first approval card or run report in the thread, whichever comes first."""
    def found():
        return next((m for m in h.slack.thread(CHANNEL, thread) if m.ts != thread
                     and (is_card(m) or "*Run `r-" in m.text)), None)
    return await h.slack.wait_for(found, 60)


async def test_typed_del_shows_every_key_or_is_refused_with_a_sentence(hl, redis_db):
    redis_db.set("prod:important", "v")
    await hl.command(f'redis del keys=["{LONG_KEY}","prod:important"]')
    first = await card_or_report(hl, await hl.run_thread())
    assert not is_card(first), "no card for a key no approver can read on it"
    assert "at most 512 characters" in first.text and redis_db.exists("prod:important")

    keys = [f"cache:{i}:" + "k" * 480 for i in range(6)] + ["prod:important"]
    await hl.command(f"redis del keys=[{','.join(keys)}]")
    thread = await hl.run_thread(1)
    card = await card_or_report(hl, thread)
    assert is_card(card) and all(key in all_text(card) for key in keys), "every key is shown"
    assert "truncated" not in all_text(card)
    await hl.click(card, APPROVER)
    assert "done" in (await hl.report(thread)).text
    assert redis_db.exists(*keys) == 0


async def test_model_proposed_del_is_refused_or_attached_whole(hl, llm_api, redis_db):
    keys = [f"cache:{i:03d}:" + "k" * 100 for i in range(99)] + ["prod:important"]
    for key in keys:
        redis_db.set(key, "v")
    llm_api.push(tool_call("redis__del", {"keys": [LONG_KEY, "prod:important"]}),
                 tool_call("redis__del", {"keys": keys}), text("Deleted the stale keys."))
    thread = await mention(hl, "clean up the stale cache keys")
    card = await hl.card(thread)
    told = tool_results(llm_api.requests()[1].body)[0]["content"]
    assert told.startswith("denied") and "at most 512 characters" in told
    assert redis_db.exists("prod:important"), "the first proposal ran nothing"

    name = f"opsbot-{card.blocks[-1]['block_id'].split(':')[1]}-action.json"
    assert name in all_text(card) and "prod:important" not in all_text(card)
    file = next(f for f in hl.slack.files() if f.filename == name)
    shared = next(m for m in hl.slack.thread(CHANNEL, thread) if m.files)
    assert shared.ts < card.ts, "the file is in the thread before the card"
    assert json.loads(file.content)["action"]["params"]["keys"] == keys
    await hl.click(card, APPROVER)
    await hl.report(thread)
    assert redis_db.exists(*keys) == 0


# 5. untrusted text cannot draw on cards or the status message --------------------------------


async def test_a_key_name_cannot_ping_the_channel_or_draw_lines_in_the_status(hl, llm_api):
    key = "x\n*Approvals*\n2 of 2 approved <!channel> \u202egnp.exe"
    llm_api.push(tool_call("redis__get", {"key": key}), text("looked"))
    thread = await mention(hl, "read that odd key")
    await hl.report(thread)
    status = next(m for m in hl.slack.thread(CHANNEL, thread) if "*opsbot* `r-" in m.text)
    step = next(line for line in status.text.splitlines() if "Read Redis key" in line)
    assert "x\\n*Approvals*\\n2 of 2 approved &lt;!channel&gt; \\u202egnp.exe" in step
    assert "<!channel>" not in hl.slack.all_text() and "\u202e" not in status.text
