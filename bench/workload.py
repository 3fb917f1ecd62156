"""Typical LLM spans, pre-encoded as OTLP requests, shared by the benchmarks.

"Typical" means what an instrumented chat application sends: a client span per model
call with GenAI semantic-convention attributes (~11 span attributes, 6 resource
attributes), a mix of models, 2% errors, and prompt/completion content on 10% of spans.
"""

from __future__ import annotations

import os
import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-3-5-sonnet-latest"),
    ("openai", "gpt-4.1"),
]


def _kv(key: str, value: str | int | float | list[str]) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        items = [AnyValue(string_value=v) for v in value]
        return KeyValue(key=key, value=AnyValue(array_value=ArrayValue(values=items)))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def typical_request(spans: int = 512, seed: int | None = None, service: str = "chat-app") -> bytes:
    """One OTLP request of `spans` typical LLM spans, serialized; unique ids every call."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            _kv("service.name", service),
            _kv("service.version", "1.4.2"),
            _kv("deployment.environment", "production"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.45.2"),
        ]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
    scope_spans.scope.version = "2.1b0"
    now = time.time_ns()
    for i in range(spans):
        provider, model = MODELS[i % len(MODELS)]
        start = now - rng.randint(200_000_000, 5_000_000_000)
        span = Span(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            parent_span_id=os.urandom(8),
            name=f"chat {model}",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=start,
            end_time_unix_nano=start + rng.randint(150_000_000, 4_000_000_000),
        )
        attrs = [
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.provider.name", provider),
            _kv("gen_ai.request.model", model),
            _kv("gen_ai.response.model", model),
            _kv("gen_ai.request.temperature", 0.7),
            _kv("gen_ai.request.max_tokens", 1024),
            _kv("gen_ai.response.id", f"chatcmpl-{rng.getrandbits(64):016x}"),
            _kv("gen_ai.response.finish_reasons", ["stop"]),
            _kv("gen_ai.usage.input_tokens", rng.randint(50, 4000)),
            _kv("gen_ai.usage.output_tokens", rng.randint(10, 800)),
            _kv("server.address", "api.example.com"),
        ]
        if i % 10 == 0:
            attrs.append(
                _kv("gen_ai.input.messages", '[{"role":"user","content":"mail me at a@b.co"}]')
            )
            attrs.append(_kv("gen_ai.output.messages", '[{"role":"assistant","content":"Sure."}]'))
        span.attributes.extend(attrs)
        if i % 50 == 0:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="rate limited"))
        scope_spans.spans.append(span)
    return request.SerializeToString()
