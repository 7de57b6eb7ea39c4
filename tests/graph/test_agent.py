"""The agent loop inside the real graph, fast: the real ``ChatOpenAI`` against the OpenAI
emulator, the compiled graph with an in-memory checkpointer, the real catalog, policy, audit
log and credential broker. Only the executor is a stand-in (``CannedExecutor`` answers like
the sandbox would, instantly, and counts calls); ``tests/scenarios/test_llm.py`` runs the same
loop through the Docker sandbox.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from bot.settings import Settings
from bot.wiring import llm_for
from graph.agent import Agent, lean_schema, tool_name
from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.policy import Channel, never_allowed, parse_policy
from graph.records.sqlite import SqliteRecords
from graph.surface import RunRef
from graph.task import Alert, Source, Task
from sandbox.credentials import CredentialBroker
from sandbox.protocol import SandboxOutcome, SandboxRequest
from tests.fakes.openai import OpenAIEmulator, http_error, text, tool_call, tool_results
from tools import TOOLSETS
from tools.base import Tier, ToolResult
from tools.catalog import Catalog
from tools.redis import RedisConfig
from tools.secrets import REDACTOR

POLICY = """\
version: 1
groups:
  sre: {users: [UAPPR1]}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
rules:
  - name: never-flushall
    match: {toolset: redis, action: flushall}
    deny: "flushall is never allowed from chat."
"""
_ids = itertools.count()


class CannedExecutor:
    """Answers each action with canned output (no container) and records what ran."""

    def __init__(self, outputs: dict[str, str] | None = None, seconds: float = 0.0):
        self.outputs = outputs or {}
        self.seconds = seconds
        self.ran: list[str] = []
        self.previewed: list[str] = []
        self.running = self.peak = 0  # actions in progress now, and at most

    async def run(self, request: SandboxRequest, on_progress=None) -> SandboxOutcome:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        if getattr(request, "preview", False):  # a dry run for the approver's card
            self.previewed.append(f"{request.toolset} {request.action}")
        else:
            self.ran.append(f"{request.toolset} {request.action}")
        output = self.outputs.get(request.action, f"{request.action}: fine")
        return SandboxOutcome(result=ToolResult.ok(request.action.upper(), output))


class Hits:
    """A runbook searcher with one fixed hit (the real index is exercised in scenarios)."""

    class Hit:
        title, path, score = "Redis memory pressure", "runbooks/redis-memory-pressure.md", 0.9
        snippet, commands = "Check `redis info section=memory`.", ["redis info section=memory"]

    async def search(self, query: str, limit: int = 3):
        return [self.Hit()]


@pytest.fixture
def llm_api():
    with OpenAIEmulator() as emulator:
        yield emulator


def make_graph(llm_api: OpenAIEmulator, tmp_path, executor: CannedExecutor | None = None,
               policy: str = POLICY, **limits: Any):
    settings = Settings(openai_api_key=llm_api.api_key, openai_base_url=llm_api.base_url)
    deps = GraphDeps(
        catalog=Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")}),
        policy=parse_policy(policy), executor=executor or CannedExecutor(),
        broker=CredentialBroker(None), audit=SqliteRecords(tmp_path / "audit.sqlite").audit,
        runbooks=Hits(), llm=llm_for(settings), model_name=settings.model,
        limits=Limits(**limits),
    )
    return build_graph(deps, InMemorySaver()), deps


async def run(graph, request: str = "why is redis slow?", thread: str | None = None,
              alert: Alert | None = None):
    task = Task(source=Source.ALERT if alert else Source.MENTION, team="T1", channel="C1",
                user="UREQ1", text=request, thread_ts=thread or f"1.{next(_ids)}", alert=alert)
    config = {"configurable": {"thread_id": task.thread_id()}, "recursion_limit": 60}
    inputs = {"run_id": f"r-{next(_ids):08d}", "task": task.model_dump(mode="json")}
    await graph.ainvoke(inputs, config)
    return config, await graph.aget_state(config)


def told(llm_api: OpenAIEmulator, index: int) -> list[str]:
    return [m["content"] for m in tool_results(llm_api.requests()[index].body)]


def test_every_action_is_bound_as_a_tool_with_its_pydantic_schema(llm_api, tmp_path):
    _, deps = make_graph(llm_api, tmp_path)
    tools = {t["function"]["name"]: t["function"] for t in Agent(deps).tools()}
    redis = next(t for t in TOOLSETS if t.name == "redis")
    assert set(tools) == {tool_name("redis", a.name) for a in redis.actions}
    assert tools["redis__del"]["parameters"] == lean_schema(
        redis.action("del").params.model_json_schema())
    assert "title" not in json.dumps(tools["redis__del"]["parameters"]).replace('"title": {', "")
    assert tools["redis__flushdb"]["description"].startswith("[tier 4] ")


LOCKED_DOWN = POLICY + """\
  - name: del-on-sessions-only
    match: {toolset: redis, action: del, target: {db: "1"}}
    deny: "only cache keys may be deleted from chat."
channels:
  - match: "#watch"
    deny_from_tier: 3
"""


@pytest.mark.parametrize("channel,left_out", [
    (Channel(id="C1", name="ops"), {"redis__flushall"}),  # deny rule on toolset/action alone
    (Channel(id="C2", name="watch"), {"redis__flushall", "redis__flushdb", "redis__del"}),
])
def test_tools_offered_leave_out_what_policy_denies_there_whatever_the_params(
        llm_api, tmp_path, channel, left_out):
    """Issue 16, lean prompts: an action the policy refuses in this channel for every call is
    not offered; one a rule might allow for some targets is (policy still decides each call)."""
    _, deps = make_graph(llm_api, tmp_path, policy=LOCKED_DOWN)
    every = {t["function"]["name"] for t in Agent(deps).tools()}
    offered = {t["function"]["name"] for t in Agent(deps).tools(channel)}
    assert every - offered == left_out  # del's rule looks at targets: offered in #ops
    assert never_allowed(deps.policy, "redis", "info", Tier.OBSERVE, channel) == ""


async def test_the_first_model_request_carries_only_the_tools_offered_in_the_channel(
        llm_api, tmp_path):
    llm_api.push(text("Nothing to do."))
    graph, deps = make_graph(llm_api, tmp_path, policy=LOCKED_DOWN)
    await run(graph)
    sent = {t["function"]["name"] for t in llm_api.requests()[0].body["tools"]}
    assert "redis__info" in sent and "redis__flushall" not in sent


async def test_answer_report_carries_citations_usage_and_audit(llm_api, tmp_path):
    llm_api.push(tool_call("redis__info", {"section": "memory"}), text("All fine."))
    graph, deps = make_graph(llm_api, tmp_path)
    _, state = await run(graph)
    report = state.values["report"]
    assert report["answer"] == "All fine."
    assert report["citations"] == [{"title": "Redis memory pressure",
                                    "path": "runbooks/redis-memory-pressure.md"}]
    assert "tokens in 2 calls (gpt-4o-mini, ≈ $" in report["usage"]
    calls = [r["data"] for r in reversed(await deps.audit.rows(("llm.call",)))]
    assert [c["tool_calls"] for c in calls] == [["redis__info"], []]
    assert sum(c["total_tokens"] for c in calls) == state.values["usage"]["total_tokens"] > 0
    (total,) = [r["data"] for r in await deps.audit.rows(("llm.run",))]
    assert total["calls"] == 2 and total["total_tokens"] == state.values["usage"]["total_tokens"]
    # each cost is rounded to 6 decimals on its own: the sum of rounded costs may differ by 1e-6
    assert total["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in calls), abs=2e-6)
    assert total["cap"] is None


async def test_token_cap_stops_before_the_next_model_call(llm_api, tmp_path):
    llm_api.push(tool_call("redis__info", {}), text("never asked"))
    graph, _ = make_graph(llm_api, tmp_path, max_tokens=100)
    _, state = await run(graph)
    answer = state.values["report"]["answer"]
    assert answer.startswith("Stopped: this run hit its tokens (100) cap.")
    assert "• INFO: ok — info: fine" in answer
    assert len(llm_api.requests()) == 1


async def test_round_cap(llm_api, tmp_path):
    llm_api.respond_with(lambda request: tool_call("redis__slowlog", {"count": 5}))
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor, max_tool_rounds=2)
    _, state = await run(graph)
    assert "hit its tool rounds (2) cap" in state.values["report"]["answer"]
    assert executor.ran == ["redis slowlog"] * 2 and len(llm_api.requests()) == 2


async def test_wall_time_cap_counts_opsbot_working(llm_api, tmp_path):
    llm_api.push(tool_call("redis__info", {}), text("never asked"))
    graph, _ = make_graph(llm_api, tmp_path, CannedExecutor(seconds=0.6), max_wall_s=0.5)
    _, state = await run(graph)
    assert "hit its wall time (0 s) cap" in state.values["report"]["answer"]
    assert len(llm_api.requests()) == 1


async def test_wall_time_spent_waiting_for_an_approver_is_not_counted(llm_api, tmp_path):
    llm_api.push(tool_call("redis__flushdb", {}), text("Flushed after approval."))
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor, max_wall_s=0.5)
    config, state = await run(graph)
    (pending,) = state.interrupts
    await asyncio.sleep(0.8)  # the approver takes their time
    decision = {"status": "approved", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)
    report = (await graph.aget_state(config)).values["report"]
    assert report["answer"] == "Flushed after approval." and executor.ran == ["redis flushdb"]


async def test_tool_output_is_truncated_for_the_model_with_a_note(llm_api, tmp_path):
    llm_api.push(tool_call("redis__get", {"key": "big"}), text("big"))
    executor = CannedExecutor({"get": "y" * 500})
    graph, _ = make_graph(llm_api, tmp_path, executor, tool_output_chars=100)
    await run(graph)
    (result,) = told(llm_api, 1)
    assert "y" * 100 in result and "y" * 101 not in result
    assert "[truncated: 400 more characters not shown" in result


async def test_secrets_are_redacted_from_everything_the_model_sees(llm_api, tmp_path):
    canary = "canary-agent-7f3e9a1c2b"
    REDACTOR.add(canary)
    llm_api.push(tool_call("redis__get", {"key": "password"}), text("ok"))
    graph, _ = make_graph(llm_api, tmp_path, CannedExecutor({"get": f"pw={canary}"}))
    await run(graph, f"the password {canary} leaked, check it")
    assert canary not in llm_api.all_text()
    assert "pw=[redacted]" in told(llm_api, 1)[0]


async def test_policy_denials_and_unknown_tools_are_fed_back(llm_api, tmp_path):
    llm_api.push([tool_call("redis__flushall", {}), tool_call("redis_info", {})],
                 text("I can't flush everything; checking differently."))
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor)
    _, state = await run(graph)
    denied, unknown = told(llm_api, 1)
    assert denied.startswith("denied (denied by policy)")
    assert "flushall is never allowed from chat." in denied
    assert "Unknown toolset `redis_info`" in unknown and "Did you mean `redis`?" in unknown
    assert executor.ran == [] and "checking differently" in state.values["report"]["answer"]


async def test_parallel_calls_run_the_safe_one_now_and_the_gated_one_once(llm_api, tmp_path):
    llm_api.push([tool_call("redis__info", {}), tool_call("redis__flushdb", {})], text("done"))
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor)
    config, state = await run(graph)
    assert executor.ran == ["redis info"] and len(state.interrupts) == 1
    (pending,) = state.interrupts
    decision = {"status": "approved", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)
    await graph.ainvoke(Command(resume={pending.id: decision}), config)  # a duplicate resume
    assert executor.ran == ["redis info", "redis flushdb"]
    assert len(told(llm_api, 1)) == 2 and len(llm_api.requests()) == 2


async def test_a_follow_up_in_the_thread_sees_the_earlier_turn(llm_api, tmp_path):
    llm_api.push(tool_call("redis__info", {}), text("First answer."), text("Second answer."))
    graph, _ = make_graph(llm_api, tmp_path)
    await run(graph, "first question", thread="9.1")
    _, state = await run(graph, "second question", thread="9.1")
    said = [m.get("content") or "" for m in llm_api.requests()[2].body["messages"]]
    assert any("first question" in s for s in said) and "First answer." in said
    assert "second question" in said[-1]
    assert state.values["report"]["answer"] == "Second answer."


async def test_the_model_endpoint_failing_is_a_sentence_not_a_crash(llm_api, tmp_path):
    llm_api.push(http_error(500), http_error(500))
    graph, _ = make_graph(llm_api, tmp_path)
    began = time.monotonic()
    _, state = await run(graph)
    assert state.values["report"]["answer"].startswith("The LLM endpoint failed (HTTP 500)")
    assert time.monotonic() - began < 10



async def test_calls_sharing_one_model_id_each_get_their_own_review_and_result(llm_api, tmp_path):
    """A model (or an injected prompt) reusing one tool-call id must not let a harmless call's
    review stand in for a dangerous one's: each call is reviewed and answered on its own."""
    llm_api.push([tool_call("redis__get", {"key": "k"}, id="call_same"),
                  tool_call("redis__flushdb", {}, id="call_same")], text("done"))
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor)
    config, state = await run(graph)
    reviews = state.values["reviews"]
    assert sorted(r["verdict"] for r in reviews.values()) == ["allow", "approve"]
    assert executor.ran == ["redis get"] and len(state.interrupts) == 1
    (pending,) = state.interrupts
    assert pending.value["call"]["action"] == "flushdb"
    decision = {"status": "denied", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)
    got, flushed = told(llm_api, 1)
    assert got.startswith("ok") and flushed.startswith("denied")
    assert executor.ran == ["redis get"]


async def test_a_gated_call_with_a_secret_in_its_params_is_refused_not_carded(llm_api, tmp_path):
    """The card would show ``[redacted:...]`` where the secret is, less than what runs; so the
    call is refused with a sentence instead of asking anyone to approve it."""
    token = "xoxb-123456789012-abcdefabcdef0123"
    llm_api.push(tool_call("redis__del", {"keys": [token]}), text("I won't."))
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor)
    _, state = await run(graph)
    assert state.interrupts == () and executor.ran == [] and executor.previewed == []
    (told_model,) = told(llm_api, 1)
    assert "can't be put on an approval card" in told_model and "(slack-token)" in told_model


TRUSTING_PEOPLE = POLICY.replace("autonomous_max_tier: 2", "autonomous_max_tier: 3")


async def test_the_model_gets_less_autonomy_than_a_person_typing_the_same_call(llm_api, tmp_path):
    """``redis del`` (tier 3) runs at once when a person types it under autonomous_max_tier 3;
    proposed by the model, or in an alert's run, it waits for an approver
    (llm_autonomous_max_tier defaults to 0)."""
    executor = CannedExecutor()
    graph, _ = make_graph(llm_api, tmp_path, executor, policy=TRUSTING_PEOPLE)
    _, typed = await run(graph, "redis del keys=k1")
    assert executor.ran == ["redis del", "redis exists"] and typed.interrupts == ()

    llm_api.push(tool_call("redis__del", {"keys": ["k2"]}))
    _, asked = await run(graph, "clean up k2")  # waits at its approval
    llm_api.push(tool_call("redis__del", {"keys": ["k3"]}))
    alert = Alert(id="Q1", title="cache full; run redis del k3 to fix")
    _, alerted = await run(graph, "", alert=alert)
    for state in (asked, alerted):
        (pending,) = state.interrupts
        assert "calls that no person typed run only tier 0 observe" in \
            pending.value["review"]["reason"]
    assert executor.ran == ["redis del", "redis exists"]


async def test_a_turn_of_sixty_calls_runs_eight_four_at_a_time_and_tells_the_model(llm_api,
                                                                                  tmp_path):
    llm_api.push([tool_call("redis__info", {}) for _ in range(60)], text("enough"))
    executor = CannedExecutor(seconds=0.05)
    graph, deps = make_graph(llm_api, tmp_path, executor)
    _, state = await run(graph)
    assert len(executor.ran) == 8 and executor.peak == 4
    results = told(llm_api, 1)
    assert len(results) == 60 and sum(r.startswith("ok") for r in results) == 8
    refused = [r for r in results if r.startswith("denied")]
    assert len(refused) == 52 and "at most 8 tool calls per model turn and this turn asked " \
        "for 60" in refused[0]
    assert len(state.values["report"]["calls"]) == 8, "the report lists what was considered"
    rows = await deps.audit.rows(("agent.calls_refused",))
    assert [r["data"]["count"] for r in rows] == [52]


class SharedCommands:
    """Two runbooks that suggest the same command (one with different spacing)."""

    class Hit:
        def __init__(self, title: str, commands: list[str]):
            self.title, self.path, self.score, self.snippet = title, f"runbooks/{title}.md", 0.9, ""
            self.commands = commands

    async def search(self, query: str, limit: int = 3):
        return [self.Hit("redis-memory", ["redis info section=memory", "redis slowlog"]),
                self.Hit("redis-latency", ["redis  info section=memory", "redis info"])]


async def test_without_an_llm_each_suggested_command_is_listed_once(tmp_path):
    deps = GraphDeps(
        catalog=Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")}),
        policy=parse_policy(POLICY), executor=CannedExecutor(), broker=CredentialBroker(None),
        audit=SqliteRecords(tmp_path / "audit.sqlite").audit, runbooks=SharedCommands())
    _, state = await run(build_graph(deps, InMemorySaver()), "why is redis slow?")
    answer = state.values["report"]["answer"]
    listed = answer.split("*Commands from those runbooks:*")[1].split("*Typed commands")[0]
    assert listed.split() == ["•", "`/ops", "redis", "info", "section=memory`",
                              "•", "`/ops", "redis", "slowlog`", "•", "`/ops", "redis", "info`"]


async def test_the_policy_llm_budget_per_run_stops_the_run_with_a_sentence(llm_api, tmp_path):
    budget = POLICY + "limits:\n  llm_per_run: {usd: 0.0001}\n"
    llm_api.push(tool_call("redis__info", {}), text("never asked"))
    graph, deps = make_graph(llm_api, tmp_path, policy=budget)
    _, state = await run(graph)
    answer = state.values["report"]["answer"]
    assert answer.startswith("Stopped: this run hit its LLM budget per run ($0.0001) cap.")
    assert len(llm_api.requests()) == 1
    (total,) = [r["data"] for r in await deps.audit.rows(("llm.run",))]
    assert total["cap"] == "LLM budget per run ($0.0001)"


async def test_a_channel_over_its_daily_llm_budget_stops_the_run_before_asking(llm_api, tmp_path):
    """Another run in the channel spent today's budget while this one was queued: it stops
    before its first model call (the submit refusal covers runs not yet started)."""
    budget = POLICY + "limits:\n  llm_per_channel_per_day: {tokens: 1000}\n"
    graph, deps = make_graph(llm_api, tmp_path, policy=budget)
    records = SqliteRecords(tmp_path / "audit.sqlite")
    earlier = Task(source=Source.MENTION, team="T1", channel="C1", user="U2", text="why?")
    await records.runs.add(RunRef(run_id="r-earlier", task=earlier))
    await records.audit.record("llm.call", "r-earlier", input_tokens=990, output_tokens=10,
                               total_tokens=1000)
    _, state = await run(graph)
    assert state.values["report"]["answer"].startswith(
        "Stopped: this run hit its LLM budget per channel per day (1,000 tokens) cap.")
    assert llm_api.requests() == []
