"""Issue 14 item 2: an agent run's answer streams into its thread as the model writes it
(``chat.startStream`` / ``appendStream`` / ``stopStream``), each step a task of a plan; under
429 storms and under ``{"ok": false, "error": "ratelimited"}`` answered with HTTP 200 the text
lands once and in order. Without streaming (an older workspace) the status message is used.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.app import slack_client
from bot.settings import Settings
from bot.slack_surface import StatusMessage
from tests.fakes.openai import text, tool_call
from tests.fakes.slack import BOT_TOKEN
from tests.fakes.server import wait_until
from tests.scenarios.harness import APPROVER, CHANNEL
from tests.scenarios.llm_harness import mention, reports, running_llm_bot

ANSWER = ("Redis is up: INFO shows redis_version and 1 connected client, and nothing is "
          "evicted. Next step: watch `used_memory` during the nightly batch. <!channel> is not "
          "pinged by this.")
LIFECYCLE = ["pending", "in_progress", "complete"]
SHOWN = ANSWER.replace("<", "&lt;").replace(">", "&gt;")


def stream_calls(slack, ts: str) -> list:
    return [c for c in slack.calls() if c.method.startswith("chat.") and "Stream" in c.method
            and c.params.get("ts", ts) == ts]


def accepted_chunks(calls, kind: str) -> list[dict]:
    """The chunks of ``kind`` that Slack accepted, in the order it accepted them."""
    found = []
    for call in calls:
        chunks = call.params.get("chunks") or [] if call.ok else []
        chunks = json.loads(chunks) if isinstance(chunks, str) else chunks
        found += [c for c in chunks if c["type"] == kind]
    return found


def streamed_text(calls) -> str:
    """The markdown Slack accepted, in the order it was accepted."""
    return "".join(c["text"] for c in accepted_chunks(calls, "markdown_text"))


async def answered(h, thread: str):
    report = await h.report(thread)
    [stream] = h.slack.streams(CHANNEL, thread)
    return stream, report


@pytest.mark.docker
async def test_the_answer_streams_with_a_task_per_tool_call(hls, llm_api, redis_db):
    llm_api.push([tool_call("redis__info", {"section": "server"}),
                  tool_call("redis__info", {"section": "clients"})],
                 text(ANSWER, chunk_delay=0.02))
    thread = await mention(hls, "is redis up?")
    stream, report = await answered(hls, thread)

    assert stream.text == SHOWN and stream.stream.stopped
    assert stream.stream.task_display_mode == "plan"
    assert stream.stream.recipient_user == "UREQ1"
    calls = {k: v for k, v in stream.stream.task_history.items() if ":1." in k}
    # each call's task moves forward only and ends complete; a state shorter than the stream's
    # pacing interval is coalesced into the next (fast warm calls often skip "pending")
    assert len(calls) == 2 and all(
        states[-1] == "complete" and states == sorted(states, key=LIFECYCLE.index)
        and len(set(states)) == len(states) for states in calls.values()), \
        stream.stream.task_history
    titles = sorted(stream.stream.tasks[k]["title"] for k in calls)
    assert titles == ["Read Redis INFO (clients)", "Read Redis INFO (server)"]
    assert stream.stream.plan_title.startswith(f"Run {report.text.split('`')[1]} · done")
    appends = [c for c in stream_calls(hls.slack, stream.ts) if c.method == "chat.appendStream"]
    assert len(appends) >= 2, "the answer arrived in pieces, as it was written"
    # the answer lands once: in the stream, not again in the report
    assert "Redis is up" not in report.text and "✅ *Read Redis INFO (server)* — ok" in report.text
    assert [m.ts for m in hls.slack.thread(CHANNEL, thread)][1:] == [stream.ts, report.ts]


class StoppedPacing:
    """Pacing that never ends by itself: a piece that waits for it is still waiting (or was
    stopped) when the assertions run; whatever reached Slack did not wait for an interval."""

    def __init__(self) -> None:
        self.held: list[float] = []  # the waits asked for
        self.stopped = 0  # the waits cancelled by their owner

    async def __call__(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.held.append(seconds)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stopped += 1
            raise


@pytest.mark.docker
async def test_the_answer_does_not_wait_for_the_pacing_of_the_streams_pieces(
        slack_emulator, redis_server, sandbox_image, tmp_path, llm_api, runbook_search,
        redis_db):
    """Issue 16 item 1 on the streamed path: with every ``appendStream`` after the first
    held by its pacing for good, the answer still lands whole, with ``stopStream`` (another
    method, another rate-limit bucket), and the piece that was waiting is never sent."""
    pacing = StoppedPacing()
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api,
                               runbook_search, streaming=True, slack_backoff_s=0.05,
                               bot_options={"status_interval": 3600,
                                            "status_pace": pacing}) as h:
        llm_api.push(tool_call("redis__info", {"section": "server"}),
                     text(ANSWER, chunk_delay=0.02))
        thread = await mention(h, "is redis up?")
        stream, report = await answered(h, thread)

        assert stream.text == SHOWN and stream.stream.stopped, "the whole answer, at once"
        assert pacing.held and pacing.stopped == 1, "a piece was waiting; it was stopped"
        calls = stream_calls(h.slack, stream.ts)
        assert [c.method for c in calls][-1] == "chat.stopStream"
        assert sum(c.method == "chat.appendStream" for c in calls) == 1, \
            "only the piece that did not have to wait"
        assert "Redis is up" not in report.text


@pytest.mark.docker
async def test_a_run_parked_at_its_card_lets_go_of_its_thread_without_waiting_for_pacing(
        slack_emulator, redis_server, sandbox_image, tmp_path, llm_api, runbook_search,
        redis_db):
    """A streamed run that parks for approval ends its drive at once: its last state goes to
    the stream without waiting out the pacing (here: held for good), so a click right after
    the card resumes the run instead of waiting for the thread. That last state is in Slack
    before the thread is let go, so the resumed drive's pieces — from another worker, in
    scale-out — come after it, never before."""
    pacing = StoppedPacing()
    redis_db.set("session:1", "a")
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api,
                               runbook_search, streaming=True,
                               bot_options={"status_interval": 3600,
                                            "status_pace": pacing}) as h:
        llm_api.push(tool_call("redis__flushdb", {}), text("Flushed the cache as approved."))
        thread = await mention(h, "the cache is poisoned, flush it")
        card = await h.card(thread)
        [parked] = h.slack.streams(CHANNEL, thread)
        await wait_until(lambda: plan_states(stream_calls(h.slack, parked.ts))[-1:] == ["waiting"],
                         10, lambda: "the parked state in the stream before the click")
        await h.click(card, APPROVER)
        stream, report = await answered(h, thread)

        assert redis_db.dbsize() == 0, "the approved action ran"
        assert "Flushed the cache as approved." in stream.text and stream.stream.stopped
        states = plan_states(stream_calls(h.slack, stream.ts))
        assert states[states.index("waiting"):] == ["waiting", "running", "done"], states


@pytest.mark.docker
async def test_a_streamed_run_cancelled_while_it_opens_stops_its_stream_and_runs_nothing(
        hls, llm_api):
    """A cancel decided while the worker is inside ``chat.startStream`` (the run still queued
    in the records): the run never starts, and its stream, once it exists, is stopped with the
    plan saying cancelled: left open, Slack would show it as still being written."""
    from graph.surface import RunState

    release = hls.slack.hold("chat.startStream")
    thread = await mention(hls, "is redis up?")
    await hls.slack.wait_for(lambda: hls.slack.held("chat.startStream"), 20)
    [(run, state)] = await hls.bot.runtime.run_store.in_states(*RunState)
    assert state is RunState.QUEUED
    await hls.command(f"cancel {run.run_id}")
    [report] = await reports(hls, thread, 1)
    release.set()  # the cancel is decided and reported: now the stream opens
    [stream] = await hls.slack.wait_for(lambda: hls.slack.streams(CHANNEL, thread) or None, 20)
    await hls.slack.wait_for(lambda: stream_calls(hls.slack, stream.ts)[-1].method
                             == "chat.stopStream", 20)
    await hls.bot.runtime.runs.drain(30)

    assert "cancelled" in report.text
    assert plan_states(stream_calls(hls.slack, stream.ts))[-1] == "cancelled"
    assert (await hls.bot.runtime.records.runs.row(run.run_id)).state is RunState.CANCELLED
    assert not llm_api.requests(), "a cancelled run asked the model"


def plan_states(calls) -> list[str]:
    """The run state in each plan title Slack accepted, in order ("Run r-1 · waiting · …")."""
    return [c["title"].split(" · ")[1] for c in accepted_chunks(calls, "plan_update")]


@pytest.mark.docker
async def test_a_429_storm_delays_the_stream_but_the_text_lands_once_in_order(
        hls, llm_api, redis_db):
    slack = hls.slack
    slack.rate_limit("chat.startStream", times=1, retry_after=1)
    slack.rate_limit("chat.appendStream", times=3, retry_after=1)
    slack.rate_limit("chat.stopStream", times=1, retry_after=1)
    llm_api.push(tool_call("redis__info", {"section": "server"}), text(ANSWER, chunk_delay=0.05))
    thread = await mention(hls, "is redis up?")
    stream, _ = await answered(hls, thread)

    calls = stream_calls(slack, stream.ts)
    assert [c.status for c in calls if c.method == "chat.startStream"] == [429, 200]
    assert sum(c.status == 429 for c in calls) == 5
    assert stream.text == SHOWN and streamed_text(calls) == SHOWN, "once, in order"
    assert [c.method for c in calls if c.ok][-1] == "chat.stopStream"


@pytest.mark.docker
async def test_ok_false_ratelimited_with_http_200_is_retried_and_the_text_lands_once(
        hls, llm_api, redis_db):
    slack = hls.slack
    slack.fail("chat.startStream", "ratelimited", times=1)
    slack.fail("chat.appendStream", "ratelimited", times=4)
    slack.fail("chat.stopStream", "ratelimited", times=2)
    llm_api.push(tool_call("redis__info", {"section": "server"}), text(ANSWER, chunk_delay=0.05))
    thread = await mention(hls, "is redis up?")
    stream, report = await answered(hls, thread)

    calls = stream_calls(slack, stream.ts)
    refused = [c for c in calls if c.status == 200 and c.error == "ratelimited"]
    assert len(refused) == 7
    assert stream.text == SHOWN and streamed_text(calls) == SHOWN, "once, in order"
    assert "Redis is up" not in report.text


async def test_the_status_message_retries_ok_false_ratelimited_too(slack_emulator):
    slack_emulator.add_channel("C0STATUS", "status")
    client = slack_client(Settings(slack_bot_token=BOT_TOKEN, slack_backoff_s=0.05,
                                   slack_api_url=slack_emulator.base_url))
    posted = await client.chat_postMessage(channel="C0STATUS", text="starting")
    slack_emulator.fail("chat.update", "ratelimited", times=3)
    await StatusMessage(client, "C0STATUS", posted["ts"], 0.05).show("final", final=True)

    updates = slack_emulator.calls("chat.update")
    assert [u.error for u in updates] == ["ratelimited"] * 3 + [None]
    assert slack_emulator.messages("C0STATUS")[0].text == "final"


@pytest.mark.docker
async def test_a_workspace_that_cannot_stream_gets_the_status_message(
        slack_emulator, redis_server, sandbox_image, tmp_path, llm_api, runbook_search,
        redis_db):
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api,
                               runbook_search, streaming=False) as h:
        for question in ("is redis up?", "and now?"):
            llm_api.push(text(ANSWER))
            thread = await mention(h, question)
            report = await h.report(thread)
            assert "Redis is up" in report.text
            assert not h.slack.streams(CHANNEL, thread)
            assert any("· done" in m.text for m in h.slack.thread(CHANNEL, thread))
    tries = slack_emulator.calls("chat.startStream")
    assert [c.error for c in tries] == ["unknown_method"], "asked once, then remembered"
