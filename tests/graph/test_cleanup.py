"""Credential revocation off the answer's critical path (issue 16), in-process and fast: the
real run manager, driver, graph, records (SQLite), catalog, policy and credential broker; the
executor answers at once and the surface records what was posted. The broker's revocation is
held until the test lets it go, which is how "the answer did not wait for it" is observed."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from langgraph.checkpoint.memory import InMemorySaver

from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.driver import Driver
from graph.lease import LocalLease
from graph.policy import Policy
from graph.queue import LocalQueue
from graph.records.sqlite import SqliteRecords
from graph.runs import RunManager
from graph.surface import Report, RunRef, RunState
from graph.task import Source, Task
from sandbox.credentials import CredentialBroker
from tests.fakes.server import wait_until
from tests.graph.test_agent import CannedExecutor
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.redis import RedisConfig


class HeldBroker:
    """The real broker, whose revocations wait until ``release`` is set."""

    def __init__(self) -> None:
        self.broker = CredentialBroker(None)
        self.release = asyncio.Event()
        self.revoking = asyncio.Event()

    async def mint(self, run_id, call_id, secrets, ttl_s):
        return await self.broker.mint(run_id, call_id, secrets, ttl_s)

    async def revoke(self, lease) -> None:
        self.revoking.set()
        await self.release.wait()
        await self.broker.revoke(lease)


class RecordingSurface:
    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def open_run(self, run: RunRef, checklist) -> RunRef:
        return run.model_copy(update={"thread_ts": "1.1", "status_ts": "1.2"})

    async def progress(self, run, checklist, final: bool = False) -> None:
        return None

    async def ask_approval(self, run, request):
        raise AssertionError("a tier-0 action asks no one")

    async def update_approval(self, run, request) -> None:
        return None

    async def report(self, run, report: Report) -> None:
        self.reports.append(report)

    async def say(self, run, text: str) -> None:
        return None

    async def refused(self, task, text: str) -> None:
        raise AssertionError(text)


@asynccontextmanager
async def in_process(tmp_path, surface, broker=None, policy: Policy | None = None,
                     workers: int = 1):
    """The real run manager, driver, graph, SQLite records, catalog (a Redis) and policy, with
    ``surface``; yields the manager, records, queue and graph deps, and stops them after."""
    records = SqliteRecords(tmp_path / "opsbot.sqlite")
    queue = LocalQueue(workers)
    deps = GraphDeps(catalog=Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")}),
                     policy=policy or Policy(), executor=CannedExecutor(),
                     broker=broker or CredentialBroker(None), audit=records.audit,
                     executions=records.executions, limits=Limits())
    graph = build_graph(deps, InMemorySaver())
    manager = RunManager(records, queue, surface)

    @asynccontextmanager
    async def graphs():
        yield graph

    driver = Driver(graphs, records, queue, LocalLease(), surface, manager.desk,
                    manager.checklists, cleanup=deps.cleanup)
    await queue.start(driver.handle)
    try:
        yield manager, records, queue, deps
    finally:
        if isinstance(broker, HeldBroker):
            broker.release.set()
        await queue.stop()
        await deps.cleanup.close()
        await records.close()


async def test_the_answer_does_not_wait_for_revocation_and_the_run_ends_only_after_it(tmp_path):
    broker, surface = HeldBroker(), RecordingSurface()
    async with in_process(tmp_path, surface, broker) as (manager, records, queue, deps):
        run = await manager.submit(Task(source=Source.CONSOLE, team="T0", channel="C0", user="U0",
                                        text="redis info section=server"))
        await wait_until(lambda: surface.reports, 10, lambda: "no report")

        # the answer is out while the revocation is still under way
        assert surface.reports[0].state is RunState.DONE
        assert broker.revoking.is_set() and deps.cleanup.pending(run.run_id) == 1
        kinds = [r["kind"] for r in await records.audit.story(run.run_id)]
        assert "credential.lease" in kinds and "credential.revoke" not in kinds
        assert (await records.runs.row(run.run_id)).state is RunState.RUNNING, \
            "the run is recorded as ended only once its credentials are revoked"
        # were the process killed now, the next start would find the lease open and revoke it
        open_rows = await records.audit.open_leases(datetime.now(UTC) - timedelta(minutes=1))
        assert [r["run_id"] for r in open_rows] == [run.run_id]

        broker.release.set()
        await queue.drain()
        row = await records.runs.row(run.run_id)
        story = await records.audit.story(run.run_id)
        still_open = await records.audit.open_leases(datetime.now(UTC) - timedelta(minutes=1))

    assert row.state is RunState.DONE
    revoked = [r["data"] for r in story if r["kind"] == "credential.revoke"]
    assert len(revoked) == 1 and revoked[0]["revoked_at"]
    kinds = [r["kind"] for r in story]
    assert kinds.index("credential.revoke") < kinds.index("report")
    assert still_open == []
