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
  transaction mode: session locks need a session. The sessions are pooled (a new connection
  was ~7 ms, 11-15 ms under load, on the path of every drive, an approval's resume included):
  a session goes back to the pool only after its unlock answered; one whose unlock did not
  (an error, a cancellation) is closed, which releases its lock as a dead holder's would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

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
    def __init__(self, dsn: str, slots: int):
        # a drive holds at most two leases (a start that opened its thread holds that one too)
        self.pool = AsyncConnectionPool(dsn, min_size=1, max_size=2 * slots + 1, open=False,
                                        kwargs={"autocommit": True, "prepare_threshold": None})

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        conn = await self.pool.getconn()
        clean = False  # the session holds no lock of ours and is fit to be reused
        try:
            if not await _ask(conn, "pg_try_advisory_lock", thread_id):
                clean = True
                log.info("lease.busy", thread_id=thread_id)
                raise LeaseBusy(thread_id)
            try:
                yield
            finally:
                clean = await _ask(conn, "pg_advisory_unlock", thread_id)
        finally:
            if not clean:
                await conn.close()  # ending the session releases the lock
            await self.pool.putconn(conn)


async def _ask(conn: AsyncConnection, function: str, thread_id: str) -> bool:
    row = await (await conn.execute(f"select {function}(hashtextextended(%s, 0))",
                                    [thread_id])).fetchone()
    return bool(row and row[0])


class NoLease(Lease):
    """No fencing at all. Only for the test that shows what the lease prevents."""

    @asynccontextmanager
    async def hold(self, thread_id: str) -> AsyncIterator[None]:
        yield
