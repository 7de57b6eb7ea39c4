"""The emulator's agent surface (assistant threads, streaming, App Home), driven by the real
slack_sdk client and its own streaming helper and chunk models."""

from __future__ import annotations

from slack_sdk.models.blocks import ContextActionsBlock, FeedbackButtonsElement
from slack_sdk.models.messages.chunk import MarkdownTextChunk, PlanUpdateChunk, TaskUpdateChunk
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import BOT_TOKEN, SlackEmulator
from tests.fakes.test_slack_web import client, error_of, slack  # noqa: F401 - fixtures


def feedback_block() -> ContextActionsBlock:
    return ContextActionsBlock(elements=[FeedbackButtonsElement(
        action_id="feedback",
        positive_button={"text": {"type": "plain_text", "text": "Good"}, "value": "up"},
        negative_button={"text": {"type": "plain_text", "text": "Bad"}, "value": "down"})])


async def test_assistant_thread_status_prompts_and_title(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    where = {"channel_id": "D0U1", "thread_ts": "1.1"}
    prompts = [{"title": "Redis", "message": "Why is redis slow?"}]
    await client.assistant_threads_setSuggestedPrompts(**where, prompts=prompts, title="Try")
    await client.assistant_threads_setTitle(**where, title="Cache latency")
    await client.assistant_threads_setStatus(**where, status="is reading INFO…",
                                             loading_messages=["Reading", "Thinking"])
    thread = slack.assistant_thread("D0U1", "1.1")
    assert (thread.prompts, thread.prompts_title, thread.title, thread.status) == (
        prompts, "Try", "Cache latency", "is reading INFO…")

    await client.chat_postMessage(channel="D0U1", thread_ts="1.1", text="Here is what I found")
    assert slack.assistant_thread("D0U1", "1.1").statuses == ["is reading INFO…", ""]

    too_many = await error_of(client.assistant_threads_setSuggestedPrompts(**where,
                                                                          prompts=prompts * 5))
    assert too_many["error"] == "invalid_arguments"
    odd = await error_of(client.assistant_threads_setSuggestedPrompts(
        **where, prompts=[{"title": "x"}]))
    assert odd["error"] == "invalid_arguments"


async def test_the_sdk_stream_helper_builds_one_message_with_a_plan(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    parent = await client.chat_postMessage(channel="C1", text="why is redis slow?")
    stream = await client.chat_stream(channel="C1", thread_ts=parent["ts"], buffer_size=8,
                                      recipient_user_id="U1", recipient_team_id="T1",
                                      task_display_mode="plan")
    await stream.append(chunks=[PlanUpdateChunk(title="Investigating"),
                                TaskUpdateChunk(id="t1", title="Read INFO", status="in_progress")])
    await stream.append(markdown_text="Memory is ")
    await stream.append(chunks=[TaskUpdateChunk(id="t1", title="Read INFO", status="complete",
                                                output="used_memory:1G")])
    await stream.append(markdown_text="fine.")
    await stream.stop(blocks=[feedback_block()])

    [message] = slack.streams("C1", parent["ts"])
    assert message.text == "Memory is fine."
    assert message.stream.plan_title == "Investigating"
    assert message.stream.task_history == {"t1": ["in_progress", "complete"]}
    assert message.stream.stopped and message.blocks[0]["type"] == "context_actions"
    assert [c.method for c in slack.calls() if "Stream" in c.method][0] == "chat.startStream"

    late = await error_of(client.chat_appendStream(channel="C1", ts=message.ts,
                                                   markdown_text="more"))
    assert late["error"] == "message_not_in_streaming_state"


async def test_stream_rules(client: AsyncWebClient, slack: SlackEmulator) -> None:
    no_recipient = await error_of(client.chat_startStream(channel="C1", thread_ts="1.1"))
    assert no_recipient["error"] == "invalid_arguments"
    assert (await client.chat_startStream(channel="D0U1", thread_ts="1.1"))["ok"]  # a DM

    started = await client.chat_startStream(channel="D0U1", thread_ts="1.2",
                                            chunks=[MarkdownTextChunk(text="hi")])
    bad_status = await error_of(client.chat_appendStream(
        channel="D0U1", ts=started["ts"],
        chunks=[{"type": "task_update", "id": "t", "title": "x", "status": "waiting"}]))
    assert bad_status["error"] == "invalid_chunks"
    unknown = await error_of(client.api_call("chat.appendStream", json={
        "channel": "D0U1", "ts": started["ts"], "chunks": [{"type": "confetti"}]}))
    assert unknown["error"] == "invalid_chunks"
    stray = await error_of(client.api_call("chat.appendStream", json={
        "channel": "D0U1", "ts": started["ts"],
        "chunks": [{"type": "markdown_text", "text": "x", "colour": "red"}]}))
    assert stray["error"] == "invalid_chunks"
    bad_blocks = await error_of(client.chat_stopStream(
        channel="D0U1", ts=started["ts"], blocks=[{"type": "context_actions", "elements": []}]))
    assert bad_blocks["error"] == "invalid_blocks"
    assert slack.message("D0U1", started["ts"]).streaming  # a refused stop changes nothing

    slack.without_streaming()
    older = await error_of(client.chat_startStream(channel="D0U1", thread_ts="1.3"))
    assert older["error"] == "unknown_method"


async def test_home_tab_and_memberships(client: AsyncWebClient, slack: SlackEmulator) -> None:
    home = {"type": "home", "blocks": [{"type": "section",
                                        "text": {"type": "mrkdwn", "text": "*Pending*"}}]}
    first = await client.views_publish(user_id="U1", view=home)
    again = {**home, "blocks": home["blocks"] * 2}
    await client.views_publish(user_id="U1", view=again, hash=first["view"]["hash"])
    stale = await error_of(client.views_publish(user_id="U1", view=home,
                                                hash=first["view"]["hash"]))
    assert stale["error"] == "hash_conflict"
    assert slack.home("U1").view == again and slack.home("U1").history == [home]
    modal = await error_of(client.views_publish(user_id="U1", view={**home, "type": "modal"}))
    assert modal["error"] == "invalid_arguments"

    slack.add_channel("C0OPS", "ops", members=["U1", "U2"])
    slack.add_channel("C0DEV", "dev", members=["U2"])
    mine = await client.users_conversations(user="U1", types="public_channel,private_channel")
    assert [c["id"] for c in mine["channels"]] == ["C0OPS"]


async def test_blocks_slack_sdk_would_drop_are_refused(client: AsyncWebClient) -> None:
    refused = await error_of(client.chat_postMessage(channel="C1", text="t", blocks=[
        {"type": "section", "text": {"type": "mrkdwn", "text": "x"}, "colour": "red"}]))
    assert refused["error"] == "invalid_blocks"
    assert refused["errors"][0].startswith("slack_sdk: does not survive the model unchanged")


async def test_bolt_routes_the_agent_payloads(slack: SlackEmulator) -> None:
    """The builders' shapes reach the listeners Bolt matches them with."""
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest

    from tests.fakes.payloads import SIGNING_SECRET, sign
    from tests.fakes.payloads_ai import (
        app_home_opened,
        assistant_thread_context_changed,
        assistant_thread_started,
        feedback_click,
        home_click,
        im_message,
        message_shortcut,
    )

    app = AsyncApp(client=AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN),
                   signing_secret=SIGNING_SECRET)
    seen: list[str] = []

    def record(name):
        async def listener(ack=None, **_) -> None:
            if ack is not None:
                await ack()
            seen.append(name)
        return listener

    app.event("assistant_thread_started")(record("started"))
    app.event("assistant_thread_context_changed")(record("context"))
    app.event("app_home_opened")(record("home"))
    app.message()(record("im"))
    app.shortcut("investigate")(record("shortcut"))
    app.action("feedback")(record("feedback"))
    app.action("approve")(record("home click"))

    ts = slack.add_message("C1", "redis is down")
    feedback_ts = slack.add_message("C1", "report", blocks=[feedback_block().to_dict()])
    payloads = [
        assistant_thread_started(user="U1", context_channel="C1"),
        assistant_thread_context_changed(user="U1", thread_ts="1.1", context_channel="C2"),
        app_home_opened(user="U1"),
        im_message("hi", user="U1", thread_ts="1.1", slack=slack),
        message_shortcut(callback_id="investigate", channel="C1", message_ts=ts, slack=slack),
        feedback_click(channel="C1", message_ts=feedback_ts, action_id="feedback",
                       value="down", slack=slack),
        home_click(user="U1", view={"id": "V1", "type": "home", "blocks": []},
                   action_id="approve", value="x"),
    ]
    for payload in payloads:
        headers = {"content-type": payload.content_type, **sign(SIGNING_SECRET, payload.body)}
        response = await app.async_dispatch(AsyncBoltRequest(body=payload.body.decode(),
                                                             headers=headers))
        assert response.status == 200, (payload.data, response.body)
    await slack.wait_for(lambda: len(seen) == len(payloads))
    assert sorted(seen) == sorted(["started", "context", "home", "im", "shortcut", "feedback",
                                   "home click"])
