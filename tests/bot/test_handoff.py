"""What a listener hands off starts only once Slack has its answer (bot/deps.py ``ACKED``,
bot/web.py): nothing of the hand-off's work — CPU or database — comes before the ack."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import BotDeps
from bot.web import build_web, slack_handler
from tests.fakes.payloads import FORM, SIGNING_SECRET, sign, slash_command
from tests.fakes.slack import BOT_TOKEN

def post(url: str, body: bytes, answered: threading.Event) -> int:
    """POST from another thread (the server's event loop may be held); the status."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": FORM, **sign(SIGNING_SECRET, body)})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        answered.set()
        return response.status


async def test_work_handed_off_starts_after_the_answer_is_written(slack_emulator):
    app = AsyncApp(client=AsyncWebClient(base_url=slack_emulator.base_url, token=BOT_TOKEN),
                   request_verification_enabled=False, process_before_response=True)
    deps = BotDeps(None, None, None, None, None, None)  # spawn needs none of them
    answered, ran = threading.Event(), asyncio.Event()
    seen: list[bool] = []

    async def busy() -> None:
        # holds the event loop until the client has its answer: had it started before the
        # answer was written, no answer could be written while it holds the loop
        seen.append(answered.wait(timeout=5))
        ran.set()

    @app.command("/ops")
    async def ops(ack, respond) -> None:
        await ack()
        deps.spawn(busy())
        await respond(text="queued")  # a listener awaiting I/O after a hand-off (none does today)

    runner = web.AppRunner(build_web(slack_handler(app, SIGNING_SECRET), None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        body = slash_command("redis info", slack=slack_emulator).body
        status = await asyncio.to_thread(post, url, body, answered)
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        await runner.cleanup()
    assert status == 200
    assert seen == [True], "the hand-off started before the answer was written"
