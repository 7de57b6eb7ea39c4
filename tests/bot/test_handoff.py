"""What a listener hands off starts only once Slack has its answer (bot/deps.py ``ACKED``,
bot/web.py): nothing of the hand-off's work — CPU or database — comes before the ack."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.deps import BotDeps
from bot.web import build_web, slack_handler
from tests.fakes.payloads import FORM, SIGNING_SECRET, sign, slash_command
from tests.fakes.slack import BOT_TOKEN

HOLD_S = 1.5


def post(url: str, body: bytes) -> tuple[int, float]:
    """POST from another thread (the server's event loop may be held); status and seconds."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": FORM, **sign(SIGNING_SECRET, body)})
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
        return response.status, time.perf_counter() - began


async def test_work_handed_off_starts_after_the_answer_is_written(slack_emulator):
    app = AsyncApp(client=AsyncWebClient(base_url=slack_emulator.base_url, token=BOT_TOKEN),
                   request_verification_enabled=False, process_before_response=True)
    deps = BotDeps(None, None, None, None, None, None)  # spawn needs none of them
    ran = asyncio.Event()

    async def busy() -> None:
        time.sleep(HOLD_S)  # a hand-off holding the event loop (its CPU work, at worst)
        ran.set()

    @app.command("/ops")
    async def ops(ack) -> None:
        await ack()
        deps.spawn(busy())
        await asyncio.sleep(0)  # a listener awaiting anything after a hand-off (none does today)

    runner = web.AppRunner(build_web(slack_handler(app, SIGNING_SECRET), None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        body = slash_command("redis info", slack=slack_emulator).body
        status, seconds = await asyncio.to_thread(post, url, body)
        await asyncio.wait_for(ran.wait(), 10)
    finally:
        await runner.cleanup()
    assert status == 200
    assert seconds < HOLD_S / 2, f"the ack waited for the hand-off ({seconds:.2f} s)"
