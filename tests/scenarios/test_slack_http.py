"""Issue "start here": signed Slack requests over real HTTP → run → approval → sandbox → reply."""

import asyncio
import json

import docker
import pytest

from tests.fakes.payloads import Signature, app_mention, slash_command, url_verification
from tests.fakes.server import wait_until
from tests.scenarios.harness import APPROVER, CHANNEL, LEAD, OUTSIDER, REQUESTER

pytestmark = pytest.mark.docker


async def test_redis_info_replies_in_thread_with_real_output(h, redis_db):
    delivery = await h.command("redis info section=server")
    assert delivery.status == 200
    thread = await h.run_thread()
    report = await h.report(thread)
    assert "redis_version:" in report.text and "done" in report.text
    status = h.slack.message(CHANNEL, thread)
    assert status.edits, "the status message is edited in place as the run advances"
    assert "✅ Read Redis INFO (server)" in status.text
    assert [m.ts for m in h.top_level()] == [thread], "one status message per run"


async def test_flushdb_approved_runs_once_in_a_hardened_container(h, redis_db):
    redis_db.set("session:1", "a")
    redis_db.set("session:2", "b")
    seen: dict[str, dict] = {}
    instance = h.bot.runtime.sandbox.config.instance
    watcher = asyncio.create_task(_watch_sandbox_containers(seen, instance))
    await h.command("redis flushdb")
    thread = await h.run_thread()
    card = await h.card(thread)
    assert "Delete every key in the Redis database" in card.blocks[0]["text"]["text"]
    preview = next(b["text"]["text"] for b in card.blocks if "*Preview*" in b.get("text", {}).get("text", ""))
    assert "This database has 2 keys" in preview, "the approver sees the dry run"
    assert redis_db.dbsize() == 2, "nothing runs before approval"
    await h.click(card, APPROVER)
    report = await h.report(thread)
    watcher.cancel()
    assert "Flushed the database (2 keys removed)" in report.text
    assert redis_db.dbsize() == 0
    decided = h.card_state(card)
    assert all(b["type"] != "actions" for b in decided.blocks)
    assert f"Approved* by <@{APPROVER}>" in decided.blocks[-1]["text"]["text"]
    (row,) = await h.bot.runtime.audit.rows(("sandbox.exec",))
    container = row["data"]["container"]
    attrs = next((a for cid, a in seen.items() if cid.startswith(container)), None)
    assert attrs is not None, f"the action's container {container} was seen running"
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in " ".join(host["SecurityOpt"])
    assert attrs["Config"]["User"] not in ("", "0", "root")
    assert host["Memory"] > 0 and host["PidsLimit"] > 0
    networks = attrs["NetworkSettings"]["Networks"]
    assert "bridge" not in networks and "host" not in networks
    assert await h.bot.runtime.audit.story(_run_id(report.text))  # audited


async def test_deny_runs_nothing_and_says_why(h, redis_db):
    redis_db.set("k", "v")
    await h.command("redis flushdb")
    thread = await h.run_thread()
    card = await h.card(thread)
    await h.deny(card, APPROVER, reason="not during peak")
    report = await h.report(thread)
    assert redis_db.dbsize() == 1
    assert "denied" in report.text and "not during peak" in report.text
    assert "Denied* by" in h.card_state(card).blocks[-1]["text"]["text"]


async def test_non_approver_double_click_and_self_approval(h, redis_db):
    redis_db.set("k", "v")
    await h.command("redis flushdb")
    thread = await h.run_thread()
    card = await h.card(thread)
    await h.click(card, OUTSIDER)
    assert (await h.ephemeral(OUTSIDER, "can't approve")).startswith("you can't approve this:")
    await h.click(card, REQUESTER)
    assert "you requested this action" in await h.ephemeral(REQUESTER, "can't approve")
    assert redis_db.dbsize() == 1
    await h.click(card, APPROVER)
    await h.report(thread)
    await h.click(card, LEAD, value=h.button_value(card))  # a stale card's button, clicked late
    assert "already approved by" in await h.ephemeral(LEAD, "already")
    assert len(await h.bot.runtime.audit.rows(("sandbox.exec",))) == 1


@pytest.mark.parametrize("signature", [Signature.FORGED, Signature.STALE, Signature.MISSING])
async def test_bad_signatures_get_401_and_start_nothing(h, signature):
    delivery = await h.command("redis info", signature=signature)
    assert delivery.status == 401
    assert (await h.command("help")).status == 200  # a signed request after it is served...
    await h.bot.deps.drain()  # ...and everything handed off after the acks has finished
    assert h.top_level() == [] and await h.bot.runtime.run_store.in_states(*_all_states()) == []


async def test_event_delivered_three_times_starts_one_run(h, redis_db):
    payload = app_mention("<@UBOT> redis info", user=REQUESTER, channel=CHANNEL, slack=h.slack)
    first = await h.post(payload)
    retries = [await h.post(payload, retry_num=n) for n in (1, 2)]
    assert [d.status for d in (first, *retries)] == [200, 200, 200]
    report = await h.report(json.loads(payload.body)["event"]["ts"])
    assert "redis_version:" in report.text
    await h.bot.deps.drain()  # every delivery's hand-off has finished
    assert len(await h.bot.runtime.run_store.in_states(*_all_states())) == 1


@pytest.mark.parametrize("body", [b'{"type": "event_callback", "event": {"ty', b"payload=%7B%22ty"])
async def test_truncated_bodies_get_400(h, body):
    from tests.fakes.payloads import Payload

    content_type = "application/json" if body.startswith(b"{") else "application/x-www-form-urlencoded"
    delivery = await h.post(Payload(body, content_type, {}, "events_api"))
    assert delivery.status == 400
    assert (await h.command("redis info")).status == 200, "the bot is still up"


async def test_one_mebibyte_body_gets_413(h):
    payload = slash_command("x" * (1024 * 1024), user=REQUESTER, channel=CHANNEL, slack=h.slack)
    delivery = await h.post(payload)
    assert delivery.status == 413
    assert await h.bot.runtime.run_store.in_states(*_all_states()) == []


async def test_url_verification(h):
    delivery = await h.post(url_verification("chal-123"))
    assert delivery.status == 200 and delivery.json() == {"challenge": "chal-123"}


async def test_help_unknown_and_free_text_without_llm(h):
    help_reply = await h.command("help")
    assert "`redis info" in help_reply.body and "tier 4 production" in help_reply.body
    unknown = await h.command("rdis info")
    assert "Did you mean `redis`?" in unknown.body
    await h.command("why is the cache slow?")
    report = await h.report(await h.run_thread())
    assert "No LLM is configured" in report.text and "/ops redis info" in report.text


async def test_healthz_readyz_and_metrics(h):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{h.bot.url}/healthz") as r:
            assert r.status == 200 and (await r.json())["ok"] is True
        async with session.get(f"{h.bot.url}/readyz") as r:
            body = await r.json()
            assert r.status == 200 and body["problems"] == {}
            assert body["checks"] == {"database": "ok", "sandbox": "ok", "vault": "ok",
                                      "slack": "ok"}
        await h.command("help")
        async with session.get(f"{h.bot.url}/metrics") as r:
            assert 'opsbot_slack_requests_total{outcome="200"}' in await r.text()


def _all_states():
    from graph.surface import RunState

    return tuple(RunState)


def _run_id(text: str) -> str:
    from tests.scenarios.harness import RUN_ID

    return RUN_ID.search(text).group(1)


async def _watch_sandbox_containers(seen: dict[str, dict], instance: str) -> None:
    """Inspect this bot's containers while they exist (each is removed right after its action;
    warm-pool containers are started before any request, so they are found by instance)."""
    client = docker.from_env()
    try:
        while True:
            listed = await asyncio.to_thread(
                client.api.containers, filters={"label": f"opsbot.instance={instance}"})
            for c in listed:
                if c["Id"] not in seen:
                    try:
                        seen[c["Id"]] = await asyncio.to_thread(client.api.inspect_container,
                                                                c["Id"])
                    except docker.errors.NotFound:
                        continue
            await asyncio.sleep(0.02)
    finally:
        client.close()


async def test_readyz_says_what_is_missing_while_healthz_stays_up(slack_emulator, redis_server,
                                                                   sandbox_image, tmp_path):
    """Readiness is 503 with the reason until what a worker needs answers: here the sandbox
    image was never built. Liveness stays 200 (restarting would not build the image)."""
    import aiohttp

    from tests.scenarios.harness import harness, settings_for

    settings = settings_for(slack_emulator, redis_server.url, tmp_path / "data",
                            sandbox_image="opsbot-sandbox:never-built")
    async with harness(settings, slack_emulator) as h, aiohttp.ClientSession() as session:
        async with session.get(f"{h.bot.url}/readyz") as r:
            body = await r.json()
            assert r.status == 503 and set(body["problems"]) == {"sandbox"}
            assert "opsbot sandbox build" in body["problems"]["sandbox"]
        async with session.get(f"{h.bot.url}/healthz") as r:
            assert r.status == 200


async def test_the_runs_reaction_does_not_hold_it_up_and_the_last_one_wins(h, redis_db):
    """The triggering message shows the run's state: 👀 while it runs, ✅ once it is done. The
    first reaction is a Slack round trip the run no longer waits for before its first step
    (issue 16): with ``reactions.add`` held unanswered, the report is out before 👀 lands.
    The final reaction waits for the first, so the message ends with ✅ alone."""
    release = h.slack.hold("reactions.add")
    payload = app_mention("<@UBOT> redis info", user=REQUESTER, channel=CHANNEL, slack=h.slack)
    ts = json.loads(payload.body)["event"]["ts"]
    await h.post(payload)

    report = await h.posted_report(ts)

    assert "redis_version:" in report.text
    assert h.slack.reactions(CHANNEL, ts) == [], "the run waited for its first reaction"
    release.set()
    await wait_until(lambda: h.slack.reactions(CHANNEL, ts) == ["white_check_mark"], 30,
                     lambda: f"reactions: {h.slack.reactions(CHANNEL, ts)}")
    added = [c.params["name"] for c in h.slack.calls("reactions.add")]
    assert added == ["eyes", "white_check_mark"]
