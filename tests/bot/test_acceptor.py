"""The acceptor's answer (``bot/acceptor.py``): 200 only for a request the bot process can take.

A real HTTP server and a real socket pair: the bot process's end is a socket nobody reads (a bot
process stuck in a long pause) or one that is closed (it is gone)."""

import asyncio
import socket
import sys
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.acceptor import Handover, read_frame, slack_events
from bot.forwarding import Acceptor
from tests.fakes.payloads import FORM, SIGNING_SECRET, sign, slash_command
from tests.fakes.server import wait_until


@asynccontextmanager
async def acceptor(backlog: int):
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    bot_reader, bot_writer = await asyncio.open_unix_connection(sock=theirs)
    app = web.Application()
    app.router.add_post("/slack/events", slack_events(SignatureVerifier(SIGNING_SECRET),
                                                      Handover(writer, backlog)))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", writer, bot_reader
    finally:
        await runner.cleanup()
        writer.close()
        bot_writer.close()


async def post(session: aiohttp.ClientSession, url: str, text: str) -> int:
    body = slash_command(text, response_url="http://127.0.0.1:9/hook").body
    async with session.post(url, data=body,
                            headers={"Content-Type": FORM, **sign(SIGNING_SECRET, body)}) as r:
        return r.status


async def test_a_backlog_the_bot_process_does_not_read_is_refused_not_lost():
    async with acceptor(backlog=64 * 1024) as (url, _, bot_reader), aiohttp.ClientSession() as s:
        statuses = []
        for i in range(5000):  # the kernel's socket buffer, then the backlog, fill up
            statuses.append(await post(s, url, f"redis info req{i}z " + "x" * 1000))
            if statuses[-1] != 200:
                break
        assert statuses[-1] == 503, "Slack is told to deliver it again"
        taken = [await read_frame(bot_reader) for _ in range(statuses.count(200))]
        assert [f"req{i}z" in t["body"] for i, t in enumerate(taken)] == [True] * len(taken)
        assert "x-slack-signature" in taken[0]["headers"]


async def test_a_request_while_the_bot_process_is_gone_gets_503():
    async with acceptor(backlog=64 * 1024) as (url, writer, _), aiohttp.ClientSession() as s:
        assert await post(s, url, "redis info") == 200
        writer.close()
        assert await post(s, url, "redis info") == 503


async def test_an_acceptor_that_cannot_be_started_is_tried_again_until_it_can():
    acceptor = Acceptor(None, lambda work: None, SIGNING_SECRET, "127.0.0.1", 0,
                        python="/nonexistent/python3")
    acceptor.start()
    try:
        why = await wait_until(lambda: acceptor.start_error, 10, lambda: "a failed start")
        assert "/nonexistent/python3" in why
        assert acceptor.readiness() == f"the acceptor process could not be started: {why}"
        assert not acceptor._task.done(), "the restart loop survives a start that fails"
        acceptor.python = sys.executable
        port = await wait_until(lambda: acceptor.listening, 20, lambda: "the acceptor to listen")
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200 and acceptor.readiness() == "ok"
    finally:
        await acceptor.close()
