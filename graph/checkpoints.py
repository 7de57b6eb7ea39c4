"""Compiled run graphs over a durable checkpointer, handed out one drive at a time.

* Embedded: one :class:`InlineSqliteSaver` (``OPSBOT_DATA_DIR/checkpoints.sqlite``) shared by
  every drive of the process. Its statements run inline on the event loop, as the records'
  do (``graph/records/sqlite.py``): in WAL mode with ``synchronous=NORMAL`` a commit is a write
  to the log, not an fsync, and a statement takes microseconds, while ``AsyncSqliteSaver`` hands
  each one to aiosqlite's thread and back (two thread switches and a loop wake-up, ~40 per run).
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
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, closing
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph.state import CompiledStateGraph

from graph.records.postgres import pool_for

Build = Callable[[BaseCheckpointSaver], CompiledStateGraph]
Graphs = Callable[[], AbstractAsyncContextManager[CompiledStateGraph]]


class InlineSqliteSaver(SqliteSaver):
    """LangGraph's ``SqliteSaver`` with its async methods answered inline, on the loop's thread.

    Only for a connection in WAL mode with ``synchronous=NORMAL`` (:func:`sqlite_graphs`), where
    nothing waits on the disk but a WAL checkpoint every ~1,000 pages. The sync methods' lock
    never contends: every call comes from the one event loop."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None
                    ) -> AsyncIterator[CheckpointTuple]:
        # read whole first: ``list`` holds the saver's lock while it yields, and a caller that
        # awaits between items would let another coroutine block the loop on that lock
        for found in list(self.list(config, filter=filter, before=before, limit=limit)):
            yield found

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions
                   ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def aget_delta_channel_history(self, *, config: RunnableConfig,
                                         channels: Sequence[str]) -> Mapping[str, Any]:
        return self.get_delta_channel_history(config=config, channels=channels)


@asynccontextmanager
async def sqlite_graphs(path: Path, build: Build) -> AsyncIterator[Graphs]:
    with closing(sqlite3.connect(path, check_same_thread=False)) as conn:
        saver = InlineSqliteSaver(conn)
        saver.setup()  # WAL mode
        # NORMAL sync in WAL mode survives a crashed process (not a power cut), half the fsyncs.
        conn.execute("pragma synchronous=normal")
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
