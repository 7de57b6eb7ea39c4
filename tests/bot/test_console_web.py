"""The web console over real HTTP (no browser, no Docker): sign-in is required, by operator
token or Sign in with Slack (OIDC emulator); only the configured users and groups get in;
filters, a run's timeline and pending approvals read the records; nothing secret is rendered;
every response carries the security headers. The browser test is test_console_browser.py.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from approvals.models import ApprovalRequest
from approvals.rules import ApproverRule
from bot.directory import Directory
from bot.tokens import RecordsTokens, issue
from bot.web import build_web
from bot.webconsole import ConsoleDeps, register
from bot.webconsole.auth import Access, Signer, SlackOidc
from graph.records.sqlite import SqliteRecords
from graph.surface import RunRef, RunState
from graph.task import Source, Task
from tests.fakes.slack_oidc import SlackOidcEmulator
from tools.secrets import REDACTOR

READER, STRANGER, TEAM = "UREADER1", "USTRANGER1", "T0TEAM"
CANARY = "canary-" + secrets.token_hex(10)


def run(run_id: str, channel: str, user: str, text: str, source=Source.SLASH) -> RunRef:
    task = Task(source=source, team=TEAM, channel=channel, user=user, text=text,
                thread_ts=f"{run_id[-1]}.0")
    return RunRef(run_id=run_id, task=task, thread_ts=task.thread_ts)


async def seed(records: SqliteRecords) -> None:
    await records.runs.add(run("r-aaaa0001", "C0OPS", "UREQ1", "redis flushdb"))
    await records.runs.add(run("r-aaaa0002", "C0DEV", "UREQ2", f"redis get {CANARY}"))
    await records.runs.set_state("r-aaaa0001", RunState.DONE)
    audit = records.audit
    await audit.record("task", "r-aaaa0001", "UREQ1", source="slash", text="redis flushdb")
    await audit.record("policy", "r-aaaa0001", "UREQ1", verdict="approve", rule="prod-writes",
                       tier=4, reason="tier 4 needs an approval")
    await audit.record("approval.decision", "r-aaaa0001", "UAPPR1", approval="a-1",
                       status="approved", by=["UAPPR1"])
    await audit.record("report", "r-aaaa0001", state="done", headline="Flushed 2 keys")
    now = datetime.now(UTC)
    await records.approvals.create(ApprovalRequest(
        id="a-000000000002", run_id="r-aaaa0002", thread_id="x", call_id="c", interrupt_id="i",
        action_hash="h", canonical={}, summary="Delete every key", target="redis", tier=4,
        requester="UREQ2", reason="", rule=ApproverRule(users=("UAPPR1",), groups=("S0SRE",)),
        channel="C0DEV", thread_ts="2.0", created_at=now, expires_at=now + timedelta(hours=1)))


@pytest.fixture
async def console(tmp_path) -> AsyncIterator[dict]:
    REDACTOR.add(CANARY)
    records = SqliteRecords(tmp_path / "opsbot.sqlite")
    await seed(records)
    tokens = RecordsTokens(records.tokens)
    with SlackOidcEmulator("123.456", "oidc-secret", TEAM) as oidc:
        async with aiohttp.ClientSession() as http:
            deps = ConsoleDeps(records, Access([READER], Directory(None)), tokens, Signer(), http)
            app = build_web(None, None, console=lambda a: register(a, deps))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            deps.oidc = SlackOidc(oidc.origin + "/", "123.456", "oidc-secret",
                                  f"{url}/console/oidc/callback", TEAM)
            try:
                yield {"url": url, "tokens": tokens, "oidc": oidc, "records": records}
            finally:
                await runner.cleanup()
                await records.close()


def browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def token_sign_in(client: aiohttp.ClientSession, console: dict, user: str) -> aiohttp.ClientResponse:
    _, secret = await issue(console["tokens"], user)
    async with client.get(f"{console['url']}/console/login") as page:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
    return await client.post(f"{console['url']}/console/login",
                             data={"token": secret, "csrf": csrf})


async def test_pages_need_a_session_and_carry_the_security_headers(console):
    async with browser() as client:
        for path in ("/console/runs", "/console/runs/r-aaaa0001", "/console/approvals"):
            async with client.get(console["url"] + path, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/console/login"
                assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        async with client.get(console["url"] + "/console/login") as r:
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["Cache-Control"] == "no-store"
            assert "<script" not in await r.text()


async def test_an_operator_token_signs_in_and_filters_read_the_records(console):
    async with browser() as client:
        signed = await token_sign_in(client, console, READER)
        assert signed.status == 200 and str(signed.url).endswith("/console/runs")
        body = await signed.text()
        assert "r-aaaa0001" in body and "r-aaaa0002" in body
        assert CANARY not in body and "[redacted]" in body  # a run's text is shown redacted
        async with client.get(f"{console['url']}/console/runs?state=done") as r:
            body = await r.text()
            assert "r-aaaa0001" in body and "r-aaaa0002" not in body
        async with client.get(f"{console['url']}/console/runs?channel=C0DEV&requester=UREQ2") as r:
            body = await r.text()
            assert "r-aaaa0002" in body and "r-aaaa0001" not in body
        async with client.get(f"{console['url']}/console/runs?state=bogus") as r:
            assert r.status == 400 and "state must be one of" in await r.text()
        async with client.get(f"{console['url']}/console/runs?since=yesterday") as r:
            assert r.status == 400 and "since must be a date" in await r.text()
        async with client.get(f"{console['url']}/console/runs/r-aaaa0001") as r:
            body = await r.text()
        assert "prod-writes" in body and "tier 4 needs an approval" in body
        assert "approved</b> by UAPPR1" in body and "Flushed 2 keys" in body
        async with client.get(f"{console['url']}/console/approvals") as r:
            body = await r.text()
        assert "Delete every key" in body and "@UAPPR1, @S0SRE" in body
        async with client.get(f"{console['url']}/console/runs/r-nope") as r:
            assert r.status == 404


async def test_people_outside_the_groups_and_bad_tokens_stay_out(console):
    async with browser() as client:
        refused = await token_sign_in(client, console, STRANGER)
        assert refused.status == 403 and "not among the people allowed" in await refused.text()
        async with client.get(f"{console['url']}/console/runs", allow_redirects=False) as r:
            assert r.status == 303  # no session was made
        async with client.get(f"{console['url']}/console/login") as page:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
        async with client.post(f"{console['url']}/console/login",
                               data={"token": "opsbot_t-0000000000_" + "A" * 43,
                                     "csrf": csrf}) as r:
            assert r.status == 401 and "unknown bearer token" in await r.text()
        async with client.post(f"{console['url']}/console/login",
                               data={"token": "x", "csrf": "forged"}) as r:
            assert r.status == 403 and "form has expired" in await r.text()
    async with browser() as client:  # a forged cookie is no session
        client.cookie_jar.update_cookies({"opsbot_console": "eyJ1IjoiVVJFQURFUjEifQ.bad"})
        async with client.get(f"{console['url']}/console/runs", allow_redirects=False) as r:
            assert r.status == 303


async def test_sign_in_with_slack(console):
    oidc = console["oidc"]
    oidc.user = READER
    async with browser() as client:
        async with client.get(f"{console['url']}/console/login/slack") as r:
            assert r.status == 200 and str(r.url).endswith("/console/runs")
            assert "signed in as UREADER1" in await r.text()
        async with client.post(f"{console['url']}/console/logout", data={"csrf": "wrong"}) as r:
            assert r.status == 403
        async with client.get(f"{console['url']}/console/runs", allow_redirects=False) as r:
            assert r.status == 200
    oidc.claims = {"https://slack.com/team_id": "T0OTHER"}
    async with browser() as client, client.get(f"{console['url']}/console/login/slack") as r:
        assert r.status == 401 and "belongs to another workspace" in await r.text()
    oidc.claims = {}
    oidc.user = STRANGER
    async with browser() as client, client.get(f"{console['url']}/console/login/slack") as r:
        assert r.status == 403
    async with browser() as client, client.get(
            f"{console['url']}/console/oidc/callback?code=x&state=forged") as r:
        assert r.status == 400 and "expired" in await r.text()
