"""Embedded mode: every record in one SQLite file (``OPSBOT_DATA_DIR/opsbot.sqlite``).

One connection, in autocommit mode; a transaction is ``BEGIN IMMEDIATE … COMMIT`` and holds an
asyncio lock, so statements of other coroutines wait instead of joining it. Statements run
inline (microseconds); nothing here suspends inside a transaction except for that lock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from graph.surface import Checklist, RunRef, RunState

SCHEMA = """
create table if not exists runs (
    id text primary key, thread_id text not null, channel text not null, state text not null,
    ref text not null, alert_id text, requester text, source text, checklist text,
    job_id integer, stop_reason text, created_at text not null, updated_at text not null);
create index if not exists runs_channel_state on runs (channel, state);
create index if not exists runs_thread on runs (thread_id);
create index if not exists runs_alert on runs (alert_id);
create index if not exists runs_requester_created on runs (requester, created_at);
create index if not exists runs_channel_created on runs (channel, created_at);
create table if not exists approvals (
    id text primary key, run_id text not null, thread_id text not null, status text not null,
    version integer not null, expires_at text not null, body text not null);
create index if not exists approvals_run on approvals (run_id);
create index if not exists approvals_status on approvals (status);
create table if not exists dedupe (key text primary key, seen_at real);
create table if not exists audit (
    id integer primary key autoincrement, ts text not null, run_id text, kind text not null,
    actor text, data text not null);
create index if not exists audit_run on audit (run_id);
create index if not exists audit_kind on audit (kind);
create index if not exists audit_kind_ts on audit (kind, ts);
create trigger if not exists audit_no_update before update on audit
    begin select raise(abort, 'the audit log is append-only'); end;
create trigger if not exists audit_no_delete before delete on audit
    begin select raise(abort, 'the audit log is append-only'); end;
create table if not exists mcp_listings (server text primary key, tools text not null,
    updated_at text not null);
create table if not exists tokens (id text primary key, digest text not null, record text not null);
create table if not exists executions (
    run_id text not null, call_id text not null, action_hash text not null, worker text,
    started_at text not null, finished_at text, status text, primary key (run_id, call_id));
create table if not exists schedules (
    name text primary key, tick text, run_id text, state text not null default '',
    result text not null default '', summary text not null default '',
    posted integer not null default 0, reported_at text);
create table if not exists alert_groups (
    key text primary key, run_id text, firing integer not null, updated_at text not null);
create table if not exists feedback (
    run_id text not null, user text not null, rating text not null,
    comment text not null default '', at text not null, primary key (run_id, user));
create index if not exists feedback_at on feedback (at);
"""
# Columns added after the first release: an existing data file gains them on open.
ADDED_COLUMNS = {"runs": {"requester": "text", "source": "text", "checklist": "text",
                          "job_id": "integer", "stop_reason": "text"}}


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=normal")
    conn.execute("pragma busy_timeout=10000")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    for table, columns in ADDED_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"pragma table_info({table})")}
        for name, kind in columns.items():
            if name not in have:
                conn.execute(f"alter table {table} add column {name} {kind}")


class _Db:
    """The connection plus the lock a transaction holds; ``run`` executes one statement."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.lock = asyncio.Lock()
        self.owner: ContextVar[bool] = ContextVar(f"sqlite-tx-{id(self)}", default=False)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for any open transaction of another coroutine (no-op inside our own)."""
        if self.owner.get():
            yield
            return
        async with self.lock:
            yield

    async def run(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        async with self.turn():
            return self.conn.execute(sql, args)

    async def all(self, sql: str, args: Any = ()) -> list[sqlite3.Row]:
        async with self.turn():
            return self.conn.execute(sql, args).fetchall()


class SqliteRuns(RunStore):
    def __init__(self, db: _Db):
        self.db = db

    async def add(self, run: RunRef, state: RunState = RunState.QUEUED) -> None:
        now = _now()
        await self.db.run(
            "insert into runs (id, thread_id, channel, state, ref, alert_id, requester, source,"
            " created_at, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run.run_id, run.thread_id, run.task.channel, state.value, run.model_dump_json(),
             run.task.alert.id if run.task.alert else None, run.task.user,
             run.task.source.value, now, now])

    async def row(self, run_id: str, lock: bool = False) -> RunRow | None:
        rows = await self.db.all("select * from runs where id = ?", [run_id])
        return _run_row(rows[0]) if rows else None

    async def update(self, run_id: str, *, run: RunRef | None = None,
                     state: RunState | None = None, checklist: Checklist | None = None,
                     stop_reason: str | None = None) -> None:
        fields = _run_fields(run, state, checklist, stop_reason)
        sets = ", ".join(f"{k} = ?" for k in fields)
        await self.db.run(f"update runs set {sets} where id = ?", [*fields.values(), run_id])

    async def in_states(self, *states: RunState, channel: str | None = None,
                        thread_id: str | None = None) -> list[tuple[RunRef, RunState]]:
        sql = f"select ref, state from runs where state in ({','.join('?' for _ in states)})"
        args: list[Any] = [s.value for s in states]
        for column, value in (("channel", channel), ("thread_id", thread_id)):
            if value:
                sql += f" and {column} = ?"
                args.append(value)
        rows = await self.db.all(sql + " order by created_at", args)
        return [(RunRef.model_validate_json(r["ref"]), RunState(r["state"])) for r in rows]

    async def latest_in_thread(self, thread_id: str) -> tuple[RunRef, RunState] | None:
        return await self._first("select ref, state from runs where thread_id = ? "
                                 "order by created_at desc limit 1", thread_id)

    async def for_alert(self, alert_id: str) -> tuple[RunRef, RunState] | None:
        return await self._first("select ref, state from runs where alert_id = ? "
                                 "order by created_at limit 1", alert_id)

    async def _first(self, sql: str, arg: str) -> tuple[RunRef, RunState] | None:
        rows = await self.db.all(sql, [arg])
        return (RunRef.model_validate_json(rows[0]["ref"]), RunState(rows[0]["state"])) if rows else None

    async def listing(self, where: RunFilter = RunFilter()) -> list[RunListing]:
        sql, args = "select ref, state, created_at, updated_at from runs where 1 = 1", []
        for column, value in where.conditions():
            sql += f" and {column} ?"
            args.append(_stamp(value) if isinstance(value, datetime) else value)
        rows = await self.db.all(sql + " order by created_at desc limit ?", [*args, where.limit])
        return [RunListing(RunRef.model_validate_json(r["ref"]), RunState(r["state"]),
                           datetime.fromisoformat(r["created_at"]),
                           datetime.fromisoformat(r["updated_at"])) for r in rows]

    async def count_started(self, since: datetime, *, requester: str | None = None,
                            channel: str | None = None, lock: bool = False) -> int:
        sql, args = "select count(*) from runs where created_at >= ?", [_stamp(since)]
        for column, value in (("requester", requester), ("channel", channel)):
            if value is not None:
                sql += f" and {column} = ?"
                args.append(value)
        return (await self.db.all(sql, args))[0][0]  # a transaction here is already exclusive


class SqliteApprovalRows(ApprovalRows):
    def __init__(self, db: _Db):
        self.db = db

    async def insert(self, request: ApprovalRequest) -> None:
        await self.db.run(
            "insert or ignore into approvals (id, run_id, thread_id, status, version, expires_at,"
            " body) values (?, ?, ?, ?, ?, ?, ?)", _approval_row(request))

    async def get(self, approval_id: str, lock: bool = False) -> ApprovalRequest | None:
        rows = await self.db.all("select body from approvals where id = ?", [approval_id])
        return ApprovalRequest.model_validate_json(rows[0]["body"]) if rows else None

    async def for_run(self, run_id: str, lock: bool = False) -> list[ApprovalRequest]:
        rows = await self.db.all("select body from approvals where run_id = ? order by rowid",
                                 [run_id])
        return [ApprovalRequest.model_validate_json(r["body"]) for r in rows]

    async def pending(self) -> list[ApprovalRequest]:
        rows = await self.db.all("select body from approvals where status = 'pending' "
                                 "order by rowid")
        return [ApprovalRequest.model_validate_json(r["body"]) for r in rows]

    async def cas(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        row = _approval_row(new.model_copy(update={"version": old.version + 1}))
        cursor = await self.db.run(
            "update approvals set status = ?, version = ?, body = ? where id = ? and version = ?",
            [row[3], row[4], row[6], old.id, old.version])
        return cursor.rowcount == 1


class SqliteAudit(AuditLog):
    def __init__(self, db: _Db):
        self.db = db

    async def _insert(self, kind: str, run_id: str | None, actor: str | None, body: str) -> None:
        await self.db.run("insert into audit (ts, run_id, kind, actor, data) values (?, ?, ?, ?, ?)",
                          [_now(), run_id, kind, actor, body])

    async def story(self, run_id: str) -> list[dict[str, Any]]:
        rows = await self.db.all("select * from audit where run_id = ? order by id", [run_id])
        return [_audit_row(r) for r in rows]

    async def rows(self, kinds: tuple[str, ...] = (), run_id: str | None = None,
                   limit: int = 200) -> list[dict[str, Any]]:
        sql, args = "select * from audit where 1 = 1", []
        if kinds:
            sql += f" and kind in ({','.join('?' for _ in kinds)})"
            args += list(kinds)
        if run_id is not None:
            sql += " and run_id = ?"
            args.append(run_id)
        rows = await self.db.all(sql + " order by id desc limit ?", [*args, limit])
        return [_audit_row(r) for r in rows]

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self.db.all(
            "select run_id, min(ts) as started, max(ts) as last, count(*) as rows from audit "
            "where run_id is not null group by run_id order by started desc limit ?", [limit])
        return [dict(r) for r in rows]

    async def llm_spend(self, channel: str, since: datetime) -> dict[str, int]:
        sql = spend_sql(lambda key: f"json_extract(a.data, '$.{key}')", "?")
        rows = await self.db.all(sql, [_stamp(since), channel])
        return {k: int(rows[0][k]) for k in SPEND}

    async def open_leases(self, since: datetime) -> list[dict[str, Any]]:
        rows = await self.db.all(
            "select l.run_id, l.data from audit l where l.kind = 'credential.lease' "
            "and l.ts >= ? and not exists (select 1 from audit r "
            "where r.kind = 'credential.revoke' "
            "and json_extract(r.data, '$.lease') = json_extract(l.data, '$.lease') "
            "and json_extract(r.data, '$.revoked_at') is not null) order by l.id",
            [since.isoformat()])
        return [_lease_row(r["run_id"], json.loads(r["data"])) for r in rows]


class SqliteDedupe(Dedupe):
    def __init__(self, db: _Db):
        self.db = db

    async def first_time(self, key: str) -> bool:
        cursor = await self.db.run("insert or ignore into dedupe (key, seen_at) values (?, ?)",
                                   [key, time.time()])
        return cursor.rowcount == 1

    async def prune(self, older_than_s: float = DEDUPE_WINDOW_S) -> int:
        cursor = await self.db.run("delete from dedupe where seen_at < ?",
                                   [time.time() - older_than_s])
        return cursor.rowcount


class SqliteExecutions(Executions):
    def __init__(self, db: _Db):
        self.db = db

    async def claim(self, run_id: str, call_id: str, action_hash: str, worker: str) -> bool:
        cursor = await self.db.run(
            "insert or ignore into executions (run_id, call_id, action_hash, worker, started_at)"
            " values (?, ?, ?, ?, ?)", [run_id, call_id, action_hash, worker, _now()])
        return cursor.rowcount == 1

    async def finish(self, run_id: str, call_id: str, status: str) -> None:
        await self.db.run("update executions set finished_at = ?, status = ? "
                          "where run_id = ? and call_id = ?", [_now(), status, run_id, call_id])

    async def finished_calls(self, run_id: str) -> set[str]:
        rows = await self.db.all("select call_id from executions where run_id = ? "
                                 "and finished_at is not null", [run_id])
        return {r["call_id"] for r in rows}

    async def count(self, run_id: str | None = None) -> int:
        sql, args = "select count(*) from executions", []
        if run_id is not None:
            sql, args = sql + " where run_id = ?", [run_id]
        return (await self.db.all(sql, args))[0][0]


class SqliteTokens(TokenRows):
    def __init__(self, db: _Db):
        self.db = db

    async def add(self, token_id: str, digest: str, record: str) -> None:
        await self.db.run("insert into tokens (id, digest, record) values (?, ?, ?)",
                          [token_id, digest, record])

    async def get(self, token_id: str) -> tuple[str, str] | None:
        rows = await self.db.all("select record, digest from tokens where id = ?", [token_id])
        return (rows[0]["record"], rows[0]["digest"]) if rows else None

    async def all(self) -> list[str]:
        return [r["record"] for r in await self.db.all("select record from tokens order by rowid")]

    async def update(self, token_id: str, record: str) -> None:
        await self.db.run("update tokens set record = ? where id = ?", [record, token_id])


class SqliteListings(Listings):
    def __init__(self, db: _Db):
        self.db = db

    async def save(self, server: str, tools: list[dict[str, Any]]) -> None:
        await self.db.run("insert or replace into mcp_listings (server, tools, updated_at) "
                          "values (?, ?, ?)", [server, json.dumps(tools), _now()])

    async def all(self) -> dict[str, list[dict[str, Any]]]:
        rows = await self.db.all("select server, tools from mcp_listings")
        return {r["server"]: json.loads(r["tools"]) for r in rows}


class SqliteSchedules(ScheduleRows):
    def __init__(self, db: _Db):
        self.db = db

    async def get(self, name: str, lock: bool = False) -> ScheduleRow | None:
        rows = await self.db.all("select * from schedules where name = ?", [name])
        return _schedule_row(rows[0]) if rows else None

    async def all(self) -> list[ScheduleRow]:
        return [_schedule_row(r) for r in await self.db.all("select * from schedules order by name")]

    async def fired(self, name: str, tick: datetime, run_id: str | None) -> None:
        await self.db.run(
            "insert into schedules (name, tick, run_id) values (?, ?, ?) on conflict (name) do "
            "update set tick = max(coalesce(tick, ''), excluded.tick), "
            "run_id = coalesce(excluded.run_id, run_id)", [name, _stamp(tick), run_id])

    async def reported(self, name: str, state: str, result: str, summary: str,
                       posted: bool) -> None:
        await self.db.run(
            "insert into schedules (name, state, result, summary, posted, reported_at) "
            "values (?, ?, ?, ?, ?, ?) on conflict (name) do update set state = excluded.state, "
            "result = excluded.result, summary = excluded.summary, posted = excluded.posted, "
            "reported_at = excluded.reported_at", [name, state, result, summary, int(posted), _now()])


class SqliteAlertGroups(AlertGroups):
    def __init__(self, db: _Db):
        self.db = db

    async def open(self, key: str) -> bool:
        cursor = await self.db.run(
            "insert into alert_groups (key, run_id, firing, updated_at) values (?, null, 1, ?) "
            "on conflict (key) do update set run_id = null, firing = 1, "
            "updated_at = excluded.updated_at where alert_groups.firing = 0", [key, _now()])
        return cursor.rowcount == 1

    async def bind(self, key: str, run_id: str) -> None:
        await self.db.run("update alert_groups set run_id = ?, updated_at = ? where key = ?",
                          [run_id, _now(), key])

    async def get(self, key: str) -> AlertGroup | None:
        async with self.db.turn():
            return self._get(key)

    async def resolve(self, key: str) -> AlertGroup | None:
        async with self.db.turn():  # read and write as one step (no other coroutine between)
            found = self._get(key)
            self.db.conn.execute("update alert_groups set firing = 0, updated_at = ? "
                                 "where key = ?", [_now(), key])
        return found

    def _get(self, key: str) -> AlertGroup | None:
        row = self.db.conn.execute("select key, run_id, firing from alert_groups where key = ?",
                                   [key]).fetchone()
        return AlertGroup(row["key"], row["run_id"], bool(row["firing"])) if row else None


class SqliteFeedback(FeedbackStore):
    def __init__(self, db: _Db):
        self.db = db

    async def rate(self, run_id: str, user: str, rating: str) -> None:
        await self.db.run(
            "insert into feedback (run_id, user, rating, at) values (?, ?, ?, ?) on conflict "
            "(run_id, user) do update set rating = excluded.rating, at = excluded.at",
            [run_id, user, rating, _now()])

    async def comment(self, run_id: str, user: str, comment: str) -> str | None:
        rows = await self.db.all("update feedback set comment = ? where run_id = ? and user = ? "
                                 "returning rating", [comment, run_id, user])
        return rows[0]["rating"] if rows else None

    async def since(self, since: datetime | None = None) -> list[FeedbackRow]:
        rows = await self.db.all(
            "select run_id, user, rating, comment, at from feedback where at >= ? "
            "order by at, rowid", [_stamp(since) if since else ""])
        return [FeedbackRow(r["run_id"], r["user"], r["rating"], r["comment"],
                            datetime.fromisoformat(r["at"])) for r in rows]


class SqliteRecords(Records):
    mode = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        conn = connect(path)
        migrate(conn)
        self._bind(_Db(conn))

    def _bind(self, db: _Db) -> None:
        self.db = db
        self.runs = SqliteRuns(db)
        self.approvals = ApprovalStore(SqliteApprovalRows(db))
        self.audit = SqliteAudit(db)
        self.dedupe = SqliteDedupe(db)
        self.executions = SqliteExecutions(db)
        self.tokens = SqliteTokens(db)
        self.listings = SqliteListings(db)
        self.schedules = SqliteSchedules(db)
        self.alert_groups = SqliteAlertGroups(db)
        self.feedback = SqliteFeedback(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        if self.db.owner.get():
            raise RuntimeError("transactions do not nest")
        async with self.db.lock:
            token = self.db.owner.set(True)
            tx = _SqliteTx(self)
            self.db.conn.execute("begin immediate")
            try:
                yield tx
            except BaseException:
                self.db.conn.execute("rollback")
                raise
            else:
                self.db.conn.execute("commit")
            finally:
                self.db.owner.reset(token)
        for callback in tx.callbacks:
            callback()

    async def ping(self) -> str:
        try:
            await self.db.all("select 1")
        except sqlite3.Error as e:
            return f"the SQLite data file {self.path} does not answer ({e})"
        return "ok"

    async def close(self) -> None:
        self.db.conn.close()


class _SqliteTx(Tx):
    mode = "sqlite"

    def __init__(self, records: SqliteRecords):
        self.runs, self.approvals, self.audit = records.runs, records.approvals, records.audit
        self.dedupe, self.executions = records.dedupe, records.executions
        self.tokens, self.listings = records.tokens, records.listings
        self.schedules = records.schedules
        self.alert_groups = records.alert_groups
        self.feedback = records.feedback
        self.connection = records.db.conn
        self.callbacks: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.callbacks.append(callback)

    def transaction(self):  # noqa: D401 - part of the interface
        raise RuntimeError("transactions do not nest")

    async def ping(self) -> str:
        return "ok"

    async def close(self) -> None:
        return None


def _now() -> str:
    return _stamp(datetime.now(UTC))


def _stamp(moment: datetime) -> str:
    """Times are stored as UTC ISO text with microseconds, so they compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _run_fields(run: RunRef | None, state: RunState | None, checklist: Checklist | None,
                stop_reason: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"updated_at": _now()}
    if run is not None:
        fields.update(ref=run.model_dump_json(), thread_id=run.thread_id)
    if state is not None:
        fields["state"] = state.value
    if checklist is not None:
        fields["checklist"] = json.dumps(checklist.dump())
    if stop_reason is not None:
        fields["stop_reason"] = stop_reason
    return fields


def _run_row(row: sqlite3.Row) -> RunRow:
    checklist = Checklist.load(json.loads(row["checklist"])) if row["checklist"] else None
    return RunRow(run=RunRef.model_validate_json(row["ref"]), state=RunState(row["state"]),
                  checklist=checklist, stop_reason=row["stop_reason"] or "")


def _approval_row(request: ApprovalRequest) -> list[Any]:
    return [request.id, request.run_id, request.thread_id, request.status.value, request.version,
            request.expires_at.isoformat(), json.dumps(request.model_dump(mode="json"))]


def _lease_row(run_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": run_id, "call_id": data.get("call_id"), "data": data}


def _schedule_row(row: sqlite3.Row) -> ScheduleRow:
    when = lambda text: datetime.fromisoformat(text) if text else None  # noqa: E731
    return ScheduleRow(name=row["name"], tick=when(row["tick"]), run_id=row["run_id"],
                       state=row["state"], result=row["result"], summary=row["summary"],
                       posted=bool(row["posted"]), reported_at=when(row["reported_at"]))


def _audit_row(row: sqlite3.Row) -> dict[str, Any]:
    return {**dict(row), "data": json.loads(row["data"])}
