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


class Recorder:
    """RunManager.submit as a stand-in that notes how many run at once (each takes a few
    event-loop turns, as a transaction's round trips do)."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.done: list[str] = []

    async def submit(self, task, delivery=None, tell=True):
        self.running += 1
        self.most = max(self.most, self.running)
        for _ in range(5):
            await asyncio.sleep(0)
        self.running -= 1
        self.done.append(delivery)


class Directory:
    async def groups_of(self, user: str) -> frozenset[str]:
        return frozenset()

    async def channel_name(self, channel: str) -> str:
        return "ops"


async def test_runs_are_handed_off_a_few_at_a_time():
    """A burst of run-starting requests: their transactions take turns (HANDOFF_LANES at a
    time), so the acks of the requests behind them do not queue behind every one's steps."""
    from bot.deps import HANDOFF_LANES
    from graph.task import Source, Task

    runs = Recorder()
    deps = BotDeps(None, None, None, runs, None, Directory())
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="U1", text="redis info")
    await asyncio.gather(*(deps.submit(task, f"d{i}") for i in range(8)))
    assert sorted(runs.done) == sorted(f"d{i}" for i in range(8))
    assert runs.most == HANDOFF_LANES == 2


class Told:
    """A surface whose refusals hang (Slack answering 429 with a long Retry-After)."""

    def __init__(self) -> None:
        self.waiting: list[str] = []
        self.release = asyncio.Event()

    async def refused(self, task, sentence: str) -> None:
        self.waiting.append(sentence)
        await self.release.wait()


async def test_a_slow_refusal_does_not_hold_a_hand_off_lane():
    """Telling a refused requester is a Slack call: it happens after the run's turn, so two
    refusals stuck in Slack's rate limits do not stop the next run from being queued."""
    from graph.runs import Refused
    from graph.task import Source, Task

    class Refusing(Recorder):
        surface = Told()

        async def submit(self, task, delivery=None, tell=True):
            await super().submit(task, delivery, tell)
            return Refused("too many runs") if delivery.startswith("no") else None

    runs = Refusing()
    deps = BotDeps(None, None, None, runs, None, Directory())
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="U1", text="redis info")
    stuck = [asyncio.create_task(deps.submit(task, f"no{i}")) for i in range(2)]
    await asyncio.wait_for(deps.submit(task, "yes"), 5)
    assert runs.done == ["no0", "no1", "yes"] and runs.surface.waiting == ["too many runs"] * 2
    runs.surface.release.set()
    assert [await s for s in stuck] == [Refused("too many runs")] * 2
