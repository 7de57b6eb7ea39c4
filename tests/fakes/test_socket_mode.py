"""The Socket Mode link driven by Bolt's real AsyncSocketModeHandler (aiohttp client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.payloads import app_mention, slash_command
from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, SlackEmulator


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def retries() -> list[str | None]:
    return []


@pytest.fixture
async def handler(slack: SlackEmulator, retries: list[str | None]
                  ) -> AsyncIterator[AsyncSocketModeHandler]:
    app = AsyncApp(client=AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN))

    @app.command("/ops")
    async def ops(ack, command) -> None:
        await ack(text=f"Queued `{command['text']}`")

    @app.event("app_mention")
    async def mention(request) -> None:
        retries.append(request.headers.get("x-slack-retry-num", [None])[0])

    socket_handler = AsyncSocketModeHandler(app, APP_TOKEN)
    yield socket_handler
    await socket_handler.close_async()


async def test_slash_command_envelope_is_acked_with_the_response(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    envelope_id = slack.socket.send_payload(slash_command("redis info", slack=slack))
    await handler.connect_async()
    ack = await slack.socket.wait_for_ack(envelope_id, timeout=5)
    assert ack.payload == {"text": "Queued `redis info`"}
    [envelope] = slack.socket.envelopes()
    assert envelope.body["accepts_response_payload"] is True and envelope.type == "slash_commands"
    [opened] = slack.calls("apps.connections.open")
    assert opened.headers["Authorization"] == f"Bearer {APP_TOKEN}"
    assert slack.socket.frames() == []


async def test_events_carry_retry_attempts_into_bolt(
    slack: SlackEmulator, handler: AsyncSocketModeHandler, retries: list[str | None]
) -> None:
    await handler.connect_async()
    mention = app_mention("<@UBOT> status", slack=slack)
    first = slack.socket.send_payload(mention)
    again = slack.socket.send_payload(mention, retry_attempt=1, retry_reason="timeout")
    for envelope_id in (first, again):
        assert (await slack.socket.wait_for_ack(envelope_id)).payload is None
    sent = [e.body for e in slack.socket.envelopes()]
    assert [(e["retry_attempt"], e["accepts_response_payload"]) for e in sent] == [
        (0, False), (1, False)]
    await slack.wait_for(lambda: len(retries) == 2)
    assert sorted(retries, key=str) == ["0", "1"]


async def test_disconnect_makes_the_client_reconnect(
    slack: SlackEmulator, handler: AsyncSocketModeHandler
) -> None:
    await handler.connect_async()
    await slack.socket.wait_for_connection(1)
    slack.socket.disconnect("refresh_requested")
    await slack.socket.wait_for_connection(2)
    assert len(slack.calls("apps.connections.open")) == 2
    envelope_id = slack.socket.send_payload(slash_command("after reconnect", slack=slack))
    assert (await slack.socket.wait_for_ack(envelope_id)).payload == {
        "text": "Queued `after reconnect`"}


async def test_socket_urls_are_single_use_and_envelope_types_checked(
    slack: SlackEmulator,
) -> None:
    opened = await AsyncWebClient(base_url=slack.base_url).apps_connections_open(
        app_token=APP_TOKEN)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(opened["url"]) as ws:
            hello = await ws.receive_json(timeout=2)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(opened["url"])
    assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == "A1"
    with pytest.raises(ValueError, match="envelope type must be one of"):
        slack.socket.send_envelope("slash_command", {})
