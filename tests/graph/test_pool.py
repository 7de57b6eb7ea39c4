"""The PostgreSQL pools' connection check (graph/records/postgres.py ``pool_for``) on a real
server: a connection that sat idle is checked before it is lent (a server, proxy or cloud
timeout may have closed it); one returned moments ago is lent without the round trip."""

from __future__ import annotations

import psycopg
import pytest

from graph.records.postgres import pool_for


def terminate_others(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as admin:
        return len(admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()").fetchall())


async def backend(pool) -> int:
    async with pool.connection() as conn:
        return (await (await conn.execute("select pg_backend_pid() as pid")).fetchone())["pid"]


async def test_a_connection_closed_while_idle_is_replaced_before_it_is_lent(postgres_database):
    pool = pool_for(postgres_database, max_size=2, fresh_s=0)  # every borrow is checked
    await pool.open(wait=True)
    try:
        first = await backend(pool)
        assert terminate_others(postgres_database) == 1
        assert await backend(pool) != first  # the check found it closed and made another
    finally:
        await pool.close()


async def test_a_connection_returned_moments_ago_is_lent_unchecked(postgres_database):
    """The other side of the trade: no check, so a connection killed within ``fresh_s`` of its
    return fails its next statement (and the pool then drops it)."""
    pool = pool_for(postgres_database, max_size=2, fresh_s=3600)
    await pool.open(wait=True)
    try:
        await backend(pool)
        assert terminate_others(postgres_database) == 1
        with pytest.raises(psycopg.OperationalError):
            await backend(pool)
        assert await backend(pool) > 0
    finally:
        await pool.close()


async def test_only_the_queue_s_bookkeeping_commits_without_waiting_for_the_disk(postgres_database):
    """Taking, finishing and heartbeating jobs may lose a commit in a crash (the job is retried
    and the drive is fenced); the records — and the jobs deferred in their transactions — may
    not."""
    from graph.pgqueue import PgQueue
    from graph.records.postgres import PgRecords

    with psycopg.connect(postgres_database, autocommit=True) as admin:
        name = admin.execute("select current_database()").fetchone()[0]
        admin.execute(f'alter database "{name}" set synchronous_commit = on')  # as deployed
    queue, records = PgQueue(postgres_database), await PgRecords.open(postgres_database)
    await queue.open()
    try:
        row = await queue.app.connector.execute_query_one_async(query="show synchronous_commit")
        assert row["synchronous_commit"] == "off"
        async with records.transaction() as tx:
            shown = await (await tx.connection.execute("show synchronous_commit")).fetchone()
        assert shown["synchronous_commit"] == "on"
    finally:
        await queue.close()
        await records.close()
