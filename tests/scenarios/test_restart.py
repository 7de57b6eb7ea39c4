"""A pending approval outlives the opsbot process: stop it (politely or not), start a new one on
the same OPSBOT_DATA_DIR, click Approve, and the action runs exactly once."""

import asyncio
import signal

import pytest

from tests.fakes.payloads import SlackClient
from tests.fakes.server import wait_until
from tests.fakes.slack import SlackEmulator, slack_emulator  # noqa: F401 (fixture)
from tests.scenarios.harness import APPROVER, CHANNEL, LEAD, RUN_ID
from tests.scenarios.process import (  # noqa: F401 (fixture)
    AuditFile,
    BotProcess,
    BotProcesses,
    ProcessHarness,
    bot_env,
    bot_processes,
    storage_env,
)
from tests.services.redis import private_redis

pytestmark = [pytest.mark.docker,
              pytest.mark.parametrize("storage", ["sqlite", "postgres"], indirect=True)]


async def _wait_state(audit: AuditFile, run_id: str, state: str, timeout: float = 20) -> None:
    await wait_until(lambda: audit.run_state(run_id) == state, timeout,
                     lambda: f"run {run_id} is {audit.run_state(run_id)!r}, not {state!r}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_approval_survives_a_restart(stop, bot_processes: BotProcesses,  # noqa: F811
                                           slack_emulator: SlackEmulator,  # noqa: F811
                                           redis_server, redis_db, sandbox_image, tmp_path,
                                           storage):
    redis_db.set("session:1", "a")
    redis_db.set("session:2", "b")
    env = bot_env(slack_emulator, tmp_path / "data", redis_server.url, sandbox_image,
                  **storage_env(storage))
    first = await bot_processes.start(env)
    async with SlackClient(first.events_url) as client:
        h = ProcessHarness(first, slack_emulator, client)
        assert (await h.command("redis flushdb")).status == 200
        thread = await h.run_thread()
        card = await h.card(thread)
    run_id = RUN_ID.search(h.slack.message(CHANNEL, thread).text).group(1)
    audit = AuditFile.of(env)
    await _wait_state(audit, run_id, "waiting")

    code = await first.stop(stop)
    assert code == (0 if stop is signal.SIGTERM else -signal.SIGKILL)
    assert redis_db.dbsize() == 2, "nothing ran before the approval"

    second = await bot_processes.start(env)
    assert second.port != 0 and audit.run_state(run_id) == "waiting", "recovery left it waiting"
    async with SlackClient(second.events_url) as client:
        h = ProcessHarness(second, slack_emulator, client)
        assert (await h.click(card, APPROVER)).status == 200
        report = await h.report(thread)

    assert "Flushed the database (2 keys removed)" in report.text
    assert redis_db.dbsize() == 0
    decided = h.card_state(card)
    assert all(b["type"] != "actions" for b in decided.blocks), "the buttons are gone"
    assert f"Approved* by <@{APPROVER}>" in decided.blocks[-1]["text"]["text"]
    await asyncio.sleep(1.0)  # a duplicate resume would show up here
    assert len(audit.rows("sandbox.exec", run_id)) == 1
    assert [r["data"]["status"] for r in audit.rows("approval.decision", run_id)] == ["approved"]
    assert audit.run_state(run_id) == "done"
    assert not [m for m in h.slack.thread(CHANNEL, thread) if "interrupted" in m.text]


async def test_a_decided_approval_whose_resume_was_queued_at_the_crash_still_runs(
        bot_processes: BotProcesses, slack_emulator: SlackEmulator,  # noqa: F811
        sandbox_image, tmp_path, storage):
    """The click is recorded, its resume waits behind a busy worker, and opsbot is killed:
    after the restart the decided approval resumes (embedded: rebuilt from the records at
    start; PostgreSQL: the job committed with the click) and the action runs once."""
    with private_redis(tmp_path / "redis") as server:
        redis = server.client()
        redis.set("session:1", "a")
        env = bot_env(slack_emulator, tmp_path / "data", server.url, sandbox_image,
                      OPSBOT_WORKERS="1", **storage_env(storage))
        first = await bot_processes.start(env)
        audit = AuditFile.of(env)
        async with SlackClient(first.events_url) as client:
            h = ProcessHarness(first, slack_emulator, client)
            await h.command("redis flushdb")
            flush_thread = await h.run_thread(index=0)
            flush_card = await h.card(flush_thread)
            redis.execute_command("CLIENT", "PAUSE", "60000", "WRITE")  # writes hang, reads don't
            await h.command("redis del keys=blocker")
            del_thread = await h.run_thread(index=1)
            await h.click(await h.card(del_thread), LEAD)
            await h.slack.wait_for(lambda: "Running `redis del`"
                                   in h.slack.message(CHANNEL, del_thread).text, 30)
            await h.click(flush_card, APPROVER)  # decided, but the only worker is busy
            await h.ephemeral(APPROVER, "approved")
        flush_run = RUN_ID.search(h.slack.message(CHANNEL, flush_thread).text).group(1)
        assert [r["data"]["status"] for r in audit.rows("approval.decision", flush_run)] == [
            "approved"]
        await first.kill()
        assert audit.run_state(flush_run) == "waiting" and redis.dbsize() == 1
        redis.execute_command("CLIENT", "UNPAUSE")

        second = await bot_processes.start(env)
        async with SlackClient(second.events_url) as client:
            h = ProcessHarness(second, slack_emulator, client)
            report = await h.report(flush_thread, timeout=60)
        assert "Flushed the database" in report.text and redis.dbsize() == 0
        assert len(audit.rows("sandbox.exec", flush_run)) == 1
