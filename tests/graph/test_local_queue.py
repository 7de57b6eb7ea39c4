"""The embedded queue's workers: stopping them always stops them (even when a job ends at the
very moment its worker is told to stop), and aborting a job leaves its worker working."""

import asyncio

from graph.queue import Job, JobKind, Lane, LocalQueue


def job(run_id: str) -> Job:
    return Job(JobKind.START, run_id, f"T1:C1:{run_id}", Lane.CHAT)


async def test_a_worker_cancelled_as_its_job_ends_stops():
    """What ``stop`` does — cancel each worker once — lands in the very step its job ends."""
    queue = LocalQueue(workers=1)

    async def handler(_: Job) -> None:
        for worker in workers():
            worker.cancel()  # as stop() does; this job then ends before its worker wakes

    await queue.start(handler)
    running = workers()
    queue.put(job("r-1"))
    try:  # without the fix, the worker swallowed its cancel and waited for the next job
        await asyncio.wait_for(asyncio.gather(*running, return_exceptions=True), 5)
    finally:
        await asyncio.wait_for(queue.stop(), 5)


async def test_an_aborted_job_leaves_its_worker_taking_the_next():
    queue = LocalQueue(workers=1)
    started, done = asyncio.Event(), []

    async def handler(j: Job) -> None:
        if j.run_id == "r-1":
            started.set()
            await asyncio.Event().wait()  # runs until aborted
        done.append(j.run_id)

    await queue.start(handler)
    try:
        queue.put(job("r-1"))
        await asyncio.wait_for(started.wait(), 5)
        assert await queue.abort("r-1", "T1:C1:r-1")
        queue.put(job("r-2"))
        await queue.drain(5)
    finally:
        await asyncio.wait_for(queue.stop(), 5)
    assert done == ["r-2"]


def workers() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("run-worker-")]
