"""An OpenTelemetry collector's OTLP/HTTP trace receiver on loopback (``POST /v1/traces``,
protobuf), keeping every span it is sent, decoded.

opsbot's real exporter (``OTLPSpanExporter``, set up by ``bot/telemetry.py`` from
``OTEL_EXPORTER_OTLP_ENDPOINT``) talks to it exactly as it would to a collector. Usage::

    with OtlpReceiver() as otlp:
        settings = Settings(otel_endpoint=otlp.origin, ...)
        ...
        spans = await otlp.wait_for(lambda: otlp.spans(name="run.report"))
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.fakes.server import Emulator


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)


class OtlpReceiver(Emulator):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self.requests = 0
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes([web.post("/v1/traces", self._traces)])
        super().__init__(app, "otlp-receiver")

    def spans(self, name: str | None = None, trace_id: str | None = None) -> list[Span]:
        with self._lock:
            return [s for s in self._spans if (name is None or s.name == name)
                    and (trace_id is None or s.trace_id == trace_id)]

    def describe(self) -> str:
        names = sorted({s.name for s in self.spans()})
        return f"the receiver got {self.requests} export(s) with spans {names}"

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="OTLP/HTTP protobuf expected")
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        decoded = [span for rs in export.resource_spans for span in _spans(rs)]
        with self._lock:
            self.requests += 1
            self._spans += decoded
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")


def _spans(resource_spans) -> list[Span]:
    resource = _attributes(resource_spans.resource.attributes)
    return [Span(name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                 parent_id=s.parent_span_id.hex(), kind=s.kind, start_ns=s.start_time_unix_nano,
                 end_ns=s.end_time_unix_nano, status=s.status.code,
                 attributes=_attributes(s.attributes), resource=resource)
            for scope in resource_spans.scope_spans for s in scope.spans]


def _attributes(pairs) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None
