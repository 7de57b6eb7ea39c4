"""Exporting traces: the OpenTelemetry SDK, set up when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

The spans themselves are made where the work happens (``graph/tracing.py``, the Slack request
in ``bot/web.py``); this module only decides whether they go anywhere. With an endpoint, spans
are batched to ``<endpoint>/v1/traces`` over OTLP/HTTP (protobuf), as the OpenTelemetry
environment variables specify; without one, nothing is recorded and tracing costs nothing.

A process has one tracer provider (OpenTelemetry allows setting it once) with one span
processor of ours, :class:`_Exporters`: ``exporting`` adds an exporter to it for the lifetime of
a bot and removes it again, so a process that runs several bots one after another (tests) sends
each one's spans where that bot was told to. Spans are sampled only while some exporter is
active, so trace ids appear in logs and audit rows exactly when a trace is being exported.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from bot.settings import Settings

EXPORT_DELAY_MS = 1000


class _Exporters(SpanProcessor):
    """The exporters active now (one per running bot, usually one per process)."""

    def __init__(self) -> None:
        self.active: list[BatchSpanProcessor] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in list(self.active):
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in list(self.active):
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in list(self.active):
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in list(self.active))


class _WhileExporting(Sampler):
    """Parent-based, always on — while at least one exporter is active; off otherwise."""

    def __init__(self, exporters: _Exporters) -> None:
        self.exporters = exporters
        self._on = ParentBased(ALWAYS_ON)

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state=None) -> SamplingResult:
        if not self.exporters.active:
            return SamplingResult(Decision.DROP)
        return self._on.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                      trace_state)

    def get_description(self) -> str:
        return "opsbot: parent-based always-on while exporting"


_EXPORTERS = _Exporters()
_PROVIDER: TracerProvider | None = None


def _provider(service: str) -> TracerProvider:
    global _PROVIDER
    if _PROVIDER is None:
        _PROVIDER = TracerProvider(sampler=_WhileExporting(_EXPORTERS),
                                   resource=Resource.create({"service.name": service}))
        _PROVIDER.add_span_processor(_EXPORTERS)
        trace.set_tracer_provider(_PROVIDER)
    return _PROVIDER


def active() -> bool:
    """Whether spans are being exported now (hot paths skip even a no-op span otherwise)."""
    return bool(_EXPORTERS.active)


@contextmanager
def exporting(settings: Settings) -> Iterator[None]:
    """Export this bot's spans to ``OTEL_EXPORTER_OTLP_ENDPOINT`` while inside (no-op when it
    is not set); on the way out the spans still queued are sent."""
    if not settings.otel_endpoint:
        yield
        return
    endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint),
                                   schedule_delay_millis=EXPORT_DELAY_MS)
    _provider(settings.otel_service_name)
    _EXPORTERS.active.append(processor)
    try:
        yield
    finally:
        _EXPORTERS.active.remove(processor)
        processor.shutdown()  # sends what is still queued
