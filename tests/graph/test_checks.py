"""Check after acting (issue 14 item 7): after an approved ``redis del`` the run executes the
action's declared follow-up (``redis exists``, through policy, tier 0) against the real Redis
and reports whether the fix held, with the check's output as evidence.

The graph is the real one (real catalog, policy, audit log, real action code run through the
sandbox entrypoint's ``handle`` against a real redis-server); only Docker is left out, so the
test can act between the change and its check: ``Between`` re-creates the key right after the
``del`` ran, as a process writing it back would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from bot.blocks import report_message
from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.policy import parse_policy
from graph.records.sqlite import SqliteRecords
from graph.surface import Report
from graph.task import Source, Task
from sandbox.credentials import CredentialBroker
from sandbox.entrypoint import handle
from sandbox.protocol import SandboxOutcome, SandboxRequest
from tools import TOOLSETS
from tools.catalog import Catalog
from tools.redis import RedisConfig

POLICY = """\
version: 1
groups:
  sre: {users: [UAPPR1]}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
"""
NO_READS_HERE = POLICY + """\
rules:
  - name: no-reads
    match: {toolset: redis, action: exists}
    deny: "key checks are off in this channel."
"""
_ids = itertools.count()


class Between:
    """Runs the real action code in-process; ``after[action]()`` runs once that action has."""

    def __init__(self, after: dict[str, Callable[[], None]] | None = None):
        self.after = after or {}
        self.ran: list[str] = []

    async def run(self, request: SandboxRequest, on_progress=None) -> SandboxOutcome:
        result = await asyncio.to_thread(handle, request.wire(), lambda text: None)
        self.ran.append(f"{request.toolset} {request.action}")
        if not request.preview and request.action in self.after:
            self.after[request.action]()
        return SandboxOutcome(result=result)


async def deleted(tmp_path, redis_url: str, executor: Between, policy: str = POLICY):
    """``/ops redis del cache:stale``, approved by UAPPR1; the run's report."""
    records = SqliteRecords(tmp_path / f"audit-{next(_ids)}.sqlite")
    deps = GraphDeps(catalog=Catalog(TOOLSETS, {"redis": RedisConfig(url=redis_url)}),
                     policy=parse_policy(policy), executor=executor,
                     broker=CredentialBroker(None), audit=records.audit, limits=Limits())
    graph = build_graph(deps, InMemorySaver())
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="UREQ1",
                text="redis del cache:stale", thread_ts=f"1.{next(_ids)}")
    config = {"configurable": {"thread_id": task.thread_id()}, "recursion_limit": 60}
    await graph.ainvoke({"run_id": f"r-{next(_ids):08x}", "task": task.model_dump(mode="json")},
                        config)
    (pending,) = (await graph.aget_state(config)).interrupts
    decision = {"status": "approved", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)
    state = await graph.aget_state(config)
    return Report.model_validate(state.values["report"]), records


async def test_a_deleted_key_that_stays_gone_is_reported_fixed(tmp_path, redis_server, redis_db):
    redis_db.set("cache:stale", "v")
    executor = Between()
    report, records = await deleted(tmp_path, redis_server.url, executor)
    (call,) = report.calls
    assert call.status == "ok" and redis_db.exists("cache:stale") == 0
    assert executor.ran == ["redis del", "redis del", "redis exists"]  # preview, change, check
    assert call.check.verdict == "fixed" and call.check.held is True
    assert call.check.invocation == "EXISTS cache:stale"
    assert call.check.evidence == "0 of 1 keys exist."
    text = report_message(report)[0]["text"]
    assert "Check after acting: fixed" in text and "EXISTS = 0" in text
    reviews = [r["data"] for r in await records.audit.rows(("policy",))]
    assert [(r["call_id"].endswith(".check"), r["verdict"], r["tier"]) for r in reviews] == [
        (True, "allow", 0)]


async def test_a_key_written_back_after_the_delete_is_reported_not_fixed(
        tmp_path, redis_server, redis_db):
    redis_db.set("cache:stale", "v")
    executor = Between({"del": lambda: redis_db.set("cache:stale", "written back")})
    report, _ = await deleted(tmp_path, redis_server.url, executor)
    (call,) = report.calls
    assert call.status == "ok" and call.output == "Deleted 1 of 1 keys."
    assert call.check.verdict == "not fixed" and call.check.held is False
    assert call.check.evidence == "1 of 1 keys exist: cache:stale."
    assert "Check after acting: not fixed" in report_message(report)[0]["text"]


async def test_a_check_the_policy_refuses_is_not_run_and_not_called_fixed(
        tmp_path, redis_server, redis_db):
    redis_db.set("cache:stale", "v")
    executor = Between()
    report, _ = await deleted(tmp_path, redis_server.url, executor, NO_READS_HERE)
    (call,) = report.calls
    assert executor.ran == ["redis del", "redis del"]
    assert call.check.verdict == "not checked" and call.check.held is None
    assert "key checks are off in this channel." in call.check.note


@pytest.mark.parametrize("toolset", TOOLSETS, ids=lambda t: t.name)
def test_every_declared_check_is_a_read_only_action_of_the_same_toolset(toolset):
    for action in toolset.actions:
        if action.check is not None:
            probe = toolset.action(action.check.action)
            assert probe is not None and probe.tier == 0, (toolset.name, action.name)
