"""Scale-out queue: procrastinate on the same PostgreSQL as the records.

* Every job that drives a conversation is deferred with ``lock=<thread id>``: a unique index
  lets one such job be ``doing`` per thread, and jobs of a thread start in priority, then
  arrival, order. Lanes are procrastinate queues with priorities (``graph.queue.PRIORITY``).
* Jobs are deferred on the caller's transaction connection, so they commit with the rows that
  explain them (research note ``scaleout.md``: "hand-offs are transactions").
* Workers send heartbeats; a periodic sweep puts the jobs of workers that stopped beating back
  to ``todo`` (procrastinate detects stalled workers, retrying is ours to schedule). A busy
  lease is retried with backoff and no attempt cap; a shutdown's abort is retried at once.
* Periodic tasks (stalled-job sweep, approval expiry, dedupe pruning) are deduplicated in the
  database: each fires once per tick however many workers run.
* ``abort`` finds the ``doing`` job driving the run and asks procrastinate to abort it
  (NOTIFY to whichever worker runs it, which cancels the job's task).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import procrastinate
import psycopg
import structlog
from procrastinate.jobs import Job as QueueJob
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.schema import SchemaManager
from psycopg_pool import AsyncConnectionPool

from graph.lease import LeaseBusy
from graph.queue import PRIORITY, Handler, Job, JobQueue, Lane
from graph.records import Tx
from graph.records.postgres import FRESH_S, RecentlyUsed

log = structlog.get_logger("opsbot.queue")
DRIVE = "opsbot.drive"
DEPTH = """select j.queue_name as lane, count(*) as jobs,
       extract(epoch from now() - min(e.at)) as age
  from procrastinate_jobs j
  left join lateral (select min(at) as at from procrastinate_events
                     where job_id = j.id and type = 'deferred') e on true
 where j.status = 'todo' group by j.queue_name"""
LANES = [lane.value for lane in (Lane.MAINTENANCE, Lane.INCIDENT, Lane.CHAT, Lane.SCHEDULED)]


@dataclass(frozen=True)
class WorkerTuning:
    """How a worker process runs jobs (``opsbot worker`` settings)."""

    concurrency: int = 4
    heartbeat_s: float = 5.0
    poll_s: float = 1.0
    graceful_s: float = 20.0
    lanes: tuple[str, ...] = tuple(LANES)

    @property
    def stalled_after_s(self) -> float:
        """A worker that missed three heartbeats is presumed dead."""
        return 3 * self.heartbeat_s + 1


class DriveRetry(BaseRetryStrategy):
    """Busy lease: back off (0.25 s doubling to 5 s), never give up. Shutdown: at once. A
    database hiccup: back off, ten attempts. Anything else is the run's own failure, which the
    driver already reported."""

    def get_retry_decision(self, *, exception: BaseException, job: QueueJob) -> RetryDecision | None:
        backoff = min(0.25 * 2 ** min(job.attempts, 5), 5.0)
        if isinstance(exception, LeaseBusy):
            return RetryDecision(retry_in={"seconds": backoff})
        if isinstance(exception, asyncio.CancelledError):
            return RetryDecision(retry_in={"seconds": 0})
        if isinstance(exception, psycopg.OperationalError) and job.attempts < 10:
            return RetryDecision(retry_in={"seconds": backoff})
        return None


def _pool(**args: Any) -> AsyncConnectionPool:
    """procrastinate's pool, with the records' check (skipped for connections used moments ago)."""
    recent = RecentlyUsed(FRESH_S)
    return AsyncConnectionPool(**{**args, "check": recent.check, "reset": recent.reset})


async def _bookkeeping(conn: psycopg.AsyncConnection) -> None:
    """procrastinate's own commits (taking a job, finishing it, heartbeats) do not wait for
    the disk: one lost in a database crash only puts a job back to ``todo`` (or leaves it
    ``doing`` for the stalled sweep), and a drive run again is fenced and idempotent. Jobs
    themselves are deferred in the caller's transaction, which stays durable."""
    await conn.execute("set synchronous_commit = off")
    if not conn.autocommit:
        await conn.commit()


class PgQueue(JobQueue):
    def __init__(self, dsn: str, tuning: WorkerTuning = WorkerTuning(), fenced: bool = True):
        self.tuning = tuning
        self.fenced = fenced
        size = tuning.concurrency + 4
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=dsn, min_size=1, max_size=size, kwargs={"prepare_threshold": None},
            pool_factory=_pool, configure=_bookkeeping))
        self._handler: Handler | None = None
        self._worker: asyncio.Task[None] | None = None
        self.app.task(name=DRIVE, retry=DriveRetry())(self._drive)

    @staticmethod
    def schema() -> str:
        """procrastinate's tables and functions (``opsbot db migrate`` installs them)."""
        return SchemaManager.get_schema()

    async def open(self) -> None:
        await self.app.open_async()

    async def close(self) -> None:
        await self.stop()
        await self.app.close_async()

    def periodic(self, name: str, every_s: int, work: Callable[[], Awaitable[Any]]) -> None:
        """Run ``work`` every ``every_s`` seconds (≤ 59, or a multiple of 60) on one worker."""
        cron = (f"*/{every_s // 60} * * * *" if every_s >= 60 else f"* * * * * */{every_s}")

        async def tick(timestamp: int) -> None:
            if time.time() - timestamp > max(every_s, 5):
                return  # a worker frozen past its tick deferred it late: a live one did it
            try:
                await work()
            except Exception:  # noqa: BLE001 - the next tick tries again
                log.exception("periodic task failed", task=name)

        task = self.app.task(name=f"opsbot.{name}", queue=Lane.MAINTENANCE.value,
                             queueing_lock=f"opsbot.{name}",
                             priority=PRIORITY[Lane.MAINTENANCE])(tick)
        self.app.periodic(cron=cron)(task)

    async def retry_stalled(self) -> int:
        """The documented recipe: jobs of workers without a recent heartbeat go back to todo."""
        count = 0
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs(
                seconds_since_heartbeat=self.tuning.stalled_after_s):
            with contextlib.suppress(Exception):  # another sweep may have retried it already
                await manager.retry_job(job)
                count += 1
                log.warning("stalled job retried", job_id=job.id, lock=job.lock)
        return count

    async def defer(self, tx: Tx, job: Job) -> None:
        lock = job.thread_id if self.fenced else None
        task = self.app.configure_task(DRIVE, lock=lock, queue=job.lane.value,
                                       priority=PRIORITY[job.lane], connection=tx.connection)
        await task.defer_async(job=job.dump())  # a run's jobs: args->'job'->>'run_id'

    async def abort(self, run_id: str, thread_id: str) -> bool:
        rows = await self.app.connector.execute_query_all_async(
            query="select id from procrastinate_jobs where status = 'doing' "
                  "and task_name = %(task)s and args->'job'->>'run_id' = %(run)s",
            run=run_id, task=DRIVE)
        told = False
        for row in rows:
            told |= await self.app.job_manager.cancel_job_by_id_async(row["id"], abort=True)
        return told

    async def start(self, handler: Handler) -> None:
        self._handler = handler
        t = self.tuning
        self._worker = asyncio.create_task(self.app.run_worker_async(
            queues=list(t.lanes), concurrency=t.concurrency, install_signal_handlers=False,
            update_heartbeat_interval=t.heartbeat_s, stalled_worker_timeout=t.stalled_after_s,
            fetch_job_polling_interval=t.poll_s, abort_job_polling_interval=t.poll_s,
            shutdown_graceful_timeout=t.graceful_s, listen_notify=True), name="queue-worker")

    async def stop(self) -> None:
        if self._worker is None:
            return
        self._worker.cancel()  # procrastinate stops gracefully on cancellation
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._worker = None

    async def drain(self, timeout: float = 30) -> None:
        async def idle() -> None:
            while await self.app.connector.execute_query_all_async(
                    query="select 1 from procrastinate_jobs where status in ('todo', 'doing') "
                          "and task_name = %(task)s limit 1", task=DRIVE):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(idle(), timeout)

    async def depth(self) -> dict[str, tuple[int, float]]:
        rows = await self.app.connector.execute_query_all_async(query=DEPTH)
        return {r["lane"]: (int(r["jobs"]), float(r["age"] or 0)) for r in rows}

    async def _drive(self, job: dict[str, Any]) -> None:
        assert self._handler is not None, "the queue was not started with a handler"
        await self._handler(Job.load(job))
