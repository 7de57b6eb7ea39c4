"""opsbot as an MCP server: a real MCP client (the ``mcp`` library) calls ``/mcp`` on the bot's
port with a bearer token; each call is a run for the token's Slack user, gated by policy and
approved in the Slack emulator like any other run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bot.cli import main
from bot.tokens import authenticate, issue
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import APPROVER, CHANNEL, LEAD, REQUESTER, harness, settings_for
from tools.base import Tier

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
TIME_SERVER = """\
version: 1
servers:
  - name: time
    transport: stdio
    command: python3
    args: [-m, mcp_server_time, --local-timezone, UTC]
"""


@pytest.fixture(scope="module")
async def bot(redis_server, sandbox_image, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    servers = root / "mcp.yml"
    servers.write_text(TIME_SERVER)
    with SlackEmulator() as slack:
        settings = settings_for(slack, redis_server.url, root / "data", mcp=servers,
                                mcp_channel=CHANNEL)
        async with harness(settings, slack) as running:
            yield running


def client(bot, secret: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"},
                              timeout=httpx2.Timeout(30, read=120))
    return Client(streamable_http_client(f"{bot.bot.url}/mcp", http_client=http), cache=None)


def runs_so_far(bot) -> int:
    return len([m for m in bot.top_level() if "opsbot" in m.text])


async def token(bot, **scope) -> str:
    _, secret = await issue(bot.bot.runtime.tokens, REQUESTER, **scope)
    return secret


def text(result) -> str:
    return "\n".join(block.text for block in result.content)


async def test_read_tool_returns_its_result(bot, redis_db):
    redis_db.set("greeting", "hello from redis")
    async with client(bot, await token(bot)) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert tools["redis__get"].annotations.read_only_hint is True
        assert tools["redis__flushdb"].annotations.destructive_hint is True
        result = await mcp.call_tool("redis__get", {"key": "greeting"})
    assert not result.is_error and text(result) == "hello from redis"
    (story, *_) = await bot.bot.runtime.audit.rows(("task",))
    assert story["data"]["source"] == "mcp"


async def test_tier_4_call_waits_for_the_click_then_returns(bot, redis_db):
    redis_db.set("doomed", "1")
    notes: list[str] = []

    async def progress(done, total, message):
        notes.append(message or "")

    async with client(bot, await token(bot)) as mcp:
        before = runs_so_far(bot)
        pending = asyncio.ensure_future(mcp.call_tool("redis__flushdb", {},
                                                      progress_callback=progress))
        thread = await bot.run_thread(index=before)
        card = await bot.card(thread)
        await bot.slack.wait_for(lambda: any("waiting for approval" in n for n in notes), 15)
        assert not pending.done() and redis_db.dbsize() == 1
        await bot.click(card, APPROVER)
        result = await asyncio.wait_for(pending, 60)
    assert not result.is_error and "Flushed the database" in text(result)
    assert redis_db.dbsize() == 0


async def test_denied_call_is_a_tool_error_with_the_reason(bot, redis_db):
    redis_db.set("kept", "1")
    async with client(bot, await token(bot)) as mcp:
        before = runs_so_far(bot)
        pending = asyncio.ensure_future(mcp.call_tool("redis__flushdb", {}))
        card = await bot.card(await bot.run_thread(index=before))
        await bot.deny(card, LEAD, reason="not during the sale")
        result = await asyncio.wait_for(pending, 60)
    assert result.is_error and "not during the sale" in text(result)
    assert redis_db.get("kept") == "1"


@pytest.mark.parametrize("kind", ["garbage", "unknown", "expired", "revoked"])
async def test_bad_tokens_get_401(bot, kind):
    store = bot.bot.runtime.tokens
    secret = {"garbage": "not-a-token",
              "unknown": "opsbot_t-0000000000_" + "A" * 43}.get(kind)
    if kind == "expired":
        _, secret = await issue(store, REQUESTER, expires_in=timedelta(minutes=1),
                                now=datetime.now(UTC) - timedelta(hours=1))
    if kind == "revoked":
        made, secret = await issue(store, REQUESTER)
        await store.revoke(made.id, datetime.now(UTC))
    async with httpx2.AsyncClient() as http:
        response = await http.post(f"{bot.bot.url}/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                               "method": "tools/list"},
                                   headers={"Authorization": f"Bearer {secret}",
                                            "Accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_token_scoped_to_redis_can_call_nothing_else(bot, redis_db):
    async with client(bot, await token(bot, toolsets=("redis",), max_tier=Tier.OBSERVE)) as mcp:
        names = [t.name for t in (await mcp.list_tools()).tools]
        assert names and all(n.startswith("redis__") for n in names)
        assert "redis__flushdb" not in names  # above the token's max tier
        outside = await mcp.call_tool("time__get_current_time", {"timezone": "UTC"})
        too_high = await mcp.call_tool("redis__flushdb", {})
    assert outside.is_error and "outside it" in text(outside)
    assert too_high.is_error and "tiers up to 0 observe" in text(too_high)
    assert len(await bot.bot.runtime.audit.rows(("mcp.refused",))) >= 2


async def test_stdio_bridge_relays_to_the_running_bot(bot, redis_db):
    redis_db.set("via", "stdio")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": "/tmp",
           "OPSBOT_TOKEN": await token(bot), "OPSBOT_MCP_URL": f"{bot.bot.url}/mcp",
           "OPSBOT_LOG_LEVEL": "warning"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "bot.cli", "mcp"],
                                   env=env, cwd="/tmp")
    notes: list[str] = []

    async def progress(done, total, message):
        notes.append(message or "")

    async with Client(params, cache=None) as mcp:
        result = await mcp.call_tool("redis__get", {"key": "via"})
        assert text(result) == "stdio"
        before = runs_so_far(bot)
        pending = asyncio.ensure_future(mcp.call_tool("redis__flushdb", {},
                                                      progress_callback=progress))
        card = await bot.card(await bot.run_thread(index=before))
        await bot.slack.wait_for(lambda: any("waiting for approval" in n for n in notes), 15)
        await bot.click(card, APPROVER)
        flushed = await asyncio.wait_for(pending, 60)
    assert not flushed.is_error and redis_db.dbsize() == 0


def test_tokens_cli_creates_lists_and_revokes(tmp_path, monkeypatch, capsys, logging_restored):
    monkeypatch.setenv("OPSBOT_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["tokens", "create", "--as", "U0DEV", "--toolsets", "redis", "--max-tier", "3",
                 "--expires", "30d"]) == 0
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["tokens", "list"]) == 0
    listing = capsys.readouterr().out
    assert "U0DEV" in listing and "active" in listing and secret not in listing
    token_id = listing.split()[0]
    assert main(["tokens", "create", "--as", "U0DEV", "--toolsets", "rediss"]) == 2
    assert "rediss is not a toolset" in capsys.readouterr().err
    assert main(["tokens", "revoke", token_id]) == 0
    from bot.tokens import RecordsTokens
    from graph.records.sqlite import SqliteRecords

    store = RecordsTokens(SqliteRecords(tmp_path / "opsbot.sqlite").tokens)
    found, why = asyncio.run(authenticate(store, secret))
    assert found is None and why == "the token was revoked"
    assert secret not in (tmp_path / "opsbot.sqlite").read_bytes().decode("latin-1")


async def test_a_client_that_goes_away_ends_its_run_and_nothing_runs(bot, redis_db):
    redis_db.set("survivor", "1")
    before = runs_so_far(bot)
    async with client(bot, await token(bot)) as mcp:
        pending = asyncio.ensure_future(mcp.call_tool("redis__flushdb", {}))
        thread = await bot.run_thread(index=before)
        card = await bot.card(thread)
        pending.cancel()
    report = await bot.report(thread, timeout=60)
    assert "cancelled" in report.text
    stops = await bot.bot.runtime.audit.rows(("run.stop",))
    assert any("the MCP client cancelled the call" in row["data"]["reason"] for row in stops)
    assert "Cancelled" in bot.card_state(card).blocks[-1]["text"]["text"]
    assert redis_db.get("survivor") == "1"


async def test_stdio_bridge_with_a_refused_token_says_so_in_one_sentence(bot):
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": "/tmp",
           "OPSBOT_TOKEN": "opsbot_t-0000000000_" + "A" * 43,
           "OPSBOT_MCP_URL": f"{bot.bot.url}/mcp", "OPSBOT_LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "mcp", env=env, cwd="/tmp",
        stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert err.decode().strip().startswith("opsbot: ") and "refused OPSBOT_TOKEN (401" in err.decode()
    assert "Traceback" not in err.decode()
