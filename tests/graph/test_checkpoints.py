"""The embedded checkpointer (``graph/checkpoints.py``): a run's checkpoints are written inline
on the event loop, and they are as durable as before: a run parked at its approval card is
resumed from the file by a new process's graph and its action runs once."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

from langgraph.types import Command

from graph.build import build_graph
from graph.checkpoints import sqlite_graphs
from graph.deps import GraphDeps
from graph.policy import parse_policy
from graph.records.sqlite import SqliteRecords
from graph.task import Source, Task
from sandbox.credentials import CredentialBroker
from tests.graph.test_agent import POLICY, CannedExecutor
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.redis import RedisConfig

_ids = itertools.count()


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that records each piece of work handed to another thread, and each
    callback another thread hands back (aiosqlite answers from its own thread that way)."""

    def __init__(self) -> None:
        super().__init__()
        self.hops: list[str] = []

    def run_in_executor(self, executor, func, *args):
        self.hops.append(f"to a thread: {func!r}")
        return super().run_in_executor(executor, func, *args)

    def call_soon_threadsafe(self, callback, *args, context=None):
        if threading.get_ident() != self._thread_id:
            self.hops.append(f"from {threading.current_thread().name}: {callback!r}")
        return super().call_soon_threadsafe(callback, *args, context=context)


def graph_over(tmp_path: Path, executor: CannedExecutor):
    deps = GraphDeps(
        catalog=Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")}),
        policy=parse_policy(POLICY), executor=executor, broker=CredentialBroker(None),
        audit=SqliteRecords(tmp_path / "audit.sqlite").audit)
    return sqlite_graphs(tmp_path / "checkpoints.sqlite", lambda saver: build_graph(deps, saver))


def typed(text: str) -> tuple[dict, dict]:
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="UREQ1", text=text,
                thread_ts=f"1.{next(_ids)}")
    config = {"configurable": {"thread_id": task.thread_id()}, "recursion_limit": 60}
    return config, {"run_id": f"r-{next(_ids):08d}", "task": task.model_dump(mode="json")}


def test_a_typed_run_never_leaves_the_event_loop(tmp_path):
    """Checkpoints and routing run on the loop: no thread round trip per statement or edge
    (``AsyncSqliteSaver`` answers from aiosqlite's thread; LangGraph runs a plain routing
    function in the executor)."""
    executor = CannedExecutor()

    async def typed_run():
        async with graph_over(tmp_path, executor) as graphs, graphs() as graph:
            config, inputs = typed("redis info section=memory")
            await graph.ainvoke(inputs, config, durability="sync")
            return await graph.aget_state(config)

    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        state = runner.run(typed_run())
        hops = runner.get_loop().hops
    assert executor.ran == ["redis info"]
    report = state.values["report"]
    assert report["state"] == "done" and report["calls"][0]["output"] == "info: fine"
    assert hops == []


async def test_a_run_parked_at_its_card_resumes_from_the_file_and_runs_once(tmp_path):
    executor = CannedExecutor()
    config, inputs = typed("redis flushdb")
    async with graph_over(tmp_path, executor) as graphs, graphs() as graph:
        await graph.ainvoke(inputs, config, durability="sync")
        (pending,) = (await graph.aget_state(config)).interrupts
    assert executor.ran == []

    async with graph_over(tmp_path, executor) as graphs, graphs() as graph:  # a new process
        (again,) = (await graph.aget_state(config)).interrupts
        assert again.id == pending.id
        decision = {"status": "approved", "by": ["UAPPR1"], "hash": again.value["review"]["hash"]}
        await graph.ainvoke(Command(resume={again.id: decision}), config, durability="sync")
        await graph.ainvoke(Command(resume={again.id: decision}), config, durability="sync")
        history = [s async for s in graph.aget_state_history(config)]
        assert executor.ran == ["redis flushdb"]
        assert len(history) > 3 and not (await graph.aget_state(config)).interrupts

        await graph.checkpointer.adelete_thread(config["configurable"]["thread_id"])
        assert [s async for s in graph.aget_state_history(config)] == []


def test_listing_a_threads_checkpoints_lets_other_drives_write_meanwhile(tmp_path):
    """A caller that awaits between the items of ``alist`` while another drive checkpoints:
    ``SqliteSaver.list`` holds its lock while it yields, so handing its generator out item by
    item would block the event loop's thread on that lock for good. (LangGraph's own
    ``aget_state_history`` reads the list whole first; a direct caller need not.)"""
    executor = CannedExecutor()

    async def interleaved() -> int:
        async with graph_over(tmp_path, executor) as graphs, graphs() as graph:
            config, inputs = typed("redis info")
            await graph.ainvoke(inputs, config, durability="sync")
            seen = 0
            async for _ in graph.checkpointer.alist(config):
                seen += 1
                other, more = typed("redis info section=memory")
                await graph.ainvoke(more, other, durability="sync")
            return seen

    outcome: list[int] = []
    worker = threading.Thread(target=lambda: outcome.append(asyncio.run(interleaved())),
                              daemon=True)  # a blocked loop thread would never end
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the loop's thread blocked on the saver's lock"
    assert outcome[0] > 3 and executor.ran.count("redis info") == outcome[0] + 1
