"""OpenTelemetry spans of a run: one trace from the request to the report, across processes.

The graph uses the OpenTelemetry *API* only: without an SDK set up (``bot/telemetry.py``, when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set) every span here is a no-op. The trace of a run starts
where the request came in (the Slack request's span, then ``run.submit``); its W3C
``traceparent`` is kept with the run (``RunRef.trace``) and travels in every job of the run
(``Job.trace``), so whichever worker drives the run — now, or after an approval an hour later —
continues the same trace.

Agent spans follow the GenAI semantic conventions: ``invoke_agent opsbot`` per drive, ``chat
<model>`` per model call (``gen_ai.usage.*`` token counts), ``execute_tool <tool>`` per action.
Attributes carry identifiers, counts and outcomes; never prompt text, tool output or a secret,
unless the deployment opts into content (``OPSBOT_TRACE_CONTENT``, and even then redacted).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("opsbot")
AGENT = "opsbot"
_PROPAGATOR = TraceContextTextMapPropagator()


def traceparent() -> str:
    """The current span's W3C ``traceparent`` (empty when nothing is being recorded)."""
    if not trace.get_current_span().is_recording():
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def context_of(parent: str) -> otel_context.Context | None:
    """The context a job continues (None: start a trace of its own)."""
    return _PROPAGATOR.extract({"traceparent": parent}) if parent else None


def trace_id() -> str | None:
    """The current trace id (32 hex), for log lines and audit rows; None when not recording."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    return format(span.get_span_context().trace_id, "032x")


def node(name: str, work: Callable[..., Any]) -> Callable[..., Any]:
    """A graph node in its own span (``interrupt()`` is how a node pauses: not an error)."""

    @functools.wraps(work)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        with tracer.start_as_current_span(f"node {name}", record_exception=False,
                                          set_status_on_exception=False,
                                          attributes={"opsbot.node": name}):
            return await work(*args, **kwargs)

    return traced


@contextmanager
def agent_span(run_id: str, conversation: str, job: str) -> Iterator[Span]:
    with tracer.start_as_current_span(f"invoke_agent {AGENT}", kind=SpanKind.INTERNAL,
                                      attributes={"gen_ai.operation.name": "invoke_agent",
                                                  "gen_ai.agent.name": AGENT,
                                                  "gen_ai.conversation.id": conversation,
                                                  "opsbot.run_id": run_id,
                                                  "opsbot.job": job}) as span:
        yield span


@contextmanager
def chat_span(model: str, provider: str = "openai") -> Iterator[Span]:
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT,
                                      attributes={"gen_ai.operation.name": "chat",
                                                  "gen_ai.provider.name": provider,
                                                  "gen_ai.request.model": model}) as span:
        yield span


def chat_result(span: Span, usage: dict[str, Any], finish: str | None, tool_calls: int) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("input_tokens", 0) or 0))
    span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("output_tokens", 0) or 0))
    if finish:
        span.set_attribute("gen_ai.response.finish_reasons", [finish])
    span.set_attribute("opsbot.tool_calls", tool_calls)


@contextmanager
def tool_span(toolset: str, action: str, call_id: str, preview: bool) -> Iterator[Span]:
    tool = f"{toolset}__{action}"
    with tracer.start_as_current_span(f"execute_tool {tool}", kind=SpanKind.INTERNAL,
                                      attributes={"gen_ai.operation.name": "execute_tool",
                                                  "gen_ai.tool.name": tool,
                                                  "gen_ai.tool.type": "function",
                                                  "gen_ai.tool.call.id": call_id,
                                                  "opsbot.preview": preview}) as span:
        yield span


def failed(span: Span, why: str) -> None:
    span.set_status(Status(StatusCode.ERROR, why))


def waited(name: str, began: datetime, ended: datetime, **attributes: Any) -> None:
    """A span for a wait that no process sat through (an approval): from when the request was
    made to when it was decided, recorded by the drive that picks the decision up."""
    span = tracer.start_span(name, start_time=_ns(began), attributes=attributes)
    span.end(end_time=_ns(ended))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
