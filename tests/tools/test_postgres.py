"""The PostgreSQL connector's actions against the session's real PostgreSQL, logged in as the
roles OpenBao's database engine creates for each action (run in-process here; the sandboxed,
approved path is in tests/scenarios/test_postgres_actions.py).

The sessions being looked at belong to an ordinary login role (``app``), as in production: a
``pg_signal_backend`` holder may not signal a superuser's backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from pydantic import SecretStr

from sandbox.credentials import CredentialBroker, VaultConfig
from tests.fakes.server import wait_until
from tests.services.postgres import App
from tests.services.vault_engines import PG_READ, PG_WRITE, VaultEngines
from tools.base import ActionContext, Status
from tools.catalog import Call, Catalog
from tools.postgres import TOOLSET, PostgresConfig

@pytest.fixture
def catalog(vault_engines: VaultEngines, postgres_database) -> Catalog:
    url = vault_engines.pg_url(urlsplit(postgres_database).path.strip("/"))
    return Catalog([TOOLSET], {"postgres": PostgresConfig(url=url, read_role=PG_READ,
                                                          write_role=PG_WRITE)})


@pytest.fixture(scope="module")
def broker(vault_engines: VaultEngines) -> CredentialBroker:
    token = SecretStr(vault_engines.parent_token())
    return CredentialBroker(VaultConfig(addr=vault_engines.openbao.addr, token=token))


async def run(catalog: Catalog, broker: CredentialBroker, action: str, **params):
    """What the execute node does, minus the container: mint, run, revoke."""
    resolved = catalog.resolve(Call(id="t", toolset="postgres", action=action, params=params))
    lease = await broker.mint("run-pg", "t", resolved.secrets, resolved.action.timeout)
    try:
        ctx = ActionContext(config=resolved.config.model_dump(),
                            secrets={k: v.get_secret_value() for k, v in lease.values.items()})
        return await asyncio.to_thread(resolved.action.run, resolved.params, ctx)
    finally:
        await broker.revoke(lease)


def waiting_on_a_lock(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn) as admin:
        row = admin.execute("select wait_event_type from pg_stat_activity where pid = %s",
                            (pid,)).fetchone()
    return bool(row) and row[0] == "Lock"


async def blocking_chain(app: App) -> tuple[int, int, int, list[dict]]:
    """``a`` holds a row lock in an open transaction; ``b`` waits for it; ``c`` waits behind b."""
    a, b, c = app.open(autocommit=False), app.open(), app.open()
    a.execute("update accounts set balance = balance - 1 where id = 1")
    pids = [conn.info.backend_pid for conn in (a, b, c)]
    waits = []
    for conn, pid in ((b, pids[1]), (c, pids[2])):
        waits.append(app.in_background(conn, "update accounts set balance = balance + 1 where id = 1"))
        await wait_until(lambda p=pid: waiting_on_a_lock(app.dsn, p), 10,
                         lambda p=pid: f"backend {p} never waited for the row lock")
    return pids[0], pids[1], pids[2], waits


async def test_locks_shows_the_blocking_chain(app, catalog, broker):
    a, b, c, _ = await blocking_chain(app)
    result = await run(catalog, broker, "locks")
    assert result.status is Status.OK, result
    assert result.data["chains"] == [f"{a} blocks {b} blocks {c}"]
    assert result.output.startswith(f"Blocking chain: {a} blocks {b} blocks {c}\n")
    assert "update accounts set balance = balance - 1" in result.output  # what a is running


async def test_activity_lists_idle_in_transaction_sessions_first(app, catalog, broker):
    idle = app.open(autocommit=False)
    idle.execute("select 1")
    app.open().execute("select 2")
    result = await run(catalog, broker, "activity")
    assert result.status is Status.OK
    assert result.data[0]["pid"] == idle.info.backend_pid
    assert result.data[0]["state"] == "idle in transaction"


async def test_query_runs_read_only_with_a_row_cap_and_a_timeout(app, catalog, broker):
    capped = await run(catalog, broker, "query", sql="select g from generate_series(1, 500) g",
                       max_rows=10)
    assert len(capped.data) == 10 and "(first 10 rows; more were cut)" in capped.output
    for write in ("insert into accounts values (99, 1)", "update accounts set balance = 0",
                  "create table sneaky (x int)", "drop table accounts"):
        refused = await run(catalog, broker, "query", sql=write)
        assert refused.status is Status.ERROR
        assert "read-only transaction" in refused.error, refused.error
    slow = await run(catalog, broker, "query", sql="select pg_sleep(5)", timeout_s=1)
    assert "statement timeout" in slow.error
    with psycopg.connect(app.dsn) as admin:
        assert admin.execute("select count(*), min(balance) from accounts").fetchone() == (10, 100)


async def test_a_read_only_query_cannot_signal_a_backend(app, catalog, broker):
    """A function call is not a write: the read role's missing pg_signal_backend is the guard."""
    victim = app.open()
    sql = f"select pg_terminate_backend({victim.info.backend_pid})"
    refused = await run(catalog, broker, "query", sql=sql)
    assert refused.status is Status.ERROR and "InsufficientPrivilege" in refused.error
    assert victim.execute("select 1").fetchone() == (1,)


async def test_cancel_and_terminate_signal_exactly_one_backend(app, catalog, broker):
    a, b, c, waits = await blocking_chain(app)
    bystander = app.open()
    canceled = await run(catalog, broker, "cancel", pid=b)
    assert canceled.status is Status.OK, canceled
    waits[0]["thread"].join(10)
    assert isinstance(waits[0].get("error"), psycopg.errors.QueryCanceled)
    terminated = await run(catalog, broker, "terminate", pid=a)
    assert terminated.status is Status.OK, terminated
    waits[1]["thread"].join(10)
    assert "error" not in waits[1], "c got the row once a was gone"

    def alive() -> set[int]:
        with psycopg.connect(app.dsn) as admin:
            return {r[0] for r in admin.execute("select pid from pg_stat_activity")}

    await wait_until(lambda: a not in alive(), 10, lambda: f"{a} still there: {alive()}")
    assert {b, c, bystander.info.backend_pid} <= alive()  # a signal ends its backend only
    gone = await run(catalog, broker, "terminate", pid=a)
    assert gone.status is Status.ERROR and gone.error == f"No backend with pid {a} is running."


async def test_the_preview_shows_what_the_backend_runs(app, catalog, broker):
    busy = app.open(autocommit=False)
    busy.execute("update accounts set balance = 7 where id = 3")
    resolved = catalog.resolve(Call(id="p", toolset="postgres", action="terminate",
                                    params={"pid": busy.info.backend_pid}))
    assert [r.path for r in resolved.preview_secrets] == [PG_READ, PG_READ]
    assert [r.path for r in resolved.secrets] == [PG_WRITE, PG_WRITE]
    lease = await broker.mint("run-pv", "p", resolved.preview_secrets, 30)
    ctx = ActionContext(config=resolved.config.model_dump(),
                        secrets={k: v.get_secret_value() for k, v in lease.values.items()})
    shown = await asyncio.to_thread(resolved.action.preview, resolved.params, ctx)
    await broker.revoke(lease)
    assert "update accounts set balance = 7 where id = 3" in shown.output
    assert "idle in transaction" in shown.output and "app" in shown.output


async def test_slow_says_so_without_pg_stat_statements_and_lists_statements_with_it(
        app, catalog, broker, postgres_database):
    missing = await run(catalog, broker, "slow")
    assert missing.status is Status.NO_DATA and "pg_stat_statements is not installed" in (
        missing.output)
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute("create extension pg_stat_statements")
        # the instance is shared by the whole suite: the busiest 50 statements since it started
        # need not include this one (a full run failed so), unless the counts start here
        admin.execute("select pg_stat_statements_reset()")
        admin.execute("select count(*) from accounts a, accounts b, accounts c")
    listed = await run(catalog, broker, "slow", limit=50)
    assert listed.status is Status.OK
    assert any("from accounts a, accounts b, accounts c" in r["query"] for r in listed.data)


async def test_sizes_and_replication(app, catalog, broker, postgres_database):
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute("create table big as select g, repeat('x', 200) as pad "
                      "from generate_series(1, 20000) g")
    sizes = await run(catalog, broker, "sizes", limit=3)
    assert sizes.data[0]["relation"] == "public.big" and sizes.data[0]["kind"] == "table"
    replication = await run(catalog, broker, "replication")
    assert replication.status is Status.NO_DATA
    assert replication.output == "This server is a primary with no standby connected."


@pytest.mark.parametrize(
    "values,message",
    [
        ({"url": "mysql://db/app"}, "must start with postgresql://"),
        ({"url": "postgresql://u:pw@db/app"}, "must not contain a password"),
        ({"url": "postgresql://db"}, "must name a host and a database"),
        ({"url": "postgresql://db/app", "password_secret": "kv/data/pg#password"},
         "a password secret needs the user in the URL"),
        ({"url": "postgresql://db/app", "write_role": PG_WRITE}, "need both a read role"),
    ],
)
def test_bad_config_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        PostgresConfig(**values)


def test_a_static_password_logs_in_as_the_urls_user():
    config = PostgresConfig(url="postgresql://opsbot@db/app",
                            password_secret="kv/data/pg#password")
    refs = TOOLSET.secrets(TOOLSET.action("terminate"), None, config)
    assert [(r.name, r.path, r.key) for r in refs] == [
        ("postgres_password", "kv/data/pg", "password")]
