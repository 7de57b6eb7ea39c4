"""``opsbot db migrate``: the PostgreSQL schema, versioned, idempotent, safe from every replica.

Each migration runs once, in its own transaction, recorded in ``opsbot_schema``. The whole
upgrade holds a session advisory lock, so replicas starting together apply it once and the
others wait, then find nothing to do. The same call also installs procrastinate's schema (the
queue) and LangGraph's checkpoint tables, each only when missing.
"""

from __future__ import annotations

import asyncio

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

MIGRATE_LOCK = 0x0_95B0_7D0B  # pg_advisory_lock key held while migrating

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "runs, approvals, dedupe, audit, executions", """
create table runs (
    id text primary key, thread_id text not null, channel text not null, state text not null,
    ref jsonb not null, alert_id text, requester text, source text, checklist jsonb,
    job_id bigint, stop_reason text, created_at timestamptz not null default now(),
    updated_at timestamptz not null default now());
create index runs_channel_state on runs (channel, state);
create index runs_state on runs (state);
create index runs_thread on runs (thread_id, created_at);
create index runs_alert on runs (alert_id);
create table approvals (
    id text primary key, seq bigserial, run_id text not null, thread_id text not null,
    status text not null, version integer not null, expires_at timestamptz not null,
    body jsonb not null);
create index approvals_run on approvals (run_id, seq);
create index approvals_pending on approvals (seq) where status = 'pending';
create table dedupe (key text primary key, seen_at timestamptz not null default now());
create index dedupe_seen on dedupe (seen_at);
create table audit (
    id bigserial primary key, ts timestamptz not null default clock_timestamp(), run_id text,
    kind text not null, actor text, data jsonb not null);
create index audit_run on audit (run_id, id);
create index audit_kind on audit (kind, id);
create function audit_append_only() returns trigger language plpgsql as $$
begin raise exception 'the audit log is append-only'; end $$;
create trigger audit_no_change before update or delete on audit
    for each row execute function audit_append_only();
create trigger audit_no_truncate before truncate on audit
    for each statement execute function audit_append_only();
create table executions (
    run_id text not null, call_id text not null, action_hash text not null, worker text,
    started_at timestamptz not null default clock_timestamp(), finished_at timestamptz,
    status text, primary key (run_id, call_id));
create table tokens (
    id text primary key, digest text not null, record jsonb not null,
    created_at timestamptz not null default now());
"""),
    (2, "MCP servers' tool listings, shared with ingress processes", """
create table mcp_listings (
    server text primary key, tools jsonb not null,
    updated_at timestamptz not null default now());
"""),
    (3, "indexes for run rate limits and the channel's daily LLM spend", """
create index runs_requester_created on runs (requester, created_at);
create index runs_channel_created on runs (channel, created_at);
create index audit_kind_ts on audit (kind, ts);
"""),
    (4, "schedules: the last tick fired and the last result of each", """
create table schedules (
    name text primary key, tick timestamptz, run_id text, state text not null default '',
    result text not null default '', summary text not null default '',
    posted boolean not null default false, reported_at timestamptz);
"""),
    (5, "alert groups: the run of each firing Alertmanager group, across ingress processes", """
create table alert_groups (
    key text primary key, run_id text, firing boolean not null,
    updated_at timestamptz not null default now());
"""),
    (6, "feedback on run reports (issue 14)", """
create table feedback (
    run_id text not null, "user" text not null, rating text not null,
    comment text not null default '', at timestamptz not null default now(),
    primary key (run_id, "user"));
create index feedback_at on feedback (at);
"""),
]


async def migrate(dsn: str, queue_schema: str | None = None) -> list[int]:
    """Bring the database at ``dsn`` up to date; returns the versions applied now."""
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        await _lock(conn)
        try:
            applied = await _opsbot(conn)
            if queue_schema is not None and not await _exists(conn, "procrastinate_jobs"):
                await conn.execute(queue_schema)
            await _checkpoints(dsn)
            return applied
        finally:
            await conn.execute("select pg_advisory_unlock(%s)", [MIGRATE_LOCK])


async def _lock(conn: AsyncConnection) -> None:
    """Wait for the migration lock *between* statements: LangGraph's migrations build indexes
    CONCURRENTLY, which wait for every open transaction — a replica blocked inside
    ``pg_advisory_lock`` would be one, and the two would wait for each other forever."""
    while True:
        if await _value(conn, "select pg_try_advisory_lock(%s)", [MIGRATE_LOCK]):
            return
        await asyncio.sleep(0.1)


async def version(conn: AsyncConnection) -> int:
    if not await _exists(conn, "opsbot_schema"):
        return 0
    return int(await _value(conn, "select max(version) from opsbot_schema") or 0)


async def _opsbot(conn: AsyncConnection) -> list[int]:
    await conn.execute("create table if not exists opsbot_schema (version integer primary key, "
                       "name text not null, applied_at timestamptz not null default now())")
    current, applied = await version(conn), []
    for number, name, sql in MIGRATIONS:
        if number <= current:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("insert into opsbot_schema (version, name) values (%s, %s)",
                               [number, name])
        applied.append(number)
    return applied


async def _checkpoints(dsn: str) -> None:
    """LangGraph's tables (its own versioned migrations; ``setup`` needs autocommit)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(dsn) as saver:
        await saver.setup()


async def _exists(conn: AsyncConnection, table: str) -> bool:
    return await _value(conn, "select to_regclass(%s)", [table]) is not None


async def _value(conn: AsyncConnection, sql: str, args: list | None = None):
    """The first column of the first row, whatever row factory the connection has."""
    async with conn.cursor(row_factory=tuple_row) as cursor:
        await cursor.execute(sql, args)
        row = await cursor.fetchone()
    return row[0] if row else None
