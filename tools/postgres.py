"""PostgreSQL connector: what an on-call engineer looks at first, and (behind approval) the two
ways to stop a runaway backend.

Read-only (tier 0): ``activity`` (pg_stat_activity, long-running and idle-in-transaction first),
``locks`` (who blocks whom), ``slow`` (pg_stat_statements, when installed), ``sizes`` (largest
tables and indexes), ``replication`` (lag per standby). ``query`` (tier 1) runs one read-only
statement in a READ ONLY transaction with a statement timeout and a row cap. ``cancel`` (tier 3)
and ``terminate`` (tier 4) signal one backend; their previews show what it is running.

The server comes from ``OPSBOT_POSTGRES_URL`` (no password in it). Credentials, best first: a
role that Vault's database engine creates for the action (``OPSBOT_POSTGRES_READ_ROLE`` for
tiers 0-1 and previews, ``OPSBOT_POSTGRES_WRITE_ROLE`` with ``pg_signal_backend`` for cancel and
terminate), or the URL's user with a password read from Vault per action
(``OPSBOT_POSTGRES_PASSWORD_SECRET``). psycopg runs inside the sandbox only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tools.base import (
    Action,
    ActionContext,
    Endpoint,
    SecretRef,
    Status,
    Target,
    Tier,
    ToolResult,
    Toolset,
)
from tools.logins import Login
from tools.postgres_sql import (
    ACTIVITY,
    BACKEND,
    HAS_STATEMENTS,
    LOCKS,
    REPLICATION,
    SIZES,
    SLOW,
    STANDBY,
    chains,
    render_rows,
)

MAX_ROWS = 1000
MAX_CELL = 200


class PostgresConfig(Login):
    """Where the server is (``postgresql://host:5432/dbname``) and how an action logs in
    (:class:`tools.logins.Login`; the write role needs ``pg_signal_backend``)."""

    model_config = ConfigDict(frozen=True)

    url: str

    @field_validator("url")
    @classmethod
    def _passwordless_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("must start with postgresql://, e.g. postgresql://db:5432/app")
        if parts.password:
            raise ValueError("must not contain a password; use dynamic roles or a Vault secret")
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("must name a host and a database, e.g. postgresql://db:5432/app")
        return url

    @model_validator(mode="after")
    def _user_for_a_password(self) -> PostgresConfig:
        if self.password_secret and not urlsplit(self.url).username:
            raise ValueError("a password secret needs the user in the URL (postgresql://user@...)")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 5432

    @property
    def database(self) -> str:
        return urlsplit(self.url).path.strip("/")

    @property
    def sslmode(self) -> str:
        return parse_qs(urlsplit(self.url).query).get("sslmode", ["prefer"])[0]


class _Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=200, description="At most this many rows.")


class ActivityParams(_Limit):
    pass


class LocksParams(_Limit):
    pass


class SlowParams(_Limit):
    limit: int = Field(10, ge=1, le=100, description="At most this many statements.")


class SizesParams(_Limit):
    limit: int = Field(15, ge=1, le=100, description="At most this many relations.")


class ReplicationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(..., min_length=1, max_length=10_000,
                     description="One read-only SQL statement (SELECT, SHOW, EXPLAIN ...).")
    max_rows: int = Field(100, ge=1, le=MAX_ROWS, description="Return at most this many rows.")
    timeout_s: int = Field(10, ge=1, le=50, description="Statement timeout in seconds.")


class PidParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int = Field(..., ge=1, le=2**31 - 1, description="The backend's process id.")


def _connect(ctx: ActionContext, timeout_s: int = 20):  # -> psycopg.Connection
    import psycopg

    config = PostgresConfig.model_validate(ctx.config)
    host, port = ctx.address(config.host, config.port)
    user = ctx.secrets.get("postgres_username") or urlsplit(config.url).username
    return psycopg.connect(
        host=host, port=port, dbname=config.database, user=user,
        password=ctx.secrets.get("postgres_password"), sslmode=config.sslmode,
        connect_timeout=5, application_name="opsbot", autocommit=True,
        options=f"-c statement_timeout={timeout_s * 1000}",
    )


def _guard(invocation: str, fn, ctx: ActionContext, timeout_s: int = 20) -> ToolResult:
    import psycopg

    try:
        with _connect(ctx, timeout_s) as conn:
            return fn(conn)
    except psycopg.Error as e:
        return ToolResult.fail(invocation, _pg_error(e))


def _pg_error(error: Exception) -> str:
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(error).strip().splitlines()[0]
    state = getattr(error, "sqlstate", None)
    return f"{type(error).__name__}: {primary}" + (f" (SQLSTATE {state})" if state else "")


def _rows(conn, sql: str, args: tuple[Any, ...] = ()) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(sql, args)
    names = [c.name for c in cursor.description or []]
    return names, cursor.fetchall()


def _table(inv: str, sql: str, args: tuple[Any, ...], empty: str):
    def go(conn) -> ToolResult:
        names, rows = _rows(conn, sql, args)
        if not rows:
            return ToolResult.no_data(inv, empty)
        data = [dict(zip(names, map(_jsonable, row), strict=True)) for row in rows]
        return ToolResult.ok(inv, render_rows(names, rows, MAX_CELL), data)

    return go


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _activity(p: ActivityParams, ctx: ActionContext) -> ToolResult:
    inv = "pg_stat_activity (longest first)"
    return _guard(inv, _table(inv, ACTIVITY, (p.limit,), "No other client backends."), ctx)


def _locks(p: LocksParams, ctx: ActionContext) -> ToolResult:
    inv = "pg_locks: blocked backends and who blocks them"
    table = _table(inv, LOCKS, (p.limit,), "No backend is waiting on a lock.")

    def go(conn) -> ToolResult:
        result = table(conn)
        if result.status is not Status.OK:
            return result
        pairs = [(row["blocked_pid"], row["blocking_pid"]) for row in result.data]
        lines = [f"Blocking chain: {chain}" for chain in chains(pairs)]
        return result.model_copy(update={"output": "\n".join(lines) + "\n\n" + result.output,
                                         "data": {"chains": chains(pairs), "rows": result.data}})

    return _guard(inv, go, ctx)


def _slow(p: SlowParams, ctx: ActionContext) -> ToolResult:
    inv = "pg_stat_statements (by total time)"

    def go(conn) -> ToolResult:
        if not conn.execute(HAS_STATEMENTS).fetchone()[0]:
            return ToolResult.no_data(inv, "pg_stat_statements is not installed in this database "
                                      "(it needs shared_preload_libraries = 'pg_stat_statements' "
                                      "and CREATE EXTENSION pg_stat_statements).")
        return _table(inv, SLOW, (p.limit,), "pg_stat_statements has no statements yet.")(conn)

    return _guard(inv, go, ctx)


def _sizes(p: SizesParams, ctx: ActionContext) -> ToolResult:
    inv = "largest tables and indexes"
    return _guard(inv, _table(inv, SIZES, (p.limit,), "No tables or indexes."), ctx)


def _replication(p: ReplicationParams, ctx: ActionContext) -> ToolResult:
    inv = "pg_stat_replication"

    def go(conn) -> ToolResult:
        if conn.execute("select pg_is_in_recovery()").fetchone()[0]:
            return _table(inv, STANDBY, (), "")(conn)
        return _table(inv, REPLICATION, (), "This server is a primary with no standby "
                                            "connected.")(conn)

    return _guard(inv, go, ctx)


def _query(p: QueryParams, ctx: ActionContext) -> ToolResult:
    inv = f"READ ONLY: {p.sql.strip()[:200]}"

    def go(conn) -> ToolResult:
        with conn.transaction():
            conn.execute("set transaction read only")
            cursor = conn.execute(p.sql)
            if cursor.description is None:
                return ToolResult.no_data(inv, f"The statement returned no rows "
                                          f"({cursor.statusmessage}).")
            names = [c.name for c in cursor.description]
            rows = cursor.fetchmany(p.max_rows + 1)
        shown, more = rows[: p.max_rows], len(rows) > p.max_rows
        note = f"\n(first {p.max_rows} rows; more were cut)" if more else ""
        data = [dict(zip(names, map(_jsonable, row), strict=True)) for row in shown]
        return ToolResult.ok(inv, render_rows(names, shown, MAX_CELL) + note, data)

    return _guard(inv, go, ctx, p.timeout_s)


def _signal(function: str, verb: str):
    def run(p: PidParams, ctx: ActionContext) -> ToolResult:
        inv = f"select {function}({p.pid})"

        def go(conn) -> ToolResult:
            if not conn.execute(BACKEND, (p.pid,)).fetchall():
                return ToolResult.fail(inv, f"No backend with pid {p.pid} is running.")
            if not conn.execute(f"select {function}(%s)", (p.pid,)).fetchone()[0]:
                return ToolResult.fail(inv, f"PostgreSQL did not {verb} backend {p.pid}.")
            return ToolResult.ok(inv, f"Backend {p.pid}: {verb} sent.", {"pid": p.pid})

        return _guard(inv, go, ctx)

    return run


def _backend_preview(p: PidParams, ctx: ActionContext) -> ToolResult:
    inv = f"pg_stat_activity where pid = {p.pid}"

    def go(conn) -> ToolResult:
        names, rows = _rows(conn, BACKEND, (p.pid,))
        if not rows:
            return ToolResult.fail(inv, f"No backend with pid {p.pid} is running.")
        return ToolResult.ok(inv, render_rows(names, rows, 2000))

    return _guard(inv, go, ctx)


def _read(name: str, description: str, params: type[BaseModel], summary, run) -> Action[Any]:
    return Action(name=name, description=description, tier=Tier.OBSERVE, params=params,
                  summary=summary, run=run, timeout=30)


ACTIONS: list[Action[Any]] = [
    _read("activity", "List PostgreSQL backends (pg_stat_activity): long-running queries and "
          "idle-in-transaction sessions first. Use first for slow queries or connection "
          "pile-ups.", ActivityParams, lambda p: f"List PostgreSQL activity (top {p.limit})",
          _activity),
    _read("locks", "Show PostgreSQL lock waits as blocking chains: each waiting backend, what "
          "it runs, and the backends blocking it.", LocksParams,
          lambda p: "Show PostgreSQL blocking chains", _locks),
    _read("slow", "List the statements with the most total execution time "
          "(pg_stat_statements, when installed).", SlowParams,
          lambda p: f"List the {p.limit} slowest PostgreSQL statements", _slow),
    _read("sizes", "List the largest PostgreSQL tables and indexes with their sizes.",
          SizesParams, lambda p: f"List the {p.limit} largest PostgreSQL relations", _sizes),
    _read("replication", "Show replication lag per standby (on a primary) or the replay delay "
          "(on a standby).", ReplicationParams, lambda p: "Show PostgreSQL replication lag",
          _replication),
    Action(name="query", description="Run one read-only SQL statement in a READ ONLY "
           "transaction with a statement timeout; returns at most max_rows rows.",
           tier=Tier.RECOMMEND, params=QueryParams,
           summary=lambda p: f"Run read-only SQL: {p.sql.strip()[:120]}", run=_query,
           timeout=60),
    Action(name="cancel", description="Cancel the current query of one PostgreSQL backend "
           "(pg_cancel_backend); the session stays connected.", tier=Tier.SANDBOX_EXECUTE,
           params=PidParams, summary=lambda p: f"Cancel the query of PostgreSQL backend {p.pid}",
           run=_signal("pg_cancel_backend", "cancel"), timeout=30, preview=_backend_preview),
    Action(name="terminate", description="Terminate one PostgreSQL backend "
           "(pg_terminate_backend): its transaction rolls back and its connection closes.",
           tier=Tier.PRODUCTION, params=PidParams,
           summary=lambda p: f"Terminate PostgreSQL backend {p.pid}",
           run=_signal("pg_terminate_backend", "terminate"), timeout=30,
           preview=_backend_preview),
]


def _target(action: Action[Any], params: BaseModel, config: PostgresConfig) -> Target:
    return Target(kind="postgres", name=f"{config.host}:{config.port}/{config.database}",
                  attrs={"host": config.host, "port": str(config.port),
                         "database": config.database})


def _egress(action: Action[Any], params: BaseModel, config: PostgresConfig) -> list[Endpoint]:
    return [Endpoint(host=config.host, port=config.port)]


def _secrets(action: Action[Any], params: BaseModel, config: PostgresConfig) -> list[SecretRef]:
    return config.refs("postgres", action.tier)


TOOLSET: Toolset[PostgresConfig] = Toolset(
    name="postgres",
    description="Look into a PostgreSQL server (activity, locks, slow statements, sizes, "
    "replication, read-only SQL) and, with approval, cancel or terminate a backend.",
    config=PostgresConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
    target_kinds=("postgres",),
    preload=("psycopg",),
)
