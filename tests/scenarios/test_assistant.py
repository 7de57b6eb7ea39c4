"""Issue 14 item 1: opsbot as a Slack AI app. Opening an assistant thread suggests prompts
(recent incidents in the user's channels, the toolsets); a question there starts a run whose
answer streams into the thread, with a task per tool call, while the thread's status says what
the run is doing; a gated call waits for approval there and completes after the click.
"""

from __future__ import annotations

import re

import pytest

from approvals.cards import APPROVE_ACTION
from graph.surface import RunRef
from graph.task import Alert, Source, Task
from tests.fakes.openai import text, tool_call
from tests.fakes.payloads import block_actions
from tests.fakes.payloads_ai import assistant_thread_started, im_message
from tests.fakes.slack_workspace import TEAM_ID
from tests.scenarios.harness import APPROVER, REQUESTER
from tests.scenarios.llm_harness import INCIDENTS

DM = "D0UREQ1"
INCIDENT = "Redis latency p99 above 500ms on cache-prod"


async def seed_incident(h, channel: str, title: str, run_id: str) -> None:
    """An investigation run of an incident, as the PagerDuty path records one."""
    task = Task(source=Source.ALERT, team=TEAM_ID, channel=channel, user="UPAGERDUTY",
                text=title, alert=Alert(id=f"Q{run_id}", title=title))
    await h.bot.runtime.records.runs.add(RunRef(run_id=run_id, task=task, thread_ts="1.1"))


async def open_thread(h) -> str:
    started = assistant_thread_started(user=REQUESTER, channel=DM)
    assert (await h.post(started)).status == 200
    return started.data["event"]["assistant_thread"]["thread_ts"]


@pytest.mark.docker
async def test_prompts_then_a_question_streams_tasks_and_waits_for_approval_in_the_thread(
        hls, llm_api, redis_db):
    slack = hls.slack
    slack.add_channel(INCIDENTS, "incident-cache", members=[REQUESTER])
    slack.add_channel("C0OTHER", "other-team")
    await seed_incident(hls, INCIDENTS, INCIDENT, "r-00000001")
    await seed_incident(hls, "C0OTHER", "Payments down", "r-00000002")  # not the user's channel

    thread_ts = await open_thread(hls)
    thread = await slack.wait_for(lambda: (t := slack.assistant_thread(DM, thread_ts))
                                  and t.prompts and t)
    titles = [p["title"] for p in thread.prompts]
    assert titles[0].startswith("Incident: Redis latency"), titles
    assert INCIDENT in thread.prompts[0]["message"]
    assert "Check redis" in titles and not any("Payments" in t for t in titles)

    redis_db.set("session:1", "stale")
    llm_api.push([tool_call("redis__info", {"section": "keyspace"}),
                  tool_call("redis__del", {"keys": ["session:1"]})],
                 text("Deleted the stale session key after your approval; the keyspace is "
                      "otherwise fine.", chunk_delay=0.02))
    question = im_message("clean up the stale session key", user=REQUESTER, channel=DM,
                          thread_ts=thread_ts, slack=slack)
    assert (await hls.post(question)).status == 200

    card = await slack.wait_for(lambda: next(
        (m for m in slack.thread(DM, thread_ts)
         if any(b.get("block_id", "").startswith("approval:") for b in m.blocks)), None), 60)
    waiting = await slack.wait_for(lambda: any(
        s.startswith("is waiting for approval") for s in slack.assistant_thread(
            DM, thread_ts).statuses), 30)
    assert waiting
    [stream] = slack.streams(DM, thread_ts)
    gated = next(k for k, t in stream.stream.tasks.items() if "Delete 1 Redis key" in t["title"])
    await slack.wait_for(lambda: (slack.streams(DM, thread_ts)[0].stream.tasks[gated]
                                  .get("details", "").startswith("waiting for approval")), 30)
    assert redis_db.exists("session:1") == 1

    value = next(e["value"] for b in card.blocks for e in b.get("elements", [])
                 if e.get("action_id") == APPROVE_ACTION)
    await hls.post(block_actions(user=APPROVER, channel=DM, message_ts=card.ts,
                                 action_id=APPROVE_ACTION, value=value, slack=slack,
                                 thread_ts=thread_ts))
    report = await slack.wait_for(lambda: next(
        (m for m in slack.thread(DM, thread_ts) if "*Run `r-" in m.text), None), 60)

    [stream] = slack.streams(DM, thread_ts)
    assert stream.stream.stopped and stream.text.startswith("Deleted the stale session key")
    calls = {k: h for k, h in stream.stream.task_history.items() if re.search(r":1\.\d$", k)}
    assert len(calls) == 2, stream.stream.task_history
    # (proposed, its preview,) waiting for approval, executed, done: coalescing may merge the
    # first two, never the wait, which lasts until the click
    assert calls[gated][-3:] == ["pending", "in_progress", "complete"], calls[gated]
    [read] = [h for k, h in calls.items() if k != gated]  # (coalescing may skip a state)
    assert read[-1] == "complete" and set(read) <= {"pending", "in_progress", "complete"}
    assert stream.stream.task_history[f"{gated}.check"][-1] == "complete"  # checked after acting
    assert redis_db.exists("session:1") == 0 and "done" in report.text
    statuses = slack.assistant_thread(DM, thread_ts).statuses
    assert any(s.startswith("is working") for s in statuses) and statuses[-1] == ""
    run_id = re.search(r"`(r-[0-9a-f]{8})`", report.text).group(1)
    await hls.ended(run_id)
    rows = await hls.bot.runtime.records.audit.rows(run_id=run_id)
    kinds = {r["kind"] for r in rows}
    assert {"task", "policy", "approval.request", "approval.decision", "report"} <= kinds, kinds
    [task] = [r for r in rows if r["kind"] == "task"]
    assert task["data"]["source"] == "assistant" and task["data"]["channel"] == DM
