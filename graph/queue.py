"""Jobs that drive runs, their lanes, and the embedded (in-process) queue.

A :class:`Job` says which run to drive and why: ``start`` a new run, ``resume`` it after an
approval was decided, ``continue`` one whose previous drive died mid-flight, ``remember`` one
that ended (index it in the memory of past incidents, off the report's path). Jobs are deferred
inside the transaction that recorded their reason (``JobQueue.defer(tx, job)``), so a run row
or a decided approval never exists without the job that acts on it.

Lanes order the work: ``maintenance`` (sweeps) before ``incident`` (PagerDuty) before ``chat``
(people) before ``scheduled``. Two jobs of one Slack thread never run at once (the queue's
per-thread lock, plus the lease in :mod:`graph.lease`).

The embedded queue here keeps jobs in memory; what it would lose in a crash is rebuilt from
the records at start (``Driver.recover``). Scale-out uses procrastinate (``graph/pgqueue.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import structlog

from graph.records import Tx
from graph.surface import RunRef
from graph.task import Source, Task

log = structlog.get_logger("opsbot.queue")


class Lane(StrEnum):
    MAINTENANCE = "maintenance"
    INCIDENT = "incident"
    CHAT = "chat"
    SCHEDULED = "scheduled"


PRIORITY = {Lane.MAINTENANCE: 100, Lane.INCIDENT: 30, Lane.CHAT: 20, Lane.SCHEDULED: 10}


def lane_for(task: Task) -> Lane:
    if task.source is Source.ALERT:
        return Lane.INCIDENT
    if task.source is Source.SCHEDULE:
        return Lane.SCHEDULED
    return Lane.CHAT


class JobKind(StrEnum):
    START = "start"
    RESUME = "resume"
    CONTINUE = "continue"
    REMEMBER = "remember"  # index an ended run in the memory of past incidents (graph/memory.py)


@dataclass(frozen=True)
class Job:
    kind: JobKind
    run_id: str
    thread_id: str
    lane: Lane = Lane.CHAT
    approval_id: str | None = None
    trace: str = ""  # the run's traceparent: the worker continues the run's trace

    def dump(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, data: dict[str, Any]) -> Job:
        return cls(kind=JobKind(data["kind"]), run_id=data["run_id"],
                   thread_id=data["thread_id"], lane=Lane(data.get("lane", "chat")),
                   approval_id=data.get("approval_id"), trace=data.get("trace", ""))


def start_job(run: RunRef) -> Job:
    """The job that starts ``run``. A run that will open its own Slack thread (a slash
    command) has no thread yet: its start is keyed by the run, and it drives the thread it
    opens; everything later is keyed by that thread."""
    key = run.thread_id if run.thread_ts else f"{run.task.team}:{run.task.channel}:new:{run.run_id}"
    return Job(JobKind.START, run.run_id, key, lane_for(run.task), trace=run.trace)


def remember_job(run: RunRef) -> Job:
    """Index ``run`` (ended) in the memory of past incidents, on any worker, in the maintenance
    lane; keyed by the run, so it never waits for the conversation's thread."""
    return Job(JobKind.REMEMBER, run.run_id, f"remember:{run.run_id}", Lane.MAINTENANCE,
               trace=run.trace)


Handler = Callable[[Job], Awaitable[None]]


class JobQueue(ABC):
    """Where jobs wait for a worker."""

    @abstractmethod
    async def defer(self, tx: Tx, job: Job) -> None:
        """Queue ``job`` as part of ``tx``: it exists once ``tx`` commits, never otherwise."""

    @abstractmethod
    async def abort(self, run_id: str, thread_id: str) -> bool:
        """Ask whoever drives this run now to stop; True if a running job was told."""

    async def start(self, handler: Handler) -> None:
        """Begin running jobs with ``handler`` (worker side; ingress-only processes don't)."""

    async def stop(self) -> None: ...

    async def drain(self, timeout: float = 30) -> None:
        """Wait until every queued job has run (tests, graceful shutdown)."""

    async def depth(self) -> dict[str, tuple[int, float]]:
        """``{lane: (jobs waiting, age of the oldest in seconds)}`` for lanes with jobs."""
        return {}


class LocalQueue(JobQueue):
    """Embedded mode: a priority queue and ``workers`` asyncio tasks in this process."""

    def __init__(self, workers: int = 4):
        self.workers = workers
        self._queue: asyncio.PriorityQueue[tuple[int, int, Job]] = asyncio.PriorityQueue()
        self._order = itertools.count()
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, asyncio.Task[None]] = {}  # run id -> the job task driving it
        self._waiting: dict[int, tuple[Lane, float]] = {}  # order -> lane, when queued

    async def defer(self, tx: Tx, job: Job) -> None:
        tx.after_commit(lambda: self.put(job))

    def put(self, job: Job) -> None:
        order = next(self._order)
        self._waiting[order] = (job.lane, time.time())
        self._queue.put_nowait((-PRIORITY[job.lane], order, job))

    async def depth(self) -> dict[str, tuple[int, float]]:
        now, lanes = time.time(), {}
        for lane, queued in self._waiting.values():
            jobs, age = lanes.get(lane.value, (0, 0.0))
            lanes[lane.value] = (jobs + 1, max(age, now - queued))
        return lanes

    async def abort(self, run_id: str, thread_id: str) -> bool:
        task = self._running.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def start(self, handler: Handler) -> None:
        self._tasks = [asyncio.create_task(self._work(handler), name=f"run-worker-{i}")
                       for i in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def drain(self, timeout: float = 30) -> None:
        await asyncio.wait_for(self._queue.join(), timeout)

    async def _work(self, handler: Handler) -> None:
        while True:
            _, order, job = await self._queue.get()
            self._waiting.pop(order, None)
            structlog.contextvars.clear_contextvars()
            task = asyncio.create_task(handler(job))
            self._running[job.run_id] = task
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # the worker itself is stopping (even as its job ends): stop the job too and
                # stop; otherwise the job was aborted and the worker goes on
                if asyncio.current_task().cancelling():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
            except Exception:  # noqa: BLE001 - a broken job must not kill the worker
                log.exception("run job failed")
            finally:
                if self._running.get(job.run_id) is task:
                    del self._running[job.run_id]
                self._queue.task_done()
