"""The per-thread lease: one drive of a LangGraph thread at a time, anywhere.

LangGraph has no lease of its own: two resumes of one thread both load the pending interrupt
and both run what follows (research note ``scaleout.md``: 78 executions for 40 runs without
it). Every drive therefore holds its thread's lease for its whole length and re-reads the
checkpoint under it.

* Embedded: an asyncio lock per thread (waits its turn).
* Scale-out: a PostgreSQL *session* advisory lock on a connection of its own, taken with
  ``pg_try_advisory_lock``: when busy it raises :class:`LeaseBusy` and the job is retried
  later by the queue (waiting happens in the queue, not in an occupied worker slot). If the
  holder dies, its session ends and PostgreSQL releases the lock. Never through pgbouncer in
  transaction mode: session locks need a session.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from psycopg import AsyncConnection

from graph.deps import RunSlots

log = structlog.get_logger("opsbot.lease")


class LeaseBusy(Exception):
    """Another live process drives this thread now; try again later."""


class Lease(ABC):
    @abstractmethod
    def hold(self, thread_id: str) -> AbstractAsyncContextManager[None]: ...


class LocalLease(Lease):
    """One gate of one per thread (:class:`graph.deps.RunSlots`, which drops a gate nobody
    holds or waits for: a long-lived bot doesn't keep one per Slack thread ever seen)."""

    def __init__(self) -> None:
        self._gates = RunSlots()

    def hold(self, thread_id: str) -> AbstractAsyncContextManager[None]:
        return self._gates.hold(thread_id, 1)


class PgLease(Lease):
    def __init__(self, dsn: str):
        self.dsn = dsn

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        conn = await AsyncConnection.connect(self.dsn, autocommit=True)
        try:
            row = await (await conn.execute(
                "select pg_try_advisory_lock(hashtextextended(%s, 0))", [thread_id])).fetchone()
            if not row or not row[0]:
                log.info("lease.busy", thread_id=thread_id)
                raise LeaseBusy(thread_id)
            yield
        finally:
            await conn.close()  # ending the session releases the lock


class NoLease(Lease):
    """No fencing at all. Only for the test that shows what the lease prevents."""

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        yield
