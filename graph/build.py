"""Wiring the nodes into a compiled LangGraph graph.

Node names are a persisted schema: a thread paused in a node that no longer exists is silently
orphaned (LangGraph guide §1.5). Never rename a node without draining paused runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graph import tracing
from graph.agent import Agent
from graph.deps import GraphDeps
from graph.nodes import GraphState, Nodes


def build_graph(deps: GraphDeps, checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
    nodes = Nodes(deps)
    agent = Agent(deps)
    g = StateGraph(GraphState)

    def add(name: str, work, **kw) -> None:  # each node runs in a span of the run's trace
        g.add_node(name, tracing.node(name, work), **kw)

    add("understand", nodes.understand)
    add("agent", agent.step)
    add("no_llm", nodes.no_llm)
    add("policy", nodes.policy)
    add("preview", nodes.preview, destinations=("approval",))
    add("approval", nodes.approval, destinations=("execute", "observe"))
    add("execute", nodes.execute)
    add("observe", nodes.observe)
    add("report", nodes.report)

    g.add_edge(START, "understand")
    g.add_conditional_edges("understand", on_loop(nodes.after_understand),
                            ["policy", "report", "agent", "no_llm"])
    g.add_conditional_edges("agent", on_loop(agent.route), ["policy", "report"])
    g.add_edge("no_llm", "report")
    g.add_conditional_edges("policy", on_loop(nodes.fan_out),
                            ["preview", "approval", "execute", "observe"])
    g.add_edge("execute", "observe")
    g.add_conditional_edges("observe", on_loop(nodes.after_observe), ["agent", "report", END])
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)


def on_loop(route: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A routing function as a coroutine: an async graph runs a plain function in a thread pool,
    a round trip through another thread for a few dict lookups (one per edge taken)."""

    @functools.wraps(route)
    async def routed(state: Any) -> Any:
        return route(state)

    return routed
