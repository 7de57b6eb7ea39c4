"""Scale-out mode: every record in PostgreSQL, shared by any number of opsbot processes.

psycopg 3 over a psycopg-pool (autocommit connections; a transaction borrows one connection
for its whole body). Reads that decide something inside a transaction lock their rows
(``FOR UPDATE``), so an approval click and a cancel of the same run serialise on the
approval rows and exactly one of them wins.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from contextlib import asynccontextmanager, suppress
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from approvals.models import ApprovalRequest
from approvals.store import ApprovalRows, ApprovalStore
from graph.records.base import (
    DEDUPE_WINDOW_S,
    AlertGroup,
    AlertGroups,
    SPEND,
    spend_sql,
    AuditLog,
    Dedupe,
    Executions,
    FeedbackRow,
    FeedbackStore,
    Listings,
    Records,
    RunFilter,
    RunListing,
    RunRow,
    RunStore,
    ScheduleRow,
    ScheduleRows,
    TokenRows,
    Tx,
)
from graph.records.migrations import version, MIGRATIONS
from graph.surface import Checklist, RunRef, RunState

FRESH_S = 5.0  # a pooled connection returned this recently is lent without a check


def pool_for(dsn: str, max_size: int = 10, name: str = "opsbot",
             tx_idle_timeout_s: float | None = None,
             fresh_s: float = FRESH_S) -> AsyncConnectionPool:
    """An unopened pool of autocommit connections returning dict rows.

    ``prepare_threshold=None`` keeps it usable behind pgbouncer/Supavisor in transaction mode;
    ``check`` drops connections a proxy or a cloud idle timeout closed behind our back (those
    back in the pool for less than ``fresh_s`` are lent without the check's round trip);
    ``tx_idle_timeout_s`` has the server end a transaction left silent that long (for pools
    whose transactions a library opens, e.g. the checkpointer's).
    """
    async def configure(conn: AsyncConnection) -> None:
        await conn.execute("select set_config('idle_in_transaction_session_timeout', %s, false)",
                           [str(round((tx_idle_timeout_s or 0) * 1000))])

    recent = RecentlyUsed(fresh_s)
    return AsyncConnectionPool(
        dsn, min_size=1, max_size=max_size, open=False, name=name, max_idle=300,
        max_lifetime=1800, check=recent.check, reset=recent.reset,
        configure=configure if tx_idle_timeout_s else None,
        kwargs={"autocommit": True, "prepare_threshold": None, "row_factory": dict_row})


class RecentlyUsed:
    """The pool's check, skipped for a connection returned moments ago. The check is a round
    trip on every borrow (profiled: nearly as much of a worker's database time as its
    queries); what it guards against — a proxy's or a cloud's idle timeout, a restarted server —
    closes connections that sat idle, and one used ``fresh_s`` ago did not."""

    def __init__(self, fresh_s: float):
        self.fresh_s = fresh_s
        self.back: weakref.WeakKeyDictionary[AsyncConnection, float] = weakref.WeakKeyDictionary()

    async def reset(self, conn: AsyncConnection) -> None:
        self.back[conn] = time.monotonic()

    async def check(self, conn: AsyncConnection) -> None:
        back = self.back.pop(conn, None)
        if back is None or time.monotonic() - back >= self.fresh_s:
            await AsyncConnectionPool.check_connection(conn)


class _Conn:
    """Where a store's statements go: the pool, or the one connection of a transaction."""

    def __init__(self, pool: AsyncConnectionPool, conn: AsyncConnection | None = None):
        self.pool, self.fixed = pool, conn

    @asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        if self.fixed is not None:
            yield self.fixed
            return
        async with self.pool.connection() as conn:
            yield conn

    async def run(self, sql: str, args: Any = None) -> int:
        async with self.use() as conn:
            cursor = await conn.execute(sql, args)
            return cursor.rowcount

    async def all(self, sql: str, args: Any = None) -> list[dict[str, Any]]:
        async with self.use() as conn:
            cursor = await conn.execute(sql, args)
            return await cursor.fetchall()


class PgRuns(RunStore):
    def __init__(self, db: _Conn):
        self.db = db

    async def add(self, run: RunRef, state: RunState = RunState.QUEUED) -> None:
        await self.db.run(
            "insert into runs (id, thread_id, channel, state, ref, alert_id, requester, source)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s)",
            [run.run_id, run.thread_id, run.task.channel, state.value,
             Jsonb(run.model_dump(mode="json")), run.task.alert.id if run.task.alert else None,
             run.task.user, run.task.source.value])

    async def row(self, run_id: str, lock: bool = False) -> RunRow | None:
        rows = await self.db.all("select * from runs where id = %s" + _lock(lock), [run_id])
        return _run_row(rows[0]) if rows else None

    async def update(self, run_id: str, *, run: RunRef | None = None,
                     state: RunState | None = None, checklist: Checklist | None = None,
                     stop_reason: str | None = None) -> None:
        fields: dict[str, Any] = {}
        if run is not None:
            fields.update(ref=Jsonb(run.model_dump(mode="json")), thread_id=run.thread_id)
        if state is not None:
            fields["state"] = state.value
        if checklist is not None:
            fields["checklist"] = Jsonb(checklist.dump())
        if stop_reason is not None:
            fields["stop_reason"] = stop_reason
        sets = ", ".join([*(f"{k} = %s" for k in fields), "updated_at = now()"])
        await self.db.run(f"update runs set {sets} where id = %s", [*fields.values(), run_id])

    async def in_states(self, *states: RunState, channel: str | None = None,
                        thread_id: str | None = None) -> list[tuple[RunRef, RunState]]:
        sql, args = "select ref, state from runs where state = any(%s)", [[s.value for s in states]]
        for column, value in (("channel", channel), ("thread_id", thread_id)):
            if value:
                sql += f" and {column} = %s"
                args.append(value)
        rows = await self.db.all(sql + " order by created_at", args)
        return [(RunRef.model_validate(r["ref"]), RunState(r["state"])) for r in rows]

    async def latest_in_thread(self, thread_id: str) -> tuple[RunRef, RunState] | None:
        return await self._first("select ref, state from runs where thread_id = %s "
                                 "order by created_at desc limit 1", thread_id)

    async def for_alert(self, alert_id: str) -> tuple[RunRef, RunState] | None:
        return await self._first("select ref, state from runs where alert_id = %s "
                                 "order by created_at limit 1", alert_id)

    async def _first(self, sql: str, arg: str) -> tuple[RunRef, RunState] | None:
        rows = await self.db.all(sql, [arg])
        return (RunRef.model_validate(rows[0]["ref"]), RunState(rows[0]["state"])) if rows else None

    async def listing(self, where: RunFilter = RunFilter()) -> list[RunListing]:
        sql, args = "select ref, state, created_at, updated_at from runs where true", []
        for column, value in where.conditions():
            sql += f" and {column} %s"
            args.append(value)
        rows = await self.db.all(sql + " order by created_at desc limit %s", [*args, where.limit])
        return [RunListing(RunRef.model_validate(r["ref"]), RunState(r["state"]),
                           r["created_at"], r["updated_at"]) for r in rows]

    async def count_started(self, since: datetime, *, requester: str | None = None,
                            channel: str | None = None, lock: bool = False) -> int:
        sql, args = "select count(*) as n from runs where created_at >= %s", [since]
        for column, value in (("requester", requester), ("channel", channel)):
            if value is None:
                continue
            if lock:  # a transaction lock per requester/channel, always in this order
                await self.db.run("select pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                  [f"runs:{column}:{value}"])
            sql += f" and {column} = %s"
            args.append(value)
        return (await self.db.all(sql, args))[0]["n"]


class PgApprovalRows(ApprovalRows):
    def __init__(self, db: _Conn):
        self.db = db

    async def insert(self, request: ApprovalRequest) -> None:
        await self.db.run(
            "insert into approvals (id, run_id, thread_id, status, version, expires_at, body) "
            "values (%s, %s, %s, %s, %s, %s, %s) on conflict (id) do nothing",
            [request.id, request.run_id, request.thread_id, request.status.value,
             request.version, request.expires_at, Jsonb(request.model_dump(mode="json"))])

    async def get(self, approval_id: str, lock: bool = False) -> ApprovalRequest | None:
        rows = await self.db.all("select body from approvals where id = %s" + _lock(lock),
                                 [approval_id])
        return ApprovalRequest.model_validate(rows[0]["body"]) if rows else None

    async def for_run(self, run_id: str, lock: bool = False) -> list[ApprovalRequest]:
        rows = await self.db.all("select body from approvals where run_id = %s order by seq"
                                 + _lock(lock), [run_id])
        return [ApprovalRequest.model_validate(r["body"]) for r in rows]

    async def pending(self) -> list[ApprovalRequest]:
        rows = await self.db.all("select body from approvals where status = 'pending' "
                                 "order by seq")
        return [ApprovalRequest.model_validate(r["body"]) for r in rows]

    async def cas(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        new = new.model_copy(update={"version": old.version + 1})
        return await self.db.run(
            "update approvals set status = %s, version = %s, body = %s "
            "where id = %s and version = %s",
            [new.status.value, new.version, Jsonb(new.model_dump(mode="json")), old.id,
             old.version]) == 1


class PgAudit(AuditLog):
    def __init__(self, db: _Conn):
        self.db = db

    async def _insert(self, kind: str, run_id: str | None, actor: str | None, body: str) -> None:
        await self.db.run("insert into audit (run_id, kind, actor, data) values (%s, %s, %s, %s::jsonb)",
                          [run_id, kind, actor, body])

    async def story(self, run_id: str) -> list[dict[str, Any]]:
        return [_audit_row(r) for r in await self.db.all(
            "select * from audit where run_id = %s order by id", [run_id])]

    async def rows(self, kinds: tuple[str, ...] = (), run_id: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
        sql, args = "select * from audit where true", []
        if kinds:
            sql += " and kind = any(%s)"
            args.append(list(kinds))
        if run_id is not None:
            sql += " and run_id = %s"
            args.append(run_id)
        rows = await self.db.all(sql + " order by id desc limit %s", [*args, limit])
        return [_audit_row(r) for r in rows]

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.db.all(
            "select run_id, min(ts) as started, max(ts) as last, count(*) as rows from audit "
            "where run_id is not null group by run_id order by started desc limit %s", [limit])
        return [{**r, "started": r["started"].isoformat(), "last": r["last"].isoformat()}
                for r in rows]

    async def llm_spend(self, channel: str, since: datetime) -> dict[str, int]:
        sql = spend_sql(lambda key: f"(a.data->>'{key}')::bigint", "%s")
        rows = await self.db.all(sql, [since, channel])
        return {k: int(rows[0][k]) for k in SPEND}

    async def open_leases(self, since: datetime) -> list[dict[str, Any]]:
        rows = await self.db.all(
            "select l.run_id, l.data from audit l where l.kind = 'credential.lease' "
            "and l.ts >= %s and not exists (select 1 from audit r "
            "where r.kind = 'credential.revoke' and r.data->>'lease' = l.data->>'lease' "
            "and r.data->>'revoked_at' is not null) order by l.id", [since])
        return [{"run_id": r["run_id"], "call_id": r["data"].get("call_id"), "data": r["data"]}
                for r in rows]


class PgDedupe(Dedupe):
    def __init__(self, db: _Conn):
        self.db = db

    async def first_time(self, key: str) -> bool:
        return await self.db.run("insert into dedupe (key) values (%s) on conflict do nothing",
                                 [key]) == 1

    async def prune(self, older_than_s: float = DEDUPE_WINDOW_S) -> int:
        return await self.db.run("delete from dedupe where seen_at < now() - make_interval("
                                 "secs => %s)", [older_than_s])


class PgExecutions(Executions):
    def __init__(self, db: _Conn):
        self.db = db

    async def claim(self, run_id: str, call_id: str, action_hash: str, worker: str) -> bool:
        return await self.db.run(
            "insert into executions (run_id, call_id, action_hash, worker) "
            "values (%s, %s, %s, %s) on conflict do nothing",
            [run_id, call_id, action_hash, worker]) == 1

    async def finish(self, run_id: str, call_id: str, status: str) -> None:
        await self.db.run("update executions set finished_at = clock_timestamp(), status = %s "
                          "where run_id = %s and call_id = %s", [status, run_id, call_id])

    async def finished_calls(self, run_id: str) -> set[str]:
        rows = await self.db.all("select call_id from executions where run_id = %s "
                                 "and finished_at is not null", [run_id])
        return {r["call_id"] for r in rows}

    async def count(self, run_id: str | None = None) -> int:
        sql, args = "select count(*) as n from executions", []
        if run_id is not None:
            sql, args = sql + " where run_id = %s", [run_id]
        return (await self.db.all(sql, args))[0]["n"]


class PgTokens(TokenRows):
    def __init__(self, db: _Conn):
        self.db = db

    async def add(self, token_id: str, digest: str, record: str) -> None:
        await self.db.run("insert into tokens (id, digest, record) values (%s, %s, %s::jsonb)",
                          [token_id, digest, record])

    async def get(self, token_id: str) -> tuple[str, str] | None:
        rows = await self.db.all("select record::text as record, digest from tokens "
                                 "where id = %s", [token_id])
        return (rows[0]["record"], rows[0]["digest"]) if rows else None

    async def all(self) -> list[str]:
        return [r["record"] for r in await self.db.all(
            "select record::text as record from tokens order by created_at, id")]

    async def update(self, token_id: str, record: str) -> None:
        await self.db.run("update tokens set record = %s::jsonb where id = %s",
                          [record, token_id])


class PgListings(Listings):
    def __init__(self, db: _Conn):
        self.db = db

    async def save(self, server: str, tools: list[dict[str, Any]]) -> None:
        await self.db.run("insert into mcp_listings (server, tools) values (%s, %s) on conflict "
                          "(server) do update set tools = excluded.tools, updated_at = now()",
                          [server, Jsonb(tools)])

    async def all(self) -> dict[str, list[dict[str, Any]]]:
        return {r["server"]: r["tools"] for r in await self.db.all(
            "select server, tools from mcp_listings")}


class PgSchedules(ScheduleRows):
    def __init__(self, db: _Conn):
        self.db = db

    async def get(self, name: str, lock: bool = False) -> ScheduleRow | None:
        rows = await self.db.all("select * from schedules where name = %s" + _lock(lock), [name])
        return ScheduleRow(**rows[0]) if rows else None

    async def all(self) -> list[ScheduleRow]:
        return [ScheduleRow(**r) for r in await self.db.all("select * from schedules order by name")]

    async def fired(self, name: str, tick: datetime, run_id: str | None) -> None:
        await self.db.run(
            "insert into schedules (name, tick, run_id) values (%s, %s, %s) on conflict (name) "
            "do update set tick = greatest(schedules.tick, excluded.tick), "
            "run_id = coalesce(excluded.run_id, schedules.run_id)", [name, tick, run_id])

    async def reported(self, name: str, state: str, result: str, summary: str,
                       posted: bool) -> None:
        await self.db.run(
            "insert into schedules (name, state, result, summary, posted, reported_at) "
            "values (%s, %s, %s, %s, %s, now()) on conflict (name) do update set "
            "state = excluded.state, result = excluded.result, summary = excluded.summary, "
            "posted = excluded.posted, reported_at = excluded.reported_at",
            [name, state, result, summary, posted])


class PgAlertGroups(AlertGroups):
    def __init__(self, db: _Conn):
        self.db = db

    async def open(self, key: str) -> bool:
        return await self.db.run(
            "insert into alert_groups (key, run_id, firing) values (%s, null, true) "
            "on conflict (key) do update set run_id = null, firing = true, updated_at = now() "
            "where alert_groups.firing = false", [key]) == 1

    async def bind(self, key: str, run_id: str) -> None:
        await self.db.run("update alert_groups set run_id = %s, updated_at = now() "
                          "where key = %s", [run_id, key])

    async def get(self, key: str) -> AlertGroup | None:
        rows = await self.db.all("select key, run_id, firing from alert_groups where key = %s",
                                 [key])
        return AlertGroup(rows[0]["key"], rows[0]["run_id"], rows[0]["firing"]) if rows else None

    async def resolve(self, key: str) -> AlertGroup | None:
        rows = await self.db.all(  # the old row, read and updated in one statement
            "update alert_groups g set firing = false, updated_at = now() from (select key, "
            "run_id, firing from alert_groups where key = %s for update) old where g.key = "
            "old.key returning old.key, old.run_id, old.firing", [key])
        return AlertGroup(rows[0]["key"], rows[0]["run_id"], rows[0]["firing"]) if rows else None


class PgFeedback(FeedbackStore):
    def __init__(self, db: _Conn):
        self.db = db

    async def rate(self, run_id: str, user: str, rating: str) -> None:
        await self.db.run(
            'insert into feedback (run_id, "user", rating) values (%s, %s, %s) on conflict '
            '(run_id, "user") do update set rating = excluded.rating, at = now()',
            [run_id, user, rating])

    async def comment(self, run_id: str, user: str, comment: str) -> str | None:
        rows = await self.db.all(
            'update feedback set comment = %s where run_id = %s and "user" = %s '
            "returning rating", [comment, run_id, user])
        return rows[0]["rating"] if rows else None

    async def since(self, since: datetime | None = None) -> list[FeedbackRow]:
        rows = await self.db.all(
            'select run_id, "user", rating, comment, at from feedback where at >= %s '
            "order by at", [since or datetime.min.replace(tzinfo=UTC)])
        return [FeedbackRow(r["run_id"], r["user"], r["rating"], r["comment"], r["at"])
                for r in rows]


class PgRecords(Records):
    mode = "postgres"

    def __init__(self, pool: AsyncConnectionPool, tx_idle_timeout_s: float = 30):
        self.pool = pool
        self.tx_idle_ms = int(round(tx_idle_timeout_s * 1000))
        _bind(self, _Conn(pool))

    @classmethod
    async def open(cls, dsn: str, max_size: int = 10, tx_idle_timeout_s: float = 30) -> PgRecords:
        pool = pool_for(dsn, max_size=max_size, name="opsbot-records")
        await pool.open()
        return cls(pool, tx_idle_timeout_s)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction on one connection. The server ends it if this process stops between
        two of its statements for longer than ``tx_idle_timeout_s`` (a frozen or partitioned
        worker must not hold its row locks, and so its runs, for ever); set per transaction so
        it also holds behind a pooler in transaction mode."""
        async with self.pool.connection() as conn:
            tx = _PgTx(self.pool, conn)
            # one round trip opens it and bounds its silences (SET LOCAL lasts until it ends)
            await conn.execute(f"begin; set local idle_in_transaction_session_timeout = "
                               f"{self.tx_idle_ms}")
            try:
                yield tx
            except BaseException:
                with suppress(psycopg.Error):  # a broken connection: the pool drops it
                    await conn.execute("rollback")
                raise
            await conn.execute("commit")
        for callback in tx.callbacks:
            callback()

    async def ping(self) -> str:
        try:
            async with self.pool.connection(timeout=5) as conn:
                have = await version(conn)
        except (psycopg.Error, TimeoutError) as e:
            return f"PostgreSQL (OPSBOT_DATABASE_URL) does not answer: {type(e).__name__}"
        if have < MIGRATIONS[-1][0]:
            return f"the database schema is at version {have}; run `opsbot db migrate`"
        return "ok"

    async def close(self) -> None:
        await self.pool.close()


class _PgTx(Tx):
    mode = "postgres"

    def __init__(self, pool: AsyncConnectionPool, conn: AsyncConnection):
        _bind(self, _Conn(pool, conn))
        self.connection = conn
        self.callbacks: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def transaction(self):  # noqa: D401 - part of the interface
        raise RuntimeError("transactions do not nest")

    async def ping(self) -> str:
        return "ok"

    async def close(self) -> None:
        return None


def _bind(records: Records, db: _Conn) -> None:
    records.runs = PgRuns(db)
    records.approvals = ApprovalStore(PgApprovalRows(db))
    records.audit = PgAudit(db)
    records.dedupe = PgDedupe(db)
    records.executions = PgExecutions(db)
    records.tokens = PgTokens(db)
    records.listings = PgListings(db)
    records.schedules = PgSchedules(db)
    records.alert_groups = PgAlertGroups(db)
    records.feedback = PgFeedback(db)


def _lock(lock: bool) -> str:
    return " for update" if lock else ""


def _run_row(row: dict[str, Any]) -> RunRow:
    checklist = Checklist.load(row["checklist"]) if row["checklist"] else None
    return RunRow(run=RunRef.model_validate(row["ref"]), state=RunState(row["state"]),
                  checklist=checklist, stop_reason=row["stop_reason"] or "")


def _audit_row(row: dict[str, Any]) -> dict[str, Any]:
    data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
    return {**row, "ts": row["ts"].isoformat(), "data": data}
