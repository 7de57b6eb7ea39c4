"""The deployment's records in both storage modes, for tests that must hold in each.

Usage::

    async def test_x(records):          # runs twice: SQLite file, then a fresh PostgreSQL db
        await records.runs.add(run)

    async def test_y(pg_records): ...   # PostgreSQL only
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from graph.pgqueue import PgQueue
from graph.records import Records
from graph.records.migrations import migrate
from graph.records.postgres import PgRecords
from graph.records.sqlite import SqliteRecords


async def open_pg(dsn: str) -> PgRecords:
    await migrate(dsn, PgQueue.schema())
    return await PgRecords.open(dsn)


@pytest.fixture(params=["sqlite", "postgres"])
async def records(request, tmp_path) -> AsyncIterator[Records]:
    if request.param == "sqlite":
        opened: Records = SqliteRecords(tmp_path / "opsbot.sqlite")
    else:
        opened = await open_pg(request.getfixturevalue("postgres_database"))
    yield opened
    await opened.close()


@pytest.fixture
async def pg_records(postgres_database) -> AsyncIterator[PgRecords]:
    opened = await open_pg(postgres_database)
    yield opened
    await opened.close()
