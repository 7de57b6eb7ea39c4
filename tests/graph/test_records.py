"""The records in both storage modes: append-only redacted audit, runs, dedupe, the execute
guard, and transactions that commit everything or nothing."""

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from graph.records.base import AlertGroup
from graph.records.migrations import MIGRATIONS, migrate
from graph.records.postgres import PgRecords
from graph.surface import Checklist, RunRef, RunState, StepState
from graph.task import Source, Task
from tools.secrets import Redactor


def run(run_id="r-1", thread="1.0", alert=None) -> RunRef:
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="U1", text="redis info",
                thread_ts=thread, alert=alert)
    return RunRef(run_id=run_id, task=task, thread_ts=thread)


async def test_audit_is_append_only_and_redacted(records, tmp_path, postgres_dsn):
    redactor = Redactor()
    redactor.add("canary-s3cret-value")
    records.audit.redactor = redactor
    await records.audit.record("task", "r-1", "U1", text="flush with canary-s3cret-value", n=1)
    await records.audit.record("report", "r-1", state="done")
    await records.audit.record("task", "r-2", "U2", text="other run")
    story = await records.audit.story("r-1")
    assert [r["kind"] for r in story] == ["task", "report"]
    assert story[0]["data"] == {"n": 1, "text": "flush with [redacted]"}
    assert {r["run_id"]: r["rows"] for r in await records.audit.runs()} == {"r-1": 2, "r-2": 1}
    if records.mode == "sqlite":
        raw = sqlite3.connect(tmp_path / "opsbot.sqlite")
        for path in tmp_path.iterdir():  # the database and its WAL
            assert b"canary" not in path.read_bytes()
        for sql in ("update audit set kind = 'x'", "delete from audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                raw.execute(sql)
        return
    async with records.pool.connection() as conn:
        for sql in ("update audit set kind = 'x'", "delete from audit", "truncate audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute(sql)


async def test_runs_keep_state_checklist_and_lookups(records):
    ref = run()
    await records.runs.add(ref)
    checklist = Checklist(run_id="r-1", headline="`redis info`")
    checklist.step("c1", "Redis server info", StepState.OK, "fine")
    await records.runs.update("r-1", state=RunState.WAITING, checklist=checklist,
                              stop_reason="cancelled by <@U2>")
    row = await records.runs.row("r-1")
    assert row.state is RunState.WAITING and row.stop_reason == "cancelled by <@U2>"
    assert row.checklist.render() == checklist.render()
    assert (await records.runs.latest_in_thread(ref.thread_id))[0].run_id == "r-1"
    assert [r.run_id for r, _ in await records.runs.in_states(RunState.WAITING,
                                                              channel="C1")] == ["r-1"]
    assert await records.runs.in_states(RunState.DONE) == []
    assert await records.runs.get("r-nope") is None


async def test_dedupe_once_and_pruned(records):
    assert await records.dedupe.first_time("slack:Ev1")
    assert not await records.dedupe.first_time("slack:Ev1")
    assert await records.dedupe.prune(older_than_s=3600) == 0
    assert await records.dedupe.prune(older_than_s=-1) == 1
    assert await records.dedupe.first_time("slack:Ev1")  # forgotten after pruning


async def test_an_alert_group_gets_one_run_per_firing_episode(records):
    opened = await asyncio.gather(*(records.alert_groups.open("am:g1") for _ in range(5)))
    assert sorted(opened) == [False] * 4 + [True]  # concurrent firings: one claim wins
    await records.alert_groups.bind("am:g1", "r-1")
    assert await records.alert_groups.open("am:g1") is False  # a repeat while firing
    assert await records.alert_groups.get("am:g1") == AlertGroup("am:g1", "r-1", True)
    assert await records.alert_groups.resolve("am:g1") == AlertGroup("am:g1", "r-1", True)
    assert await records.alert_groups.resolve("am:g1") == AlertGroup("am:g1", "r-1", False)
    assert await records.alert_groups.resolve("am:other") is None
    assert await records.alert_groups.open("am:g1") is True  # fires again: a new episode
    assert await records.alert_groups.get("am:g1") == AlertGroup("am:g1", None, True)


async def test_execute_guard_claims_once(records):
    claims = await asyncio.gather(*(records.executions.claim("r-1", "c1", "h", f"w{i}")
                                    for i in range(5)))
    assert sorted(claims) == [False] * 4 + [True]
    assert await records.executions.finished_calls("r-1") == set()
    await records.executions.finish("r-1", "c1", "ok")
    assert await records.executions.finished_calls("r-1") == {"c1"}
    assert await records.executions.count() == 1


async def test_a_failed_transaction_leaves_nothing(records):
    committed = []
    with pytest.raises(RuntimeError):
        async with records.transaction() as tx:
            await tx.runs.add(run())
            await tx.audit.record("task", "r-1", "U1")
            await tx.dedupe.first_time("slack:Ev9")
            tx.after_commit(lambda: committed.append(1))
            raise RuntimeError("the job could not be deferred")
    assert await records.runs.get("r-1") is None and await records.audit.story("r-1") == []
    assert await records.dedupe.first_time("slack:Ev9") and committed == []
    async with records.transaction() as tx:
        await tx.runs.add(run())
        tx.after_commit(lambda: committed.append(1))
    assert await records.runs.get("r-1") is not None and committed == [1]


async def test_migrate_is_idempotent_from_many_replicas_at_once(postgres_database):
    applied = await asyncio.gather(*(migrate(postgres_database) for _ in range(4)))
    assert sorted(applied, key=len) == [[], [], [], [m[0] for m in MIGRATIONS]]
    records = await PgRecords.open(postgres_database)
    assert await records.ping() == "ok"
    await records.close()


async def test_ping_names_a_missing_schema(postgres_database):
    records = await PgRecords.open(postgres_database)
    assert "opsbot db migrate" in await records.ping()
    await records.close()


def started(run_id: str, user: str, channel: str) -> RunRef:
    task = Task(source=Source.SLASH, team="T1", channel=channel, user=user, text="redis info")
    return RunRef(run_id=run_id, task=task)


async def test_runs_are_counted_by_requester_and_channel_since_a_time(records):
    before = datetime.now(UTC) - timedelta(seconds=1)
    for run_id, user, channel in (("r-1", "U1", "C1"), ("r-2", "U1", "C1"), ("r-3", "U2", "C1"),
                                  ("r-4", "U1", "C2")):
        await records.runs.add(started(run_id, user, channel))
    await records.runs.set_state("r-1", RunState.DONE)  # ended runs count too
    count = records.runs.count_started
    assert await count(before, requester="U1") == 3
    assert await count(before, channel="C1") == 3
    assert await count(before, requester="U1", channel="C2") == 1
    assert await count(before) == 4
    assert await count(datetime.now(UTC) + timedelta(seconds=1), requester="U1") == 0
    async with records.transaction() as tx:  # the locking form, inside a transaction
        assert await tx.runs.count_started(before, requester="U2", lock=True) == 1


async def test_llm_spend_is_summed_per_channel_since_a_time(records):
    before = datetime.now(UTC) - timedelta(seconds=1)
    await records.runs.add(started("r-1", "U1", "C1"))
    await records.runs.add(started("r-2", "U2", "C2"))
    for run_id, tokens in (("r-1", (100, 20)), ("r-1", (300, 30)), ("r-2", (1000, 1))):
        await records.audit.record("llm.call", run_id, model="gpt-4o-mini",
                                   input_tokens=tokens[0], output_tokens=tokens[1],
                                   total_tokens=sum(tokens), cost_usd=0.0001)
    await records.audit.record("llm.run", "r-1", total_tokens=450)  # totals are not calls
    assert await records.audit.llm_spend("C1", before) == {
        "input_tokens": 400, "output_tokens": 50, "total_tokens": 450, "calls": 2}
    nothing = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "calls": 0}
    assert await records.audit.llm_spend("C9", before) == nothing
    assert await records.audit.llm_spend("C1", datetime.now(UTC) + timedelta(seconds=1)) == nothing


async def test_a_transaction_whose_process_goes_silent_releases_its_locks(postgres_database):
    """A worker frozen inside a transaction (SIGSTOP, a partition) must not hold a run's row
    for ever: the server ends the transaction after ``tx_idle_timeout_s`` and the next one
    locks the row. Without the per-transaction timeout the second lock waits out its own
    ``lock_timeout`` and raises."""
    await migrate(postgres_database)
    records = await PgRecords.open(postgres_database, tx_idle_timeout_s=0.5)
    try:
        await records.runs.add(run())
        frozen = asyncio.Event()

        async def freezes() -> None:
            async with records.transaction() as tx:
                await tx.runs.row("r-1", lock=True)
                frozen.set()
                await asyncio.sleep(3)  # silent, as a stopped process would be
                await tx.runs.update("r-1", state=RunState.DONE)

        holder = asyncio.create_task(freezes())
        await frozen.wait()
        async with records.transaction() as tx:
            await tx.connection.execute("set local lock_timeout = '2s'")
            assert (await tx.runs.row("r-1", lock=True)).state == RunState.QUEUED
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            await holder  # its connection was ended by the server: its write never happened
        assert (await records.runs.row("r-1")).state == RunState.QUEUED
    finally:
        await records.close()
