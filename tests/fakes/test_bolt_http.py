"""Signed deliveries to a real Bolt AsyncApp served over aiohttp, talking back to the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.payloads import (
    SIGNING_SECRET,
    Signature,
    SlackClient,
    app_mention,
    block_actions,
    message_event,
    pagerduty_alert,
    slash_command,
    url_verification,
)
from tests.fakes.slack import BOT_TOKEN, SlackEmulator

CARD = [
    {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "Restart api?"}},
    {"type": "actions", "block_id": "decide", "elements": [
        {"type": "button", "action_id": "approve", "value": "run-1",
         "text": {"type": "plain_text", "text": "Approve"}}]},
]


@dataclass
class Seen:
    """What the Bolt listeners received."""

    commands: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    retry_headers: list[str | None] = field(default_factory=list)


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


def build_app(slack: SlackEmulator, seen: Seen) -> AsyncApp:
    app = AsyncApp(client=AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN),
                   signing_secret=SIGNING_SECRET)

    @app.command("/ops")
    async def ops(ack, respond, command) -> None:
        await ack()
        seen.commands.append(command)
        await respond(text=f"Running `{command['text']}`", response_type="in_channel")

    @app.event("app_mention")
    async def mention(event, say, client, request) -> None:
        seen.retry_headers.append(request.headers.get("x-slack-retry-num", [None])[0])
        await say(text="Looking into it", thread_ts=event["ts"])
        await client.reactions_add(channel=event["channel"], timestamp=event["ts"], name="eyes")

    @app.event("message")
    async def message(event) -> None:
        seen.messages.append(event)

    @app.action("approve")
    async def approve(ack, respond, body) -> None:
        await ack()
        await respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")

    return app


@pytest.fixture
async def bot(slack: SlackEmulator) -> AsyncIterator[tuple[SlackClient, Seen]]:
    """A Bolt app on a loopback port, and a signed deliverer pointed at its /slack/events."""
    seen = Seen()
    app = build_app(slack, seen)

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    server = web.Application()
    server.router.add_post("/slack/events", events)
    runner = web.AppRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    async with SlackClient(f"http://127.0.0.1:{port}/slack/events") as deliver:
        yield deliver, seen
    await runner.cleanup()


async def test_slash_command_acks_and_responds_through_response_url(
    slack: SlackEmulator, bot: tuple[SlackClient, Seen]
) -> None:
    deliver, seen = bot
    delivery = await deliver.post(slash_command("redis info", user="U1", channel="C1", slack=slack))
    assert delivery.status == 200
    await slack.wait_for(lambda: slack.responses())
    assert seen.commands[0]["text"] == "redis info"
    assert [m.text for m in slack.messages("C1")] == ["Running `redis info`"]


async def test_bad_signatures_are_refused_and_never_reach_listeners(
    slack: SlackEmulator, bot: tuple[SlackClient, Seen]
) -> None:
    deliver, seen = bot
    payload = slash_command("flushall", slack=slack)
    for signature in (Signature.FORGED, Signature.STALE, Signature.MISSING):
        refused = await deliver.post(payload, signature=signature)
        assert (refused.status, refused.json()) == (401, {"error": "invalid request"})
    assert (await deliver.post(slash_command("status", slack=slack))).status == 200
    assert [c["text"] for c in seen.commands] == ["status"]


async def test_mention_and_its_retry_both_reach_a_listener_that_does_not_dedupe(
    slack: SlackEmulator, bot: tuple[SlackClient, Seen]
) -> None:
    """Bolt has no retry dedupe: the emulator makes the double processing visible."""
    deliver, seen = bot
    payload = app_mention("<@UBOT> why is redis slow?", user="U2", channel="C1", slack=slack)
    ts = payload.data["event"]["ts"]
    delivery = await deliver.post(payload)
    retried = await deliver.post(payload, retry_num=1, retry_reason="http_timeout")
    assert (delivery.status, retried.status) == (200, 200)
    replies = await slack.wait_for(lambda: len(slack.messages("C1", thread_ts=ts)) == 2
                                   and slack.messages("C1", thread_ts=ts))
    assert [r.text for r in replies] == ["Looking into it"] * 2
    await slack.wait_for(lambda: len(slack.calls("reactions.add")) == 2)
    assert sorted(c.error or "ok" for c in slack.calls("reactions.add")) == [
        "already_reacted", "ok"]
    assert slack.reactions("C1", ts) == ["eyes"]
    assert sorted(seen.retry_headers, key=str) == ["1", None]
    assert slack.thread("C1", ts)[0].text == "<@UBOT> why is redis slow?"


async def test_button_click_replaces_the_card_via_response_url(
    slack: SlackEmulator, bot: tuple[SlackClient, Seen]
) -> None:
    deliver, _ = bot
    card = await AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN).chat_postMessage(
        channel="C1", text="Approve restart?", blocks=CARD)
    click = block_actions(user="U7", channel="C1", message_ts=card["ts"], action_id="approve",
                          value="run-1", slack=slack)
    assert click.data["actions"][0]["block_id"] == "decide"
    assert click.data["message"]["blocks"] == CARD
    assert (await deliver.post(click)).status == 200
    edited = await slack.wait_for(lambda: slack.message("C1", card["ts"]).edits
                                  and slack.message("C1", card["ts"]))
    assert edited.text == "Approved by <@U7>" and edited.edits[0].blocks == CARD


async def test_url_verification_echoes_the_challenge(bot: tuple[SlackClient, Seen]) -> None:
    deliver, _ = bot
    delivery = await deliver.post(url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7"))
    assert delivery.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7"}


@pytest.mark.parametrize("style", ["classic", "modern"])
async def test_pagerduty_messages_reach_message_listeners(
    slack: SlackEmulator, bot: tuple[SlackClient, Seen], style: str
) -> None:
    deliver, seen = bot
    payload = pagerduty_alert(style, channel="C5", title="Disk full on db-7", slack=slack)
    assert (await deliver.post(payload)).status == 200
    [event] = await slack.wait_for(lambda: seen.messages)
    assert event["bot_id"].startswith("B0PD") and event["channel"] == "C5"
    assert ("subtype" in event) == (style == "classic")
    assert "Disk full on db-7" in str(event) and "cache-prod" in str(event)
    assert slack.message("C5", event["ts"]).bot_id == event["bot_id"]


async def test_the_bots_own_messages_are_ignored_by_bolt(
    slack: SlackEmulator, bot: tuple[SlackClient, Seen]
) -> None:
    deliver, seen = bot
    own = message_event("Working…", user="UBOT", extra={"bot_id": "BBOT"})
    other = message_event("Triggered", user=None, extra={"bot_id": "B0OTHER",
                                                         "subtype": "bot_message"})
    assert (await deliver.post(own)).status == 200
    assert (await deliver.post(other)).status == 200
    await slack.wait_for(lambda: seen.messages)
    await asyncio.sleep(0.05)
    assert [m["bot_id"] for m in seen.messages] == ["B0OTHER"]
