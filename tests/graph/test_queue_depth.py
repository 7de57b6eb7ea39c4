"""Queue depth per lane, as the metrics read it at scrape time: the embedded queue's jobs in
memory, or procrastinate's ``todo`` rows in PostgreSQL (a job leaves the count once taken)."""

import asyncio

from graph.pgqueue import PgQueue, WorkerTuning
from graph.queue import Job, JobKind, Lane, LocalQueue
from tests.graph.test_records import run


def jobs() -> list[Job]:
    return [Job(JobKind.START, "r-1", "T1:C1:1.0", Lane.CHAT),
            Job(JobKind.START, "r-2", "T1:C1:2.0", Lane.CHAT),
            Job(JobKind.START, "r-3", "T1:C2:1.0", Lane.INCIDENT)]


async def defer_all(records, queue) -> None:
    for job in jobs():
        await records.runs.add(run(job.run_id, job.thread_id.rsplit(":", 1)[1]))
        async with records.transaction() as tx:
            await queue.defer(tx, job)


async def test_depth_counts_waiting_jobs_per_lane_in_both_modes(records):
    if records.mode == "sqlite":
        queue = LocalQueue(workers=1)
    else:
        queue = PgQueue(records.pool.conninfo, WorkerTuning(concurrency=1, graceful_s=0.5))
        await queue.open()
    try:
        assert await queue.depth() == {}
        await defer_all(records, queue)
        depth = await queue.depth()
        assert {lane: jobs for lane, (jobs, _) in depth.items()} == {"chat": 2, "incident": 1}
        assert all(0 <= age < 60 for _, age in depth.values())
        taken = asyncio.Event()

        async def handler(job: Job) -> None:
            taken.set()
            await asyncio.Event().wait()  # holds the job: it is no longer waiting

        await queue.start(handler)
        await asyncio.wait_for(taken.wait(), 30)
        async with asyncio.timeout(30):
            while sum(n for n, _ in (await queue.depth()).values()) != 2:
                await asyncio.sleep(0.05)
    finally:
        await (queue.stop() if records.mode == "sqlite" else queue.close())
