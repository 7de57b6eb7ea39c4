"""Issue 5, PagerDuty ingress end to end: the PagerDuty app's Slack posts (classic attachments
and modern blocks) and the v3 webhook (signed, redelivered, acknowledged, resolved) give exactly
one investigation per incident, in the alert's thread, with its status kept up to date.
"""

import asyncio
import copy
import json

import pytest

from graph.surface import RunState
from tests.fakes.openai import Delay, text
from tests.fakes.payloads import FIXTURES, message_event, pagerduty_alert
from tests.scenarios.harness import CHANNEL
from tests.scenarios.process import AuditFile
from tests.scenarios.llm_harness import GRACE_S, INCIDENTS, incident_event, reports, send_webhook

pytestmark = pytest.mark.docker
ANSWER = "Latency comes from KEYS * in a cron job; see the slow log."


def runs(h) -> list:
    return AuditFile(h.bot.runtime.settings.data_dir).runs()


def audited(h, kind: str) -> list[dict]:
    return [r["data"] for r in AuditFile(h.bot.runtime.settings.data_dir).rows(kind)]


def status_messages(h) -> list:
    """The runs' status messages at the top of the incident channel."""
    return [m for m in h.slack.messages(INCIDENTS) if "*opsbot* `r-" in m.text]


def status_of(h, channel: str, thread: str):
    return next((m for m in h.slack.thread(channel, thread) if "*opsbot* `r-" in m.text), None)


async def status_with(h, channel: str, thread: str, line: str):
    def found():
        message = status_of(h, channel, thread)
        return message if message and line in message.text else None
    return await h.slack.wait_for(found, 20)


async def post_alert(h, style: str, **kw) -> str:
    payload = pagerduty_alert(style, channel=INCIDENTS, slack=h.slack, **kw)
    assert (await h.post(payload)).status == 200
    return payload.data["event"]["ts"]


@pytest.mark.parametrize("style", ["classic", "modern"])
async def test_a_pagerduty_post_starts_one_investigation_in_its_thread(hl, llm_api, style):
    llm_api.push(text(ANSWER))
    thread = await post_alert(hl, style)
    report = (await reports(hl, thread, 1, channel=INCIDENTS))[0]
    assert ANSWER in report.text
    status = status_of(hl, INCIDENTS, thread)
    assert status.text.startswith("PagerDuty alert") and status.thread_ts == thread
    opening = llm_api.requests()[0].body["messages"][1]["content"]
    alert = json.loads(opening.split("<alert>")[1].split("</alert>")[0])
    assert alert == {"id": "Q1ABCDEF", "title": "Redis latency p99 above 500ms on cache-prod",
                     "service": "cache-prod", "urgency": "high", "status": "triggered",
                     "link": "https://acme.pagerduty.com/incidents/Q1ABCDEF"}

    again = await post_alert(hl, style)  # PagerDuty posts the same incident again
    await hl.bot.deps.drain()  # the bot has finished handling that post
    assert len(runs(hl)) == 1 and len(llm_api.requests()) == 1
    assert [a["ts"] for a in audited(hl, "alert.attached")] == [again]
    assert reports_in(hl, again) == []


def reports_in(h, thread: str) -> list:
    return [m for m in h.slack.thread(INCIDENTS, thread) if "*Run `r-" in m.text]


async def test_posts_from_other_bots_or_outside_incident_channels_start_nothing(hl, llm_api):
    event = json.loads((FIXTURES / "pagerduty_classic_message.json").read_text())
    impostor = copy.deepcopy(event)
    impostor.update(bot_id="B0IMPOSTOR", username="PagerDuty")
    await hl.post(message_event("", user=None, channel=INCIDENTS, extra=impostor, slack=hl.slack))
    await hl.post(pagerduty_alert("modern", channel=CHANNEL, slack=hl.slack))
    await hl.bot.deps.drain()  # the bot has finished handling both posts
    assert runs(hl) == [] and llm_api.requests() == []


async def test_webhook_triggered_redelivered_acknowledged_resolved(hl, llm_api):
    llm_api.push(text(ANSWER))
    triggered = incident_event("incident.triggered")
    assert await send_webhook(hl, triggered, webhook_id="wh-1") == 202
    assert await send_webhook(hl, triggered, webhook_id="wh-1") == 200  # redelivery
    roots = await hl.slack.wait_for(lambda: status_messages(hl), 20)
    thread = roots[0].ts
    await reports(hl, thread, 1, channel=INCIDENTS)

    retrigger = incident_event("incident.triggered")
    assert await send_webhook(hl, retrigger) == 202
    assert await send_webhook(hl, incident_event("incident.acknowledged",
                                                 agent="Alice Example")) == 202
    await status_with(hl, INCIDENTS, thread, "PagerDuty: incident acknowledged by Alice Example")
    assert await send_webhook(hl, incident_event("incident.resolved", agent="Bob Example")) == 202
    status = await status_with(hl, INCIDENTS, thread, "PagerDuty: incident resolved by Bob")
    assert "✅ Retrieving runbooks" in status.text, "the run's own steps are kept"
    await hl.slack.wait_for(lambda: audited(hl, "alert.attached"))  # the re-trigger is handled

    assert len(runs(hl)) == 1 and len(status_messages(hl)) == 1 and len(llm_api.requests()) == 1
    assert [a["via"] for a in audited(hl, "alert.attached")] == ["webhook"]
    statuses = [a["status"] for a in audited(hl, "alert.status")]
    assert statuses == ["triggered", "acknowledged", "resolved"]


async def test_slack_post_and_webhook_race_to_one_run_in_the_posts_thread(hl, llm_api):
    llm_api.push(text(ANSWER))
    assert await send_webhook(hl, incident_event("incident.triggered")) == 202
    thread = await post_alert(hl, "modern")
    await reports(hl, thread, 1, channel=INCIDENTS)
    attached = await hl.slack.wait_for(lambda: audited(hl, "alert.attached"))  # webhook, late
    assert [a["via"] for a in attached] == ["webhook"]
    assert len(runs(hl)) == 1 and runs(hl)[0][0].thread_ts == thread
    assert [m.ts for m in hl.slack.messages(INCIDENTS) if not m.is_reply] == [thread]


async def test_resolving_the_incident_stops_a_run_still_investigating(hl, llm_api):
    llm_api.push(Delay(20), text("too late"))
    thread = await post_alert(hl, "classic")
    await llm_api.wait_for(lambda: llm_api.requests(), 20)
    assert await send_webhook(hl, incident_event("incident.resolved", agent="Alice Example")) == 202
    report = (await reports(hl, thread, 1, channel=INCIDENTS))[0]
    assert "cancelled" in report.text
    # the status message is edited to "cancelled" after the report is posted: wait for it
    status = await status_with(hl, INCIDENTS, thread, "· cancelled")
    assert "PagerDuty: incident resolved by Alice" in status.text
    await hl.slack.wait_for(lambda: runs(hl)[0][1] is RunState.CANCELLED or None, 20)
    assert len(llm_api.requests()) == 1


async def test_an_incident_resolved_during_the_grace_period_is_not_investigated(hl, llm_api):
    assert await send_webhook(hl, incident_event("incident.triggered")) == 202
    assert await send_webhook(hl, incident_event("incident.resolved")) == 202
    skipped = await hl.slack.wait_for(lambda: audited(hl, "alert.skipped"))  # grace period over
    assert runs(hl) == [] and llm_api.requests() == []
    assert [a["incident"] for a in skipped] == ["Q1ABCDEF"]


async def test_bad_webhook_signatures_are_rejected_and_start_nothing(hl, llm_api):
    cases = [({"secret": "not-the-secret"}, 403), ({"signature": "v1=" + "0" * 64}, 403),
             ({"signature": "v0=" + "0" * 64}, 403), ({"signature": ""}, 400)]
    for how, status in cases:
        assert await send_webhook(hl, incident_event("incident.triggered"), **how) == status, how
    await asyncio.sleep(GRACE_S + 0.3)
    assert runs(hl) == [] and llm_api.requests() == []
    assert hl.slack.messages(INCIDENTS) == []
