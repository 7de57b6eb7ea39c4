"""Issue 13, traces: a run with a model, a read, a gated action and its approval is one trace at
a local OTLP receiver — from the Slack request through the queue, the graph's nodes, policy,
the approval wait, credentials and the sandbox to the report — with GenAI spans and
attributes, the trace id on the run's audit rows and log lines, and neither the prompt's text
nor a canary secret in any attribute.
"""

from __future__ import annotations

import io
import json
import secrets
from collections import Counter

import pytest
import structlog

from bot import logs, telemetry
from bot.settings import Settings
from graph import tracing
from tests.fakes.openai import text, tool_call
from tests.fakes.otlp import OtlpReceiver, Span
from tests.scenarios.harness import APPROVER
from tests.scenarios.llm_harness import mention, running_llm_bot
from tests.scenarios.process import AuditFile
from tools.secrets import REDACTOR

SERVER, CONSUMER = 2, 5  # OTLP span kinds


@pytest.fixture
def otlp():
    with OtlpReceiver() as receiver:
        yield receiver


def by_id(spans: list[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


def parent(span: Span, spans: list[Span]) -> Span | None:
    return by_id(spans).get(span.parent_id)


@pytest.mark.docker
async def test_one_run_is_one_trace_with_genai_spans_and_no_secret(
        otlp, slack_emulator, redis_server, sandbox_image, tmp_path, llm_api, redis_db):
    canary = "canary-" + secrets.token_hex(12)
    REDACTOR.add(canary)
    redis_db.set("config:db_password", canary)
    llm_api.push(tool_call("redis__get", {"key": "config:db_password"}),
                 tool_call("redis__flushdb", {}), text("Read the key and flushed, as approved."))
    async with running_llm_bot(slack_emulator, redis_server.url, tmp_path, llm_api, None,
                               sandbox_image=sandbox_image, otel_endpoint=otlp.origin) as hl:
        thread = await mention(hl, f"the zebra cache is odd, is the password {canary}?")
        card = await hl.card(thread, timeout=120)  # a loaded CI machine takes its time
        await hl.click(card, APPROVER)
        await hl.report(thread, timeout=120)
        run_id = AuditFile(hl.bot.runtime.settings.data_dir).rows("task")[-1]["run_id"]
        audit = AuditFile(hl.bot.runtime.settings.data_dir)
        reported = await otlp.wait_for(lambda: otlp.spans(name="run.report"), 15)
    trace_id = reported[0].trace_id
    spans = otlp.spans(trace_id=trace_id)
    names = Counter(s.name for s in spans)

    (root,) = [s for s in spans if not s.parent_id]
    assert (root.name, root.kind) == ("POST /slack/events", SERVER)
    submit = next(s for s in spans if s.name == "run.submit")
    assert parent(submit, spans) is root and submit.attributes["opsbot.run_id"] == run_id
    drives = [s for s in spans if s.name.startswith("run.drive")]
    assert sorted(s.name for s in drives) == ["run.drive resume", "run.drive start"]
    assert all(parent(d, spans) is submit and d.kind == CONSUMER for d in drives)
    assert {s.attributes["opsbot.run_id"] for s in spans if "opsbot.run_id" in s.attributes} == {
        run_id}, "every span naming the run is in its trace"

    agents = [s for s in spans if s.name == "invoke_agent opsbot"]
    assert len(agents) == 2 and all(parent(a, spans).name.startswith("run.drive") for a in agents)
    assert all(a.attributes["gen_ai.operation.name"] == "invoke_agent"
               and a.attributes["gen_ai.agent.name"] == "opsbot" for a in agents)
    for node in ("understand", "agent", "policy", "approval", "execute", "report"):
        assert names[f"node {node}"] >= 1, node
    chats = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(chats) == 3
    for chat in chats:
        assert parent(chat, spans).name == "node agent"
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    tools = {s.attributes["gen_ai.tool.name"]: s for s in spans if s.name.startswith("execute_tool")}
    assert {"redis__get", "redis__flushdb"} <= set(tools)
    for tool in tools.values():
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        children = {s.name for s in spans if s.parent_id == tool.span_id}
        assert {"credential.mint", "sandbox.run", "credential.revoke"} <= children
    verdicts = {s.attributes["opsbot.tool"]: s.attributes["opsbot.policy.verdict"]
                for s in spans if s.name == "policy.evaluate"}
    assert verdicts == {"redis get": "allow", "redis flushdb": "approve"}
    (wait,) = [s for s in spans if s.name == "approval.wait"]
    assert wait.attributes["opsbot.outcome"] == "approved" and wait.end_ns > wait.start_ns
    assert parent(wait, spans).name == "run.drive resume"
    report = reported[0]
    assert report.attributes["opsbot.outcome"] == "done"

    shown = json.dumps([[s.name, s.attributes, s.resource] for s in otlp.spans()])
    assert canary not in shown and "zebra" not in shown, "no prompt text, no secret"
    assert reported[0].resource["service.name"] == "opsbot"
    traced_rows = [r for r in audit.rows("task", run_id) + audit.rows("report", run_id)]
    assert [r["data"].get("trace_id") for r in traced_rows] == [trace_id, trace_id]


async def test_log_lines_carry_the_trace_id_only_while_exporting(otlp):
    stream = io.StringIO()
    logs.configure("info", stream)
    log = structlog.get_logger("test")
    try:
        with telemetry.exporting(Settings(otel_endpoint=otlp.origin)):
            with tracing.tracer.start_as_current_span("work") as span:
                log.info("inside")
                expected = format(span.get_span_context().trace_id, "032x")
        with tracing.tracer.start_as_current_span("work"):
            log.info("not exported")
    finally:
        logs.configure("info")  # back to stderr for the tests after this one
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line.get("trace_id")) for line in lines] == [
        ("inside", expected), ("not exported", None)]
    await otlp.wait_for(lambda: otlp.spans(name="work"))


@pytest.mark.parametrize("content", [False, True])
async def test_chat_spans_carry_messages_only_when_enabled_and_redacted(otlp, content):
    from langchain_core.messages import AIMessage, HumanMessage

    from graph.agent import Agent
    from graph.deps import GraphDeps
    from graph.policy import Policy
    from tools.catalog import Catalog

    canary = "canary-" + secrets.token_hex(8)
    REDACTOR.add(canary)
    deps = GraphDeps(catalog=Catalog([], {}), policy=Policy(), executor=None, broker=None,
                     audit=None, model_name="m", trace_content=content)
    reply = AIMessage("the zebra answer", usage_metadata={"input_tokens": 7, "output_tokens": 3,
                                                          "total_tokens": 10})
    with telemetry.exporting(Settings(otel_endpoint=otlp.origin)):
        with tracing.chat_span("m") as span:
            Agent(deps)._traced(span, [HumanMessage(f"zebra question {canary}")], reply)
    (chat,) = await otlp.wait_for(lambda: otlp.spans(name="chat m"))
    assert chat.attributes["gen_ai.usage.input_tokens"] == 7
    shown = json.dumps(chat.attributes)
    assert ("zebra question" in shown and "zebra answer" in shown) is content
    assert canary not in shown
