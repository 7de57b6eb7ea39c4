"""The task API on the bot's port: a real HTTP client with bearer tokens from
``bot.tokens.issue`` (what ``opsbot tokens create`` does); runs are sandboxed, gated by policy
and approved in the Slack emulator like any other; schemathesis checks the served OpenAPI
document against the live server."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aiohttp
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.tokens import issue
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import APPROVER, CHANNEL, REQUESTER, harness, settings_for
from tools.base import Tier

pytestmark = pytest.mark.docker
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def bot(redis_server, sandbox_image, tmp_path_factory):
    with SlackEmulator() as slack:
        settings = settings_for(slack, redis_server.url, tmp_path_factory.mktemp("api") / "data",
                                api_rate=60)
        async with harness(settings, slack) as running:
            yield running


async def token(bot, **scope) -> str:
    scope.setdefault("channels", (CHANNEL,))
    _, secret = await issue(bot.bot.runtime.tokens, REQUESTER, **scope)
    return secret


class Api:
    def __init__(self, bot, secret: str):
        self.base = f"{bot.bot.url}/api/v1"
        self.headers = {"Authorization": f"Bearer {secret}"}

    async def call(self, method: str, path: str, body=None) -> tuple[int, dict, dict]:
        async with aiohttp.ClientSession() as http, http.request(
                method, self.base + path, json=body, headers=self.headers) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)

    async def start(self, **body) -> dict:
        status, headers, run = await self.call("POST", "/runs", body)
        assert status == 202, run
        assert headers["Location"] == f"/api/v1/runs/{run['id']}"
        return run

    async def ended(self, run_id: str, timeout: float = 60) -> dict:
        async def over():
            _, _, run = await self.call("GET", f"/runs/{run_id}")
            return run if run["report"] is not None else None
        return await asyncio.wait_for(_poll(over), timeout)


async def _poll(probe):
    """Every half second: well within the token's rate limit (60 a minute, bursts of 60)."""
    while True:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.5)


async def runs_started(bot) -> int:
    return len(await bot.bot.runtime.audit.rows(("task",), limit=10_000))


async def test_the_document_is_openapi_3_1(bot):
    async with aiohttp.ClientSession() as http, \
            http.get(f"{bot.bot.url}/api/v1/openapi.json") as response:
        document = await response.json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert set(document["paths"]) == {"/api/v1/runs", "/api/v1/runs/{run_id}",
                                      "/api/v1/runs/{run_id}/events",
                                      "/api/v1/runs/{run_id}/cancel"}


async def test_a_typed_command_runs_and_reports(bot, redis_db):
    redis_db.set("api:k", "from the api")
    api = Api(bot, await token(bot))
    run = await api.start(command="redis get api:k")
    assert run["state"] == "queued" and run["source"] == "api" and run["requester"] == REQUESTER
    ended = await api.ended(run["id"])
    assert ended["state"] == "done"
    assert ended["report"]["calls"][0]["output"] == "from the api"
    assert ended["steps"], "the checklist is part of the run"


@pytest.mark.parametrize("scope, command, says", [
    ({"toolsets": ("postgres",)}, "redis get api:k", "This token may call only postgres"),
    ({"max_tier": Tier.OBSERVE}, "redis del api:k", "is tier 3"),
    ({}, "redis get api:k", "may report only in"),  # a channel outside the token's
    ({"max_tier": Tier.SANDBOX_EXECUTE}, None, "a question lets the agent"),
])
async def test_out_of_scope_is_403_and_starts_nothing(bot, scope, command, says):
    api = Api(bot, await token(bot, **scope))
    body = {"command": command} if command else {"question": "why is the cache slow?"}
    if not scope:
        body["channel"] = "C0ELSEWHERE"
    before = await runs_started(bot)
    status, headers, problem = await api.call("POST", "/runs", body)
    assert status == 403 and headers["Content-Type"].startswith(PROBLEM)
    assert says in problem["detail"] and problem["status"] == 403
    assert await runs_started(bot) == before
    assert (await bot.bot.runtime.audit.rows(("api.refused",)))[0]["data"]["reason"] == \
        problem["detail"]


@pytest.mark.parametrize("header", ["", "Bearer nope", "Bearer opsbot_t-0000000000_" + "A" * 43])
async def test_bad_tokens_get_401(bot, header):
    async with aiohttp.ClientSession() as http, http.get(
            f"{bot.bot.url}/api/v1/runs/r-00000000", headers={"Authorization": header}) as r:
        assert r.status == 401 and r.headers["Content-Type"].startswith(PROBLEM)
        assert "Bearer" in r.headers["WWW-Authenticate"]


async def test_an_expired_token_gets_401(bot):
    secret = await token(bot, expires_in=timedelta(seconds=1))
    await asyncio.sleep(1.1)
    status, _, problem = await Api(bot, secret).call("GET", "/runs/r-00000000")
    assert status == 401 and problem["detail"] == "the token has expired"


async def test_a_gated_run_is_approved_in_slack_and_its_report_is_served(bot, redis_db):
    redis_db.set("doomed", "1")
    api = Api(bot, await token(bot))
    before = len([m for m in bot.top_level() if "opsbot" in m.text])
    run = await api.start(command="redis flushdb")
    card = await bot.card(await bot.run_thread(index=before))

    async def waiting():
        _, _, shown = await api.call("GET", f"/runs/{run['id']}")
        return shown if shown["state"] == "waiting" else None
    shown = await asyncio.wait_for(_poll(waiting), 30)
    assert shown["approvals"][0]["status"] == "pending" and shown["approvals"][0]["tier"] == 4
    await bot.click(card, APPROVER)
    ended = await api.ended(run["id"])
    assert ended["report"]["state"] == "done" and redis_db.dbsize() == 0
    assert "Flushed the database" in ended["report"]["calls"][0]["output"]
    assert ended["approvals"][0]["status"] == "approved"
    assert ended["approvals"][0]["decided_by"] == [APPROVER]


async def test_cancel_stops_a_waiting_run(bot, redis_db):
    redis_db.set("kept", "1")
    api = Api(bot, await token(bot))
    before = len([m for m in bot.top_level() if "opsbot" in m.text])
    run = await api.start(command="redis flushdb")
    await bot.card(await bot.run_thread(index=before))
    status, _, cancelled = await api.call("POST", f"/runs/{run['id']}/cancel")
    assert status == 200 and "cancelled" in cancelled["message"]
    ended = await api.ended(run["id"])
    assert ended["state"] == "cancelled" and redis_db.get("kept") == "1"
    status, _, again = await api.call("POST", f"/runs/{run['id']}/cancel")
    assert status == 409 and "already ended" in again["detail"]


async def test_another_users_run_is_not_found(bot, redis_db):
    run = await Api(bot, await token(bot)).start(command="redis get api:k")
    _, other = await issue(bot.bot.runtime.tokens, "UOTHER1", channels=(CHANNEL,))
    status, _, problem = await Api(bot, other).call("GET", f"/runs/{run['id']}")
    assert status == 404 and run["id"] in problem["detail"]


async def test_events_stream_the_checklist_then_the_report(bot, redis_db):
    redis_db.set("api:k", "streamed")
    api = Api(bot, await token(bot))
    run = await api.start(command="redis get api:k")
    seen: list[tuple[str, dict]] = []
    async with aiohttp.ClientSession() as http, http.get(
            f"{api.base}/runs/{run['id']}/events", headers=api.headers) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        event = ""
        async for line in response.content:
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: "):
                seen.append((event, json.loads(text[6:])))
    kinds = [k for k, _ in seen]
    assert kinds[-1] == "report" and kinds.count("report") == 1
    steps = [s for k, data in seen if k == "checklist" for s in data["steps"]]
    assert any(s["state"] == "ok" for s in steps), seen
    assert seen[-1][1]["report"]["calls"][0]["output"] == "streamed"


async def test_the_rate_limit_answers_429_with_retry_after(bot):
    api = Api(bot, await token(bot))
    statuses = [(await api.call("GET", "/runs/r-00000000"))[:2] for _ in range(61)]
    assert [s for s, _ in statuses[:60]] == [404] * 60
    status, headers = statuses[60]
    assert status == 429 and int(headers["Retry-After"]) >= 1
    other = Api(bot, await token(bot))  # the limit is per token
    assert (await other.call("GET", "/runs/r-00000000"))[0] == 404


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]


def fuzz(base: str, secret: str) -> int:
    """Every operation of the served document, with generated requests against the live
    server: no 5xx, and every response as the document says."""
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=15, deadline=None, database=None,
                             phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        def check(case):
            nonlocal calls
            case.call_and_validate(base_url=base, checks=CHECKS, timeout=30,
                                   headers={"Authorization": f"Bearer {secret}"})
            calls += 1

        check()
    return calls


async def test_schemathesis_against_the_served_document(bot):
    secret = await token(bot)
    calls = await asyncio.to_thread(fuzz, bot.bot.url, secret)
    assert calls >= 40
