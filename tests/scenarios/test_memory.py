"""Memory of past incidents end to end (issue 14 item 6): an incident investigated, fixed after
an approval and resolved in PagerDuty is remembered (by the worker, after the report); the next
incident with similar symptoms gets it in the model's context, as untrusted data, and cites it
in its report ("similar: incident #… on …, fixed by …"); an unrelated incident gets neither.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fakes.openai import text, tool_call
from tests.scenarios.harness import APPROVER, RUN_ID
from tests.scenarios.llm_harness import INCIDENTS, incident_event, reports, send_webhook

pytestmark = pytest.mark.docker
EVICTING = "RedisEvictingKeys: cache-prod evicting keys, used_memory at maxmemory"
SIMILAR = "cache-prod Redis memory is full and keys are being evicted"
UNRELATED = "GitHub Actions release workflow failing on main: npm ci gets 403"


async def investigated(h, incident: str, title: str, index: int):
    """Trigger ``incident`` by webhook; its run's thread ts once its status message is up."""
    assert await send_webhook(h, incident_event("incident.triggered", incident, title)) == 202

    def roots():
        found = [m for m in h.slack.messages(INCIDENTS)
                 if not m.is_reply and "*opsbot* `r-" in m.text]
        return found if len(found) > index else None

    return (await h.slack.wait_for(roots, 90))[index].ts


async def card_in(h, thread: str):
    def find():
        return next((m for m in h.slack.thread(INCIDENTS, thread)
                     if any(b.get("block_id", "").startswith("approval:") for b in m.blocks)), None)
    return await h.slack.wait_for(find, 120)


def opening(llm_api, index: int) -> str:
    """What the model was told first in the ``index``-th model call."""
    return next(m["content"] for m in llm_api.requests()[index].body["messages"]
                if m["role"] == "user")


async def test_a_resolved_incident_is_cited_by_a_similar_one_and_not_by_an_unrelated_one(
        hl, llm_api, redis_db):
    redis_db.set("sessions:stale", "v")
    llm_api.push(tool_call("redis__del", {"keys": ["sessions:stale"]}),
                 text("Session keys without a TTL filled cache-prod; the stale ones are gone."))
    first = await investigated(hl, "Q1EVICT", EVICTING, 0)
    card = await card_in(hl, first)
    await hl.click(card, APPROVER, channel=INCIDENTS)
    (report,) = await reports(hl, first, 1, timeout=120, channel=INCIDENTS)
    await hl.ended(RUN_ID.search(report.text).group(1))  # resolved after the run, not during
    assert "Check after acting: fixed" in "".join(b.get("text", {}).get("text", "")
                                                  for b in report.blocks)
    assert await send_webhook(hl, incident_event("incident.resolved", "Q1EVICT", EVICTING,
                                                 agent="Alice Example")) == 202
    memory = hl.bot.runtime.driver.memory

    async def resolved_in_memory():
        found = await memory.recall(EVICTING, 1)
        return found if found and "Alice" in found[0].past.resolution else None

    (remembered,) = await hl.slack.wait_for(resolved_in_memory, 120)
    assert remembered.past.incident == "Q1EVICT"

    llm_api.push(text("Same pattern as last time: session keys without a TTL."))
    second = await investigated(hl, "Q2EVICT", SIMILAR, 1)
    (cited,) = await reports(hl, second, 1, timeout=120, channel=INCIDENTS)
    told = opening(llm_api, -1)
    assert f'<past_incident run="{remembered.past.run_id}"' in told and EVICTING in told
    assert "resolved in PagerDuty by Alice Example" in told
    today = datetime.now(UTC).date().isoformat()
    assert (f"Similar: incident #Q1EVICT on {today} (run {remembered.past.run_id}), fixed by "
            f"Delete 1 Redis key(s): sessions:stale") in cited.text

    llm_api.push(text("The registry token expired."))
    third = await investigated(hl, "Q3DEPLOY", UNRELATED, 2)
    (unrelated,) = await reports(hl, third, 1, timeout=120, channel=INCIDENTS)
    assert "<past_incident" not in opening(llm_api, -1)
    assert "Similar:" not in unrelated.text
