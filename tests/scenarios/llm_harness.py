"""The whole bot with an LLM: the scenario harness plus the OpenAI emulator, shipped runbooks
and a PagerDuty webhook sender.

``hl`` is :class:`~tests.scenarios.harness.Harness` with ``OPENAI_API_KEY``/``OPENAI_BASE_URL``
pointing at a scripted :class:`~tests.fakes.openai.OpenAIEmulator`, ``PAGERDUTY_WEBHOOK_SECRET``
set, an incident channel in the policy, and the runbooks from ``runbooks/`` searched through
the real :class:`~bot.runbooks.AsyncRunbooks` (ingested once per session).

Its fixtures are loaded for every test as a plugin (``tests/conftest.py``). Usage::

    from tests.scenarios.llm_harness import mention

    async def test_x(hl, llm_api, redis_db):
        llm_api.push(tool_call("redis__info", {}), text("fine"))
        thread = await mention(hl, "why is redis slow?")
        report = await hl.report(thread)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.runbooks import AsyncRunbooks
from tests.fakes.openai import OpenAIEmulator
from tests.fakes.payloads import app_mention, message_event
from tests.fakes.slack import SlackEmulator
from tests.scenarios.harness import CHANNEL, POLICY, Harness, harness, settings_for
from tools.runbooks import RunbookConfig, RunbookIndex

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
INCIDENTS = "C0INCIDENT"
PD_SECRET = "pd-webhook-secret-for-tests"
PD_BOT = "B0PDMODERN"
PD_CLASSIC_BOT = "B0PDCLASSIC"
GRACE_S = 0.3  # production waits 5 s for PagerDuty's Slack post before using the webhook
LLM_POLICY = POLICY + f"""\
incident_channels: [{INCIDENTS}]
pagerduty_bot_ids: [{PD_BOT}, {PD_CLASSIC_BOT}]
"""


@pytest.fixture(scope="session")
def runbook_search(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncRunbooks:
    """The shipped runbooks, ingested once per session and searched like the bot does in
    production.

    Embedding 80 chunks costs seconds of CPU, so the finished index is kept in pytest's cache
    under a hash of ``runbooks/`` and copied into this session's tmp dir when it matches
    (ingest then re-embeds nothing). Without the cache plugin it is built from scratch.
    """
    return _ingested(request.config, tmp_path_factory.mktemp("runbooks"))


def _ingested(pytest_config: pytest.Config, data_dir: Path) -> AsyncRunbooks:
    cached = _cached_index(pytest_config)
    if cached is not None and cached.is_dir():
        shutil.copytree(cached, data_dir, dirs_exist_ok=True)
    config = RunbookConfig(data_dir=data_dir)
    index = RunbookIndex(config)
    report = index.ingest(RUNBOOKS)
    index.close()
    if report.errors:
        pytest.fail(f"the shipped runbooks did not ingest: {report.errors}")
    if cached is not None and not cached.is_dir():
        _store(data_dir, cached)
    return AsyncRunbooks(config)


def _cached_index(config: pytest.Config) -> Path | None:
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    digest = hashlib.sha256()
    for file in sorted(RUNBOOKS.rglob("*.md")):
        digest.update(file.name.encode() + file.read_bytes())
    return cache.mkdir("opsbot-runbook-index") / digest.hexdigest()[:16]


def _store(data_dir: Path, cached: Path) -> None:
    """Publish a finished index atomically (a concurrent session may do the same)."""
    staging = cached.with_name(f"{cached.name}.{os.getpid()}")
    shutil.copytree(data_dir, staging)
    try:
        staging.rename(cached)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture
def llm_api() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.fixture
async def hl(slack_emulator: SlackEmulator, redis_server, sandbox_image, tmp_path,
             llm_api: OpenAIEmulator, runbook_search: AsyncRunbooks) -> AsyncIterator[Harness]:
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api, runbook_search,
                           sandbox_image=sandbox_image) as running:
        yield running


@pytest.fixture
async def hls(slack_emulator: SlackEmulator, redis_server, sandbox_image, tmp_path,
              llm_api: OpenAIEmulator, runbook_search: AsyncRunbooks) -> AsyncIterator[Harness]:
    """``hl`` on a workspace that streams (Agents & AI Apps), with a short backoff after
    Slack's HTTP-200 ``ratelimited`` answers."""
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api,
                               runbook_search, sandbox_image=sandbox_image, streaming=True,
                               slack_backoff_s=0.05) as running:
        yield running


def llm_settings(slack: SlackEmulator, redis_url: str, tmp_path: Path, llm: OpenAIEmulator | None,
                 **more: Any):
    keys = {"openai_api_key": llm.api_key, "openai_base_url": llm.base_url} if llm else {}
    # the runbook index is shared by the session: each test remembers its own past incidents
    more.setdefault("memory_collection", f"incidents_{secrets.token_hex(4)}")
    return settings_for(slack, redis_url, tmp_path / "data", LLM_POLICY,
                        pagerduty_webhook_secret=PD_SECRET, **keys, **more)


@asynccontextmanager
async def running_llm_bot(slack: SlackEmulator, redis_url: str, tmp_path: Path,
                      llm: OpenAIEmulator | None, runbooks: AsyncRunbooks | None,
                      incident_grace_s: float = GRACE_S, streaming: bool = False,
                      bot_options: dict[str, Any] | None = None,
                      **more: Any) -> AsyncIterator[Harness]:
    """:func:`~tests.scenarios.harness.harness` plus the incident channel and a short grace
    period before a webhook-only incident starts its investigation (``bot_options``: the
    harness's, e.g. status pacing; ``more``: settings)."""
    slack.add_channel(INCIDENTS, "incident-cache")
    settings = llm_settings(slack, redis_url, tmp_path, llm, **more)
    async with harness(settings, slack, runbooks, incident_grace_s, streaming,
                       **(bot_options or {})) as running:
        yield running


# driving ---------------------------------------------------------------------------------


async def mention(h: Harness, text: str, user: str = "UREQ1", thread_ts: str | None = None
                  ) -> str:
    """``@opsbot <text>`` in the ops channel (or a thread); returns the run's thread ts."""
    payload = app_mention(f"<@UBOT> {text}", user=user, channel=CHANNEL, thread_ts=thread_ts,
                          slack=h.slack)
    delivery = await h.post(payload)
    assert delivery.status == 200, delivery.body
    return thread_ts or payload.data["event"]["ts"]


async def reply_in_thread(h: Harness, thread_ts: str, text: str, user: str = "UREQ1") -> None:
    """A plain (non-mention) reply in a run's thread: a follow-up."""
    payload = message_event(text, user=user, channel=CHANNEL, thread_ts=thread_ts, slack=h.slack)
    assert (await h.post(payload)).status == 200


async def reports(h: Harness, thread_ts: str, count: int, timeout: float = 30,
                  channel: str = CHANNEL) -> list:
    """The first ``count`` run reports in a thread, oldest first."""
    def found():
        got = [m for m in h.slack.thread(channel, thread_ts)
               if m.ts != thread_ts and "*Run `r-" in m.text]
        return got if len(got) >= count else None
    return await h.slack.wait_for(found, timeout)


# PagerDuty webhooks ----------------------------------------------------------------------


def incident_event(kind: str, incident: str = "Q1ABCDEF", title: str = "Redis latency p99 "
                   "above 500ms on cache-prod", agent: str | None = None) -> dict[str, Any]:
    """A Webhooks v3 body, shaped like PagerDuty's developer docs."""
    status = {"incident.acknowledged": "acknowledged", "incident.resolved": "resolved"}.get(
        kind, "triggered")
    return {"event": {
        "id": "01" + secrets.token_hex(12).upper(), "event_type": kind,
        "resource_type": "incident", "occurred_at": datetime.now(UTC).isoformat(),
        "agent": {"summary": agent, "type": "user_reference", "id": "PUSER01"} if agent else None,
        "client": None,
        "data": {"id": incident, "type": "incident", "number": 1234, "status": status,
                 "title": title, "urgency": "high", "incident_key": "redis-latency/cache-prod",
                 "html_url": f"https://acme.pagerduty.com/incidents/{incident}",
                 "service": {"id": "PSVC123", "summary": "cache-prod",
                             "type": "service_reference"},
                 "assignees": [], "teams": [], "priority": None}}}


def pd_signature(body: bytes, secret: str = PD_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def send_webhook(h: Harness, event: dict[str, Any], webhook_id: str | None = None,
                       signature: str | None = None, secret: str = PD_SECRET) -> int:
    """POST one v3 event to the bot's ``/webhooks/pagerduty``; returns the HTTP status.

    ``signature`` replaces the computed header (``""`` leaves it out); ``secret`` signs with
    another secret.
    """
    body = json.dumps(event).encode()
    headers = {"Content-Type": "application/json",
               "X-Webhook-Id": webhook_id or secrets.token_hex(8)}
    signed = pd_signature(body, secret) if signature is None else signature
    if signed:
        headers["X-PagerDuty-Signature"] = signed
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{h.bot.url}/webhooks/pagerduty", data=body, headers=headers) as response,
    ):
        return response.status
