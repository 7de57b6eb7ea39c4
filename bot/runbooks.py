"""Runbook search for the bot and the ``opsbot runbooks`` commands.

The index (``tools/runbooks.py``) is synchronous and CPU-bound (embedding); the bot calls it in a
worker thread and loads the model on first use, not at start-up. The memory of past incidents
(``graph/memory.py``) shares the index's Qdrant client and model.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import structlog

from bot.settings import Settings
from graph.memory import COLLECTION, IncidentMemory, PastIncident, Recollection
from tools.embeddings import EmbeddingError
from tools.runbooks import RunbookConfig, RunbookError, RunbookHit, RunbookIndex

log = structlog.get_logger("opsbot.memory")


def runbook_config(settings: Settings) -> RunbookConfig:
    return RunbookConfig(data_dir=settings.data_dir, qdrant_url=settings.qdrant_url,
                         embedding=settings.embeddings, openai_base_url=settings.openai_base_url,
                         openai_api_key=settings.openai_api_key)


class AsyncRunbooks:
    """``await search(query)`` over a lazily opened :class:`RunbookIndex`."""

    def __init__(self, config: RunbookConfig):
        self.config = config
        self._index: RunbookIndex | None = None
        self._lock = threading.Lock()

    def _open(self) -> RunbookIndex:
        with self._lock:
            if self._index is None:
                self._index = RunbookIndex(self.config)
            return self._index

    async def search(self, query: str, limit: int = 3) -> list[RunbookHit]:
        def go() -> list[RunbookHit]:
            try:
                return self._open().search(query, limit)
            except RunbookError:
                return []

        return await asyncio.to_thread(go)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

    def memory(self, collection: str = COLLECTION) -> AsyncMemory:
        """The memory of past incidents, in the same Qdrant (one client per directory)."""
        return AsyncMemory(self, collection)


class AsyncMemory:
    """:class:`graph.memory.IncidentMemory` for the graph: in a thread, opened on first use,
    and never failing a run (an index it cannot open or a model it cannot load means nothing
    is recalled or remembered, and the log says why)."""

    def __init__(self, runbooks: AsyncRunbooks, collection: str = COLLECTION):
        self._runbooks = runbooks
        self.collection = collection

    def _memory(self) -> IncidentMemory:
        return IncidentMemory(self._runbooks._open(), self.collection)

    async def recall(self, query: str, limit: int = 3, exclude: str = "") -> list[PastIncident]:
        def go() -> list[PastIncident]:
            try:
                return self._memory().recall(query, limit, exclude)
            except (RunbookError, EmbeddingError, ValueError) as e:
                log.warning("past incidents not recalled", error=str(e))
                return []

        return await asyncio.to_thread(go)

    async def remember(self, recollection: Recollection) -> None:
        def go() -> None:
            try:
                self._memory().remember(recollection)
            except (RunbookError, EmbeddingError, ValueError) as e:
                log.warning("run not remembered", run_id=recollection.run_id, error=str(e))

        await asyncio.to_thread(go)


def runbooks_for(settings: Settings) -> AsyncRunbooks:
    return AsyncRunbooks(runbook_config(settings))


def ingest(settings: Settings, directory: str) -> int:
    index = RunbookIndex(runbook_config(settings))
    try:
        report = index.ingest(Path(directory))
    finally:
        index.close()
    for error in report.errors:
        print(f"error: {error}")
    print(f"ingested {report.files} files, {report.chunks} chunks "
          f"({report.embedded} embedded, {report.removed} removed) in {report.seconds:.1f} s")
    return 1 if report.errors else 0


def search(settings: Settings, query: str, limit: int) -> int:
    index = RunbookIndex(runbook_config(settings))
    try:
        hits = index.search(query, limit)
    except RunbookError as e:
        print(f"opsbot: {e}")
        return 1
    finally:
        index.close()
    if not hits:
        print("no matching runbooks (did you run `opsbot runbooks ingest runbooks/`?)")
    for hit in hits:
        print(f"{hit.score:.3f}  {hit.title}  ({hit.path} § {hit.heading})")
        if hit.commands:
            print("       commands: " + "; ".join(f"/ops {c}" for c in hit.commands))
    return 0
