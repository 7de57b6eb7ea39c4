"""The scale-out lease (graph/lease.py ``PgLease``) on a real PostgreSQL: one holder per thread
across sessions, pooled sessions that never go back to the pool holding a lock."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from graph.lease import LeaseBusy, PgLease


def taken_elsewhere(dsn: str, thread_id: str) -> bool:
    """Whether another session (another process, as far as PostgreSQL can tell) finds the
    thread's lease held."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        free = conn.execute("select pg_try_advisory_lock(hashtextextended(%s, 0))",
                            [thread_id]).fetchone()[0]
        if free:
            conn.execute("select pg_advisory_unlock(hashtextextended(%s, 0))", [thread_id])
        return not free


@pytest.fixture
async def lease(postgres_database):
    lease = PgLease(postgres_database, slots=2)
    await lease.open()
    yield lease
    await lease.close()


async def test_a_thread_has_one_holder_and_others_are_free(lease, postgres_database):
    async with lease.hold("T1:C1:1.1"):
        assert taken_elsewhere(postgres_database, "T1:C1:1.1")
        with pytest.raises(LeaseBusy):
            async with lease.hold("T1:C1:1.1"):
                pytest.fail("a second holder of one thread ran")
        async with lease.hold("T1:C1:2.2"):  # another thread is not held up
            assert taken_elsewhere(postgres_database, "T1:C1:2.2")
    assert not taken_elsewhere(postgres_database, "T1:C1:1.1")
    assert not taken_elsewhere(postgres_database, "T1:C1:2.2")


async def test_sessions_are_reused_not_opened_per_drive(lease, postgres_database):
    pids = set()
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        for _ in range(10):
            async with lease.hold("T1:C1:1.1"):
                pids |= {pid for pid, in admin.execute(
                    "select pid from pg_locks where locktype = 'advisory' and granted")}
    assert len(pids) == 1
    assert lease.pool.get_stats()["connections_num"] == 1


async def test_a_cancelled_drive_releases_its_thread(lease, postgres_database):
    held = asyncio.Event()

    async def drive() -> None:
        async with lease.hold("T1:C1:1.1"):
            held.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(drive())
    await held.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not taken_elsewhere(postgres_database, "T1:C1:1.1")
    async with lease.hold("T1:C1:1.1"):
        pass


async def test_a_session_lost_while_held_is_dropped_and_the_next_drive_gets_a_sound_one(
        lease, postgres_database):
    with pytest.raises(psycopg.OperationalError):
        async with lease.hold("T1:C1:1.1"):
            with psycopg.connect(postgres_database, autocommit=True) as admin:
                admin.execute("select pg_terminate_backend(pid) from pg_locks "
                              "where locktype = 'advisory' and granted")
    assert not taken_elsewhere(postgres_database, "T1:C1:1.1")
    async with lease.hold("T1:C1:1.1"):
        assert taken_elsewhere(postgres_database, "T1:C1:1.1")
