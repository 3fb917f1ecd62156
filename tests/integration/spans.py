"""Real OpenTelemetry SDK spans and exporters, as an instrumented application produces them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


def make_spans(
    count: int,
    *,
    service: str = "chat-app",
    attributes: dict[str, Any] | None = None,
    error_every: int = 0,
    resource: dict[str, Any] | None = None,
) -> Sequence[ReadableSpan]:
    """`count` LLM client spans made by the real SDK, each its own trace."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, **(resource or {})})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.llm", "1.0")
    for i in range(count):
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
            span.set_attributes(
                attributes
                or {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 100,
                    "gen_ai.usage.output_tokens": 20,
                }
            )
            if error_every and i % error_every == 0:
                span.set_status(Status(StatusCode.ERROR, "rate limited"))
    provider.shutdown()
    return memory.get_finished_spans()


def export_http(
    url: str, key: str, spans: Sequence[ReadableSpan], gzip: bool = False
) -> SpanExportResult:
    exporter = HttpExporter(
        endpoint=url,
        headers={"authorization": f"Bearer {key}"},
        compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression,
        timeout=10,
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


def export_grpc(
    endpoint: str, key: str, spans: Sequence[ReadableSpan], gzip: bool = False
) -> SpanExportResult:
    exporter = GrpcExporter(
        endpoint=endpoint,
        insecure=True,
        headers={"authorization": f"Bearer {key}"},
        compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
        timeout=10,
    )
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()
