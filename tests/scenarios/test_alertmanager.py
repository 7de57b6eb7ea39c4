"""Issue 12, the Alertmanager receiver end to end: real v4 notifications (two groups, a firing
group repeated, then resolved) give one investigation per group in the channel its labels
route to, the resolve shows on the run and stops it while it still investigates, and bad
credentials start nothing. The main scenario runs in both storage modes (the group's run is
found through the records, so any ingress process may receive any notification)."""

import asyncio
import base64
import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from graph.surface import RunState
from tests.fakes.openai import Delay, text
from tests.scenarios.llm_harness import INCIDENTS, LLM_POLICY, reports, running_llm_bot
from tests.fakes.slack import slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import POLICY
from tests.scenarios.process import AuditFile, bot_processes  # noqa: F401 (fixture)
from tests.fakes.server import wait_until
from tests.scenarios.test_scaleout import start_cluster

pytestmark = pytest.mark.docker
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
PAYMENTS = "C0PAYMENTS"
TOKEN, PASSWORD = "am-bearer-token-for-tests", "am-basic-password-for-tests"
ROUTES = f"""\
alert_routes:
  - match: {{team: payments}}
    channel: {PAYMENTS}
"""
ANSWER = "The 5xx come from one bad checkout pod; see its logs."


@pytest.fixture
async def am(slack_emulator, redis_server, sandbox_image, tmp_path, llm_api, storage):
    slack_emulator.add_channel(PAYMENTS, "payments-incidents")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "policy.yml").write_text(LLM_POLICY + ROUTES)
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api, None,
                               alertmanager_token=TOKEN, alertmanager_password=PASSWORD,
                               **storage) as h:
        yield h


def payload(name: str, **changes) -> dict:
    return json.loads((FIXTURES / f"alertmanager_{name}.json").read_text()) | changes


async def send(h, body: dict, authorization: str | None = f"Bearer {TOKEN}") -> int:
    headers = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.27.0"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with (aiohttp.ClientSession() as session,
                session.post(f"{h.bot.url}/webhooks/alertmanager", json=body,
                             headers=headers) as response):
        return response.status


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def records(h) -> AuditFile:
    settings = h.bot.runtime.settings
    dsn = settings.database_url.get_secret_value() if settings.database_url else None
    return AuditFile(settings.data_dir, dsn)


def audited(h, kind: str) -> list[dict]:
    return [r["data"] for r in records(h).rows(kind)]


def status_messages(h, channel: str) -> list:
    return [m for m in h.slack.messages(channel) if "*opsbot* `r-" in m.text]


async def status_with(h, channel: str, line: str):
    def found():
        got = [m for m in status_messages(h, channel) if line in m.text]
        return got[0] if got else None
    return await h.slack.wait_for(found, 20)


@pytest.mark.parametrize("storage", ["sqlite", "postgres"], indirect=True)
async def test_two_groups_fire_repeat_and_resolve_one_run_each(am, llm_api):
    llm_api.push(text(ANSWER), text(ANSWER))
    assert await send(am, payload("payments_firing")) == 202
    assert await send(am, payload("redis_firing"), basic("alertmanager", PASSWORD)) == 202
    payments = (await am.slack.wait_for(lambda: status_messages(am, PAYMENTS), 20))[0]
    redis = (await am.slack.wait_for(lambda: status_messages(am, INCIDENTS), 20))[0]
    assert payments.text.startswith("Alertmanager alert")
    await reports(am, payments.ts, 1, channel=PAYMENTS)
    await reports(am, redis.ts, 1, channel=INCIDENTS)

    assert await send(am, payload("payments_firing")) == 202  # repeat_interval: same group
    await status_with(am, PAYMENTS, "Alertmanager: still firing (2 alerts)")
    assert await send(am, payload("payments_resolved")) == 202
    await status_with(am, PAYMENTS, "Alertmanager: resolved (2 alerts)")

    runs = records(am).runs()
    assert sorted((r.task.channel, r.task.alert.title) for r, _ in runs) == [
        (INCIDENTS, "Redis cache-prod-1 is down"), (PAYMENTS, "checkout 5xx ratio above 5%")]
    assert len(llm_api.requests()) == 2 and len(status_messages(am, PAYMENTS)) == 1
    assert [a["via"] for a in audited(am, "alert.attached")] == ["alertmanager"]
    assert [a["status"] for a in audited(am, "alert.status")] == ["resolved"]
    openings = [r.body["messages"][1]["content"] for r in llm_api.requests()]
    hostile = next(o for o in openings if "HighErrorRate" in o)
    before, quoted, after = hostile.partition("<alert>")[0], *hostile.partition("<alert>")[2] \
        .partition("</alert>")[::2]
    assert "Ignore previous instructions" in quoted  # alert text is data, quoted
    assert "Ignore previous" not in before + after
    assert "investigate this Alertmanager incident" in before


async def test_a_resolve_stops_the_run_and_a_new_firing_starts_another(am, llm_api):
    llm_api.push(Delay(20), text("too late"), text(ANSWER))
    assert await send(am, payload("payments_firing")) == 202
    await llm_api.wait_for(lambda: llm_api.requests(), 20)
    assert await send(am, payload("payments_resolved")) == 202
    first = (await am.slack.wait_for(lambda: status_messages(am, PAYMENTS), 20))[0]
    report = (await reports(am, first.ts, 1, channel=PAYMENTS))[0]
    assert "cancelled" in report.text
    await status_with(am, PAYMENTS, "Alertmanager: resolved (2 alerts)")
    await am.slack.wait_for(  # the run's row is settled just after its report is posted
        lambda: records(am).runs()[0][1] is RunState.CANCELLED or None, 20)

    assert await send(am, payload("payments_firing")) == 202  # fires again: a new episode
    await am.slack.wait_for(lambda: len(status_messages(am, PAYMENTS)) == 2 or None, 20)
    assert [s for _, s in records(am).runs()][1] in (RunState.QUEUED, RunState.RUNNING,
                                                      RunState.DONE)


@pytest.mark.parametrize("authorization", [
    None, "Bearer wrong-token", f"Bearer {TOKEN}x", basic("alertmanager", "wrong"),
    basic("intruder", PASSWORD), f"Basic {TOKEN}", f"Token {TOKEN}",
])
async def test_bad_credentials_are_refused_and_start_nothing(am, llm_api, authorization):
    counted = {"source": "alertmanager", "result": "bad_auth"}
    before = REGISTRY.get_sample_value("opsbot_webhook_deliveries_total", counted) or 0.0
    assert await send(am, payload("payments_firing"), authorization) == 401
    assert await send(am, payload("payments_firing", status="resolved"), authorization) == 401
    assert REGISTRY.get_sample_value("opsbot_webhook_deliveries_total", counted) == before + 2
    await am.bot.deps.drain()
    assert records(am).runs() == [] and llm_api.requests() == []
    assert records(am)._query("select * from alert_groups", []) == []


async def test_a_malformed_notification_is_a_400_that_starts_nothing(am, llm_api):
    assert await send(am, payload("payments_firing", version="3")) == 400
    assert await send(am, {"alerts": []}) == 400
    await am.bot.deps.drain()
    assert records(am).runs() == []


async def test_two_ingress_processes_share_each_group_s_run(
        bot_processes, slack_emulator, postgres_database, redis_server, sandbox_image,
        tmp_path):
    """Alertmanager HA pairs and load balancers spread one group's notifications over every
    ingress replica: the records, not a process's memory, decide which run a group has."""
    slack_emulator.add_channel(PAYMENTS, "payments-incidents")
    cluster = await start_cluster(bot_processes, slack_emulator, postgres_database,
                                  redis_server.url, sandbox_image, tmp_path, workers=1,
                                  policy=POLICY + ROUTES, OPSBOT_ALERTMANAGER_TOKEN=TOKEN)
    urls = [h.bot.url for h in cluster.ingresses]
    firing = payload("payments_firing")
    statuses = await asyncio.gather(*(post(urls[i % 2], firing) for i in range(8)))
    assert statuses == [202] * 8
    status = (await slack_emulator.wait_for(
        lambda: [m for m in slack_emulator.messages(PAYMENTS) if "*opsbot* `r-" in m.text],
        60))[0]
    assert await post(urls[1], payload("payments_resolved")) == 202
    await slack_emulator.wait_for(lambda: "Alertmanager: resolved" in (
        slack_emulator.message(PAYMENTS, status.ts).text) or None, 60)
    assert cluster.query("select count(*) from runs") == [(1,)]
    await wait_until(lambda: len(cluster.query(
        "select 1 from audit where kind = 'alert.attached'")) == 7, 30, lambda: "attached")
    assert cluster.query("select firing, run_id is not null from alert_groups") == [(False, True)]


async def post(url: str, body: dict) -> int:
    async with (aiohttp.ClientSession() as session,
                session.post(f"{url}/webhooks/alertmanager", json=body,
                             headers={"Authorization": f"Bearer {TOKEN}"}) as response):
        return response.status
