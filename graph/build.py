"""Wiring the nodes into a compiled LangGraph graph.

Node names are a persisted schema: a thread paused in a node that no longer exists is silently
orphaned (LangGraph guide §1.5). Never rename a node without draining paused runs.
"""

from __future__ import annotations

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graph.agent import Agent
from graph.deps import GraphDeps
from graph.nodes import GraphState, Nodes


def build_graph(deps: GraphDeps, checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
    nodes = Nodes(deps)
    agent = Agent(deps)
    g = StateGraph(GraphState)
    g.add_node("understand", nodes.understand)
    g.add_node("agent", agent.step)
    g.add_node("no_llm", nodes.no_llm)
    g.add_node("policy", nodes.policy)
    g.add_node("preview", nodes.preview, destinations=("approval",))
    g.add_node("approval", nodes.approval, destinations=("execute", "observe"))
    g.add_node("execute", nodes.execute)
    g.add_node("observe", nodes.observe)
    g.add_node("report", nodes.report)

    g.add_edge(START, "understand")
    g.add_conditional_edges("understand", nodes.after_understand,
                            ["policy", "report", "agent", "no_llm"])
    g.add_conditional_edges("agent", agent.route, ["policy", "report"])
    g.add_edge("no_llm", "report")
    g.add_conditional_edges("policy", nodes.fan_out, ["preview", "approval", "execute", "observe"])
    g.add_edge("execute", "observe")
    g.add_conditional_edges("observe", nodes.after_observe, ["agent", "report", END])
    g.add_edge("report", END)
    return g.compile(checkpointer=checkpointer)
