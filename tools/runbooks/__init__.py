"""Runbooks: Markdown with YAML front matter, chunked by heading, embedded, searched in Qdrant.

``files`` turns a runbook file into validated sections; ``index`` embeds them into Qdrant and
searches them. Everything callers need is re-exported here.

A runbook file (format in ``runbooks/README.md``)::

    ---
    title: Redis memory pressure and evictions
    services: [redis]
    alerts: [RedisMemoryHigh, RedisEvictingKeys]
    tags: [memory, cache]
    commands: ["redis info section=memory"]
    ---
    # Redis memory pressure and evictions
    ## Symptoms ...

``ingest(dir)`` makes the collection mirror ``dir`` (``*.md`` recursively, ``README.md``
skipped): every section under a heading becomes a point whose id is derived from the file's
path and the chunk number, so re-ingesting is idempotent, unchanged chunks are not embedded
again, and chunks of removed or shrunk files are deleted. A file with broken front matter is
reported (file and line) and skipped; the rest still ingests.

Qdrant runs in local mode under ``data_dir`` unless ``qdrant_url`` names a server. Embedding is
CPU-bound, so the API is synchronous and thread-safe; async callers wrap it in a thread::

    index = RunbookIndex(RunbookConfig(data_dir=Path(".opsbot")))
    report = index.ingest(Path("runbooks"))
    hits = await asyncio.to_thread(index.search, "redis is evicting keys", 3)
"""

from tools.runbooks.files import (
    Chunk,
    RunbookFileError,
    RunbookMeta,
    chunk_file,
    command_problem,
    parse_runbook,
    sections,
)
from tools.runbooks.index import (
    IngestReport,
    RunbookConfig,
    RunbookError,
    RunbookHit,
    RunbookIndex,
    make_embedder,
)

__all__ = [
    "Chunk",
    "IngestReport",
    "RunbookConfig",
    "RunbookError",
    "RunbookFileError",
    "RunbookHit",
    "RunbookIndex",
    "RunbookMeta",
    "chunk_file",
    "command_problem",
    "make_embedder",
    "parse_runbook",
    "sections",
]
