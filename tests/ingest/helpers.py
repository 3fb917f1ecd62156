"""Test helpers for ingest: a recording hand-off, a key table, real SDK spans, OTLP/JSON."""

from __future__ import annotations

import base64
import socket
from collections.abc import Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from schema.messages import BusFull, HandoffUnavailable, OtlpMessage
from schema.models import DEFAULT_TENANT, Principal, Role

ADMIN_KEY = "admin-key"
ACME_KEY = "acme-key"
GLOBEX_KEY = "globex-key"


class RecordingHandoff:
    """Records what ingest hands on; told to, refuses like a full or closed bus."""

    def __init__(self) -> None:
        self.messages: list[OtlpMessage] = []
        self.attempts = 0
        self.full_after: int | None = None  # accept this many submits, then raise BusFull
        self.retry_after_s = 7.0
        self.unavailable = False
        self.reports_full = False  # `full()` says so: refused before decoding

    def full(self) -> float | None:
        return self.retry_after_s if self.reports_full else None

    async def submit(self, message: OtlpMessage) -> None:
        self.attempts += 1
        if self.unavailable:
            raise HandoffUnavailable("bus closed")
        if self.full_after is not None and len(self.messages) >= self.full_after:
            raise BusFull(self.retry_after_s)
        self.messages.append(message)

    def spans_by_tenant(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for m in self.messages:
            totals[m.tenant_id] = totals.get(m.tenant_id, 0) + m.span_count
        return totals


class KeyTable:
    """A tiny authenticator: key -> principal."""

    def __init__(self) -> None:
        self.keys = {
            ADMIN_KEY: Principal(role=Role.ADMIN, tenant_id=DEFAULT_TENANT, key_id="k-admin"),
            ACME_KEY: Principal(role=Role.TENANT, tenant_id="acme", key_id="k-acme"),
            GLOBEX_KEY: Principal(role=Role.TENANT, tenant_id="globex", key_id="k-globex"),
        }

    async def authenticate(self, api_key: str) -> Principal | None:
        return self.keys.get(api_key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_spans(
    count: int, *, resource: dict[str, Any] | None = None, service_name: str = "chat-app"
) -> Sequence[ReadableSpan]:
    """`count` spans made by the real SDK: a root and children in one trace."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, **(resource or {})})
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.ingest", "1.0")
    with tracer.start_as_current_span("agent run", kind=SpanKind.SERVER) as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        for i in range(count - 1):
            with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as span:
                span.set_attribute("gen_ai.usage.input_tokens", 10 + i)
                span.add_event("gen_ai.choice", {"index": i})
    provider.shutdown()
    spans = memory.get_finished_spans()
    assert len(spans) == count
    return spans


def request_of(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """What the SDK's OTLP exporters put on the wire."""
    request: ExportTraceServiceRequest = encode_spans(spans)
    return request


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the spec defines it (the SDK has no JSON exporter): proto3 JSON with
    integer enums, int64 as strings, and trace/span ids as hex instead of base64."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _b64_to_hex(span, "traceId", "spanId", "parentSpanId")
                for link in span.get("links", []):
                    _b64_to_hex(link, "traceId", "spanId")
    return orjson.dumps(document)


def _b64_to_hex(obj: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex().upper()
