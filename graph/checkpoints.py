"""Compiled run graphs over a durable checkpointer, handed out one drive at a time.

* Embedded: one ``AsyncSqliteSaver`` (``OPSBOT_DATA_DIR/checkpoints.sqlite``) shared by every
  drive of the process.
* Scale-out: ``AsyncPostgresSaver`` serialises every call per saver instance (an asyncio lock,
  LangGraph #7259), so each worker slot gets its own saver — a thin object over one shared
  connection pool — and its own compiled graph.

Usage::

    async with postgres_graphs(dsn, slots=4, build=lambda saver: build_graph(deps, saver)) as graphs:
        async with graphs() as graph:
            await graph.ainvoke(...)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph

from graph.records.postgres import pool_for

Build = Callable[[BaseCheckpointSaver], CompiledStateGraph]
Graphs = Callable[[], AbstractAsyncContextManager[CompiledStateGraph]]


@asynccontextmanager
async def sqlite_graphs(path: Path, build: Build) -> AsyncIterator[Graphs]:
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()  # WAL mode
        # NORMAL sync in WAL mode survives a crashed process (not a power cut), half the fsyncs.
        await saver.conn.execute("pragma synchronous=normal")
        graph = build(saver)

        @asynccontextmanager
        async def shared() -> AsyncIterator[CompiledStateGraph]:
            yield graph

        yield shared


@asynccontextmanager
async def postgres_graphs(dsn: str, slots: int, build: Build,
                          tx_idle_timeout_s: float = 30) -> AsyncIterator[Graphs]:
    pool = pool_for(dsn, max_size=slots + 1, name="opsbot-checkpoints",
                    tx_idle_timeout_s=tx_idle_timeout_s)
    await pool.open()
    try:
        free: asyncio.Queue[CompiledStateGraph] = asyncio.Queue()
        for _ in range(slots):
            free.put_nowait(build(AsyncPostgresSaver(pool)))

        @asynccontextmanager
        async def slot() -> AsyncIterator[CompiledStateGraph]:
            graph = await free.get()
            try:
                yield graph
            finally:
                free.put_nowait(graph)

        yield slot
    finally:
        await pool.close()
