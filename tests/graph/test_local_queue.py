"""The embedded queue's workers: stopping them always stops them (even when a job ends at the
very moment its worker is told to stop), and aborting a job leaves its worker working."""

import asyncio

from graph.queue import Job, JobKind, Lane, LocalQueue


def job(run_id: str) -> Job:
    return Job(JobKind.START, run_id, f"T1:C1:{run_id}", Lane.CHAT)


async def test_stop_stops_a_worker_whose_job_ends_as_it_is_cancelled():
    queue = LocalQueue(workers=1)
    stopping: list[asyncio.Task] = []

    async def handler(_: Job) -> None:
        stopping.append(asyncio.ensure_future(queue.stop()))
        await asyncio.sleep(0)  # stop cancels the worker; then this job ends, in that order

    await queue.start(handler)
    queue.put(job("r-1"))
    await asyncio.wait_for(_first(stopping), 5)
    await asyncio.wait_for(stopping[0], 5)  # without the fix, the worker swallowed its cancel


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


async def _first(items: list) -> None:
    while not items:
        await asyncio.sleep(0.01)
