"""What opsbot's agent loop costs per tool round, against a bare LangGraph tool loop.

Run from the repository root::

    .venv/bin/python bench/agent_bench.py [--runs 40] [--rounds 5] [--sandbox] [--first-request]
    .venv/bin/python bench/agent_bench.py --e2e 20 [--streaming] [--slack-latency 50]

Both loops get the same model, the same tool calls and the same executor, in the same process,
interleaved run by run so machine noise hits them alike:

* **bare**: the textbook LangGraph loop: ``agent`` (model with tools bound) → ``tools`` (run every
  call of the last AI message, append ``ToolMessage``s) → ``agent`` …, with an in-memory
  checkpointer;
* **opsbot**: ``graph/build.py`` as the bot runs it (understand → agent → policy → Send per
  call → execute → observe → agent … → report), with the real catalog, policy engine, audit
  log (SQLite file), credential broker (no Vault: no secrets needed), redaction, caps and
  usage accounting, and an in-memory checkpointer. Both are driven the way ``RunManager``
  drives a run (``astream`` of updates + custom events, ``durability="sync"``).

Models: ``instant`` is an in-process chat model that answers from the script at once (pure
orchestration overhead); ``http`` is the real ``ChatOpenAI`` talking to the OpenAI emulator
(``tests/fakes/openai.py``) on loopback, which adds the client's own cost to both loops.

Executor: a stand-in that returns a canned ``ToolResult`` at once, because the sandbox would
otherwise dominate both loops equally. ``--sandbox`` measures the real thing separately: one
``redis info`` through the Docker sandbox (warm pool) against a private redis-server, so the
overhead can be set against what a round really costs.

A run is ``rounds`` tool rounds (one or three parallel ``redis__info`` calls each) plus the
final answer; per-round cost = (median run with ``rounds`` rounds − median run with none) /
``rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.policy import Policy
from graph.records.sqlite import SqliteRecords
from graph.task import Source, Task
from sandbox.credentials import CredentialBroker
from sandbox.protocol import SandboxOutcome, SandboxRequest
from tools import TOOLSETS
from tools.base import ToolResult
from tools.catalog import Catalog
from tools.redis import RedisConfig

USAGE = {"input_tokens": 900, "output_tokens": 40, "total_tokens": 940}
OUTPUT = "# Memory\nused_memory:1048576\nused_memory_human:1.00M\nmaxmemory:0\n" * 4
_ids = itertools.count()


# the shared pieces ---------------------------------------------------------------------------


def script(rounds: int, width: int) -> Callable[[list[Any]], AIMessage]:
    """The model's next message given the conversation: ``rounds`` tool rounds, then an answer."""

    def next_message(messages: list[Any]) -> AIMessage:
        done = sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)
        if done >= rounds:
            return AIMessage("Memory is fine.", usage_metadata=USAGE)
        calls = [{"name": "redis__info", "args": {"section": "memory"},
                  "id": f"call_{next(_ids)}", "type": "tool_call"} for _ in range(width)]
        return AIMessage("", tool_calls=calls, usage_metadata=USAGE)

    return next_message


class InstantModel:
    """Answers from ``script`` at once; ``bind_tools`` returns itself, as a bound model would."""

    def __init__(self, rounds: int, width: int):
        self.next_message = script(rounds, width)

    def bind_tools(self, tools: list[Any], **kwargs: Any) -> InstantModel:
        return self

    async def ainvoke(self, messages: list[Any], **kwargs: Any) -> AIMessage:
        return self.next_message(messages)


class InstantExecutor:
    """The sandbox stand-in: a canned result at once (the real one is measured separately)."""

    async def run(self, request: SandboxRequest, on_progress=None) -> SandboxOutcome:
        return SandboxOutcome(result=ToolResult.ok("INFO memory", OUTPUT))


# the bare LangGraph loop -----------------------------------------------------------------------


class BareState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def bare_graph(model: Any, executor: Any, tools: list[dict[str, Any]]) -> CompiledStateGraph:
    async def agent(state: BareState) -> dict[str, Any]:
        return {"messages": [await model.bind_tools(tools).ainvoke(state["messages"])]}

    async def run_tools(state: BareState) -> dict[str, Any]:
        calls = state["messages"][-1].tool_calls

        async def one(call: dict[str, Any]) -> ToolMessage:
            toolset, _, action = call["name"].partition("__")
            request = SandboxRequest(run_id="bare", call_id=call["id"], toolset=toolset,
                                     action=action, params=call["args"])
            outcome = await executor.run(request)
            return ToolMessage(outcome.result.text, tool_call_id=call["id"])

        return {"messages": list(await asyncio.gather(*(one(c) for c in calls)))}

    g = StateGraph(BareState)
    g.add_node("agent", agent)
    g.add_node("tools", run_tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", lambda s: "tools" if s["messages"][-1].tool_calls else END,
                            ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


# opsbot's loop ---------------------------------------------------------------------------------


def opsbot_graph(model: Any, executor: Any, data_dir: Path) -> tuple[CompiledStateGraph, Any]:
    deps = GraphDeps(
        catalog=Catalog(TOOLSETS, {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")}),
        policy=Policy(), executor=executor, broker=CredentialBroker(None),
        audit=SqliteRecords(data_dir / "audit.sqlite").audit, runbooks=None, llm=model,
        model_name="gpt-4o-mini", limits=Limits(max_tool_rounds=50),
    )
    return build_graph(deps, InMemorySaver()), deps


def tools_of(graph_deps: Any) -> list[dict[str, Any]]:
    from graph.agent import Agent

    return Agent(graph_deps).tools()


# driving -------------------------------------------------------------------------------------


async def drive(graph: CompiledStateGraph, inputs: dict[str, Any]) -> float:
    config = {"configurable": {"thread_id": f"T1:C1:{next(_ids)}"}, "recursion_limit": 500}
    began = time.perf_counter()
    async for _ in graph.astream(inputs, config, stream_mode=["updates", "custom"], version="v2",
                                 durability="sync"):
        pass
    return time.perf_counter() - began


def opsbot_inputs() -> dict[str, Any]:
    task = Task(source=Source.MENTION, team="T1", channel="C1", user="U1",
                text="why is redis slow?", thread_ts="1.1")
    return {"run_id": f"r-{next(_ids):08x}", "task": task.model_dump(mode="json")}


def bare_inputs() -> dict[str, Any]:
    return {"messages": [HumanMessage("why is redis slow?")]}


def make_model(kind: str, rounds: int, width: int, emulator: Any) -> Any:
    if kind == "instant":
        return InstantModel(rounds, width)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="gpt-4o-mini", api_key=emulator.api_key, base_url=emulator.base_url,
                      use_responses_api=False, max_retries=0, timeout=10)


def emulator_script(rounds: int, width: int) -> Callable[[dict[str, Any]], Any]:
    from tests.fakes.openai import text, tool_call

    def answer(request: dict[str, Any]) -> Any:
        done = sum(1 for m in request["messages"]
                   if m["role"] == "assistant" and m.get("tool_calls"))
        if done >= rounds:
            return text("Memory is fine.")
        return [tool_call("redis__info", {"section": "memory"}) for _ in range(width)]

    return answer


async def measure(kind: str, rounds: int, width: int, runs: int, data_dir: Path
                  ) -> dict[str, dict[int, list[float]]]:
    """Seconds per run for each loop, with ``rounds`` rounds and with none, interleaved."""
    from tests.fakes.openai import OpenAIEmulator

    times: dict[str, dict[int, list[float]]] = {"bare": {0: [], rounds: []},
                                                "opsbot": {0: [], rounds: []}}
    executor = InstantExecutor()
    for n in (0, rounds):
        served = OpenAIEmulator(emulator_script(n, width)) if kind == "http" else nullcontext()
        with served as emulator:
            model = make_model(kind, n, width, emulator)
            ops, deps = opsbot_graph(model, executor, data_dir)
            bare = bare_graph(model, executor, tools_of(deps))
            for _ in range(3):  # warm-up
                await drive(ops, opsbot_inputs())
                await drive(bare, bare_inputs())
            for _ in range(runs):
                times["opsbot"][n].append(await drive(ops, opsbot_inputs()))
                times["bare"][n].append(await drive(bare, bare_inputs()))
    return times


def per_round(samples: dict[int, list[float]], rounds: int) -> tuple[float, float]:
    """(median run with ``rounds`` rounds, per-round cost) in milliseconds."""
    full = statistics.median(samples[rounds])
    empty = statistics.median(samples[0])
    return full * 1000, (full - empty) / rounds * 1000


async def sandbox_round(samples: int) -> float | None:
    """Median ms of one real ``redis info`` through the Docker sandbox (warm pool)."""
    from sandbox.config import SandboxConfig
    from sandbox.image import build_image
    from sandbox.runner import SandboxRunner
    from tests.services.redis import start_redis

    with tempfile.TemporaryDirectory() as tmp:
        proc, server = start_redis(Path(tmp))
        runner = await SandboxRunner.start(SandboxConfig(image=build_image(log=lambda s: None),
                                                         instance=f"bench{next(_ids)}",
                                                         warm_pool=2))
        try:
            config = RedisConfig(url=server.url)
            took = []
            for i in range(samples):
                request = SandboxRequest(run_id="bench", call_id=f"c{i}", toolset="redis",
                                         action="info", params={"section": "memory"},
                                         config=config.model_dump(mode="json"),
                                         egress=[{"host": config.host, "port": config.port}])
                await runner.settle()  # a chat's pace: the last box removed, the pool refilled
                await runner.pool.wait_ready()
                began = time.perf_counter()
                outcome = await runner.run(request)
                took.append(time.perf_counter() - began)
                assert outcome.result.status.value == "ok", outcome.result.error
            return statistics.median(took) * 1000
        finally:
            await runner.close()
            proc.terminate()


async def first_request(data_dir: Path) -> None:
    """Issue 16, lean prompts: bytes (and estimated tokens, ~4 bytes each: no tokenizer is
    available offline) of an investigation's first model request as opsbot sends it, with one
    toolset configured and with every toolset configured, and how much of it the tools are."""
    from tests.fakes.openai import OpenAIEmulator, text

    configs = {"redis": RedisConfig(url="redis://10.0.0.5:6379/0")}
    every = {**configs, **every_config()}
    print("\nfirst model request of an investigation (the http model, one answer, no tool round):")
    print(f"{'configured':24} {'tools':>5} {'bytes':>7} {'≈tokens':>8} {'tools bytes':>12}")
    for label, chosen in (("redis only", configs), ("every toolset", every)):
        with OpenAIEmulator([text("fine")]) as emulator:
            model = make_model("http", 0, 1, emulator)
            deps = GraphDeps(catalog=Catalog(TOOLSETS, chosen), policy=Policy(),
                             executor=InstantExecutor(), broker=CredentialBroker(None),
                             audit=SqliteRecords(data_dir / f"{len(chosen)}.sqlite").audit,
                             llm=model, model_name="gpt-4o-mini")
            await drive(build_graph(deps, InMemorySaver()), opsbot_inputs())
            body = emulator.requests()[0].body
        size = len(json.dumps(body, separators=(",", ":")).encode())
        tools = len(json.dumps(body.get("tools", []), separators=(",", ":")).encode())
        print(f"{label:24} {len(body.get('tools', [])):>5} {size:>7} {size // 4:>8} {tools:>12}")


def every_config() -> dict[str, Any]:
    """A minimal valid config for every registered toolset whose config needs no file."""
    from pydantic import ValidationError

    configs: dict[str, Any] = {}
    samples = {"url": "http://10.0.0.9:1", "region": "eu-west-1", "account": "123456789012"}
    for toolset in TOOLSETS:
        model = toolset.config
        try:
            configs[toolset.name] = model.model_validate(
                {k: v for k, v in samples.items() if k in model.model_fields})
        except (ValidationError, AttributeError, TypeError):
            continue
    return configs


# end to end: a mention answered in Slack ----------------------------------------------------


async def end_to_end(samples: int, slack_latency_s: float = 0.0, streaming: bool = False
                     ) -> None:
    """Issue 16: ``@opsbot`` → the answer in the thread (one tool round, instant model), against
    the bare loop with the same model (the same emulator) calling the same tool in the same
    warm sandbox, sample by sample. ``slack_latency_s`` delays each of the bot's Slack Web API
    calls (the bare loop makes none). ``streaming``: the workspace streams (Agents & AI Apps),
    so the answer arrives in the run's streamed message (``chat.appendStream`` or
    ``chat.stopStream``) instead of a report message."""
    from langchain_openai import ChatOpenAI

    from tests.fakes.openai import OpenAIEmulator
    from tests.fakes.slack import SlackEmulator
    from tests.scenarios.harness import CHANNEL, harness, settings_for
    from tests.scenarios.llm_harness import mention
    from tests.services.redis import start_redis

    with (tempfile.TemporaryDirectory() as tmp, SlackEmulator() as slack,
          OpenAIEmulator(emulator_script(1, 1)) as llm):
        if slack_latency_s:
            for method in SLACK_WRITES:
                slack.delay(method, slack_latency_s)
        proc, redis = start_redis(Path(tmp))
        settings = settings_for(slack, redis.url, Path(tmp) / "data", workers=4,
                                openai_api_key=llm.api_key, openai_base_url=llm.base_url)
        try:
            async with harness(settings, slack, status_interval=1.0, streaming=streaming) as h:
                sandbox = h.bot.runtime.sandbox
                model = ChatOpenAI(model="gpt-4o-mini", api_key=llm.api_key,
                                   base_url=llm.base_url, use_responses_api=False,
                                   max_retries=0, timeout=10)
                bare = bare_graph(model, RedisSandbox(sandbox, redis.url),
                                  tools_of(opsbot_graph(model, InstantExecutor(), Path(tmp))[1]))
                times: dict[str, list[float]] = {"bare": [], "opsbot": []}
                for i in range(samples + 3):  # the first three warm both up
                    await sandbox.settle()
                    await sandbox.pool.wait_ready()
                    took = {"opsbot": await answered(h, slack, CHANNEL, mention, streaming),
                            "bare": await drive(bare, bare_inputs())}
                    for key, value in took.items():
                        if i >= 3:
                            times[key].append(value)
                load = os.getloadavg()[0]
        finally:
            proc.terminate()
    base = statistics.median(times["bare"])
    latency = f", Slack answering in {slack_latency_s * 1000:g} ms" if slack_latency_s else ""
    path = ", streamed" if streaming else ""
    print(f"\nmention → answer in the thread, one tool round, instant model, warm sandbox"
          f"{latency}{path} ({samples} samples, load {load:.1f}):")
    print(f"{'loop':34} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    for key, label in (("bare", "bare LangGraph loop (same tool)"),
                       ("opsbot", "opsbot: @mention → answer posted")):
        values = times[key]
        print(f"{label:34} {statistics.median(values) * 1000:8.1f} "
              f"{sorted(values)[min(len(values) - 1, int(len(values) * 0.99))] * 1000:8.1f} "
              f"{statistics.median(values) / base:5.2f}x")


STREAM_WRITES = ("chat.appendStream", "chat.stopStream")
SLACK_WRITES = ("chat.postMessage", "chat.update", "reactions.add", "reactions.remove",
                "chat.startStream", "chat.appendStream", "chat.stopStream")


class RedisSandbox:
    """The bot's own sandbox runner as the bare loop's executor: the same warm pool, the same
    ``redis info`` against the same server (the bare loop names no target, so this adds it)."""

    def __init__(self, runner: Any, url: str):
        self.runner, self.config = runner, RedisConfig(url=url)

    async def run(self, request: SandboxRequest, on_progress=None) -> SandboxOutcome:
        return await self.runner.run(SandboxRequest(**{
            **request.model_dump(), "config": self.config.model_dump(mode="json"),
            "egress": [{"host": self.config.host, "port": self.config.port}]}))


async def answered(h: Any, slack: Any, channel: str, mention: Callable[..., Any],
                   streaming: bool = False) -> float:
    """Seconds from posting ``@opsbot`` to Slack receiving the message with the answer (or,
    ``streaming``, the stream call that carries it)."""
    seen = len(slack.calls())  # every call before this one's mention
    began = time.monotonic()
    thread = await mention(h, "why is redis slow?")
    methods = STREAM_WRITES if streaming else ("chat.postMessage",)

    def ours(call: Any) -> bool:
        if not streaming:
            return call.params.get("thread_ts") == thread
        return call.params.get("ts") in {m.ts for m in slack.streams(channel, thread)}

    def landed() -> float | None:
        """Looks at each call once (this poll runs on the bot's own thread every 2 ms: its
        cost is the bot's delay)."""
        nonlocal seen
        new = slack.calls_from(seen)
        seen += len(new)
        return next((c.at for c in new if c.method in methods
                     and "Memory is fine." in json.dumps(c.params) and ours(c)), None)

    while (at := landed()) is None:
        if time.monotonic() - began > 30:
            raise SystemExit(f"no answer in thread {thread} after 30 s: {slack.describe()}")
        await asyncio.sleep(0.002)
    await h.bot.runtime.runs.drain(30)  # the run's tail (status edit, revocation) before the next
    return at - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sandbox", action="store_true",
                        help="also time the real Docker sandbox per call (needs Docker, root)")
    parser.add_argument("--first-request", action="store_true",
                        help="only the size of an investigation's first model request")
    parser.add_argument("--e2e", type=int, default=0, metavar="SAMPLES",
                        help="only @mention → answer in Slack against the bare loop (needs "
                             "Docker, root)")
    parser.add_argument("--slack-latency", type=float, default=0.0, metavar="MS",
                        help="with --e2e: every Slack Web API call the bot makes answers this "
                             "much later, as a real workspace does (the emulator answers at "
                             "once otherwise)")
    parser.add_argument("--streaming", action="store_true",
                        help="with --e2e: the workspace streams, and the answer arrives in the "
                             "run's streamed message (the default path where Slack allows it)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.first_request:
        await first_request(Path(tempfile.mkdtemp()))
        return
    if args.e2e:
        await end_to_end(args.e2e, args.slack_latency / 1000, args.streaming)
        return
    print(f"{args.runs} runs per cell, {args.rounds} tool rounds per run, interleaved\n")
    print(f"{'model':8} {'calls/round':>11} {'loop':7} {'run p50 ms':>11} {'per round ms':>13} "
          f"{'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("instant", "http"):
            for width in (1, 3):
                times = await measure(kind, args.rounds, width, args.runs, Path(tmp))
                bare_run, bare_round = per_round(times["bare"], args.rounds)
                ops_run, ops_round = per_round(times["opsbot"], args.rounds)
                print(f"{kind:8} {width:>11} {'bare':7} {bare_run:>11.1f} {bare_round:>13.2f}")
                print(f"{kind:8} {width:>11} {'opsbot':7} {ops_run:>11.1f} {ops_round:>13.2f} "
                      f"{ops_round / bare_round:>5.1f}x")
    await first_request(Path(tempfile.mkdtemp()))
    if args.sandbox:
        ms = await sandbox_round(10)
        print(f"\nreal sandbox, one `redis info` per call (warm pool): p50 {ms:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
