"""normalize(): OTLP trace requests -> otel_traces rows, exact values per column."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from schema.messages import OtlpMessage
from schema.models import ModelPriceOverride, PrivacyPolicy, TenantSettings
from schema.spans import SPAN_COLUMNS
from streams.normalize import attribute_value_string, normalize, normalize_payload
from streams.prepare import Job
from streams.pricing import Pricer, ns_to_datetime
from streams.redact import EMAIL, hash_text
from tests.native.parity import assert_native_agrees

PRICER = Pricer()
START = 1_760_000_000_123_456_789  # 2025-10-09
TRACE = bytes(range(1, 17))
SPAN = bytes(range(17, 25))
PARENT = bytes(range(25, 33))


def any_value(value: Any) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=kvs(value)))
    return AnyValue(string_value=value)


def kvs(attributes: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[KeyValue]:
    items = attributes.items() if isinstance(attributes, Mapping) else attributes
    return [KeyValue(key=key, value=any_value(value)) for key, value in items]


def span(index: int = 0, attributes: Any = (), **fields: Any) -> Span:
    defaults: dict[str, Any] = {
        "trace_id": TRACE[:-1] + bytes([index + 1]),
        "span_id": SPAN[:-1] + bytes([index + 1]),
        "name": "chat gpt-4o",
        "kind": Span.SPAN_KIND_CLIENT,
        "start_time_unix_nano": START,
        "end_time_unix_nano": START + 1_500_000_000,
    }
    defaults.update(fields)
    return Span(attributes=kvs(attributes), **defaults)


def request(
    *spans: Span,
    resource: Mapping[str, Any] | None = None,
    scope: tuple[str, str] = ("tests.llm", "1.0"),
) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=kvs(resource or {"service.name": "chat-app"})),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name=scope[0], version=scope[1]),
                        spans=list(spans),
                    )
                ],
            )
        ]
    )


def run(
    req: ExportTraceServiceRequest,
    settings: TenantSettings | None = None,
    tenant: str = "acme",
) -> tuple[list[dict[str, Any]], int]:
    message = OtlpMessage(tenant, START + 10**9, req, 0)
    batch = normalize(message, settings or TenantSettings(), PRICER)
    # every case here also checks the compiled normaliser against this reference
    payload = req.SerializeToString()
    assert_native_agrees([Job(tenant, START + 10**9, payload, settings or TenantSettings())])
    assert len(batch.columns) == len(SPAN_COLUMNS)
    assert len({len(column) for column in batch.columns}) == 1
    rows = [
        dict(zip(SPAN_COLUMNS, values, strict=True)) for values in zip(*batch.columns, strict=True)
    ]
    return rows, batch.unpriced


def one(attributes: Any, settings: TenantSettings | None = None, **fields: Any) -> dict[str, Any]:
    rows, _ = run(request(span(0, attributes, **fields)), settings)
    return rows[0]


def test_every_column_of_a_full_span() -> None:
    event_time = START + 200_000_000
    child = span(
        0,
        {"gen_ai.operation.name": "chat", "http.status_code": 200, "retry": False},
        parent_span_id=PARENT,
        trace_state="vendor=abc",
        status=Status(code=Status.STATUS_CODE_ERROR, message="rate limited"),
        events=[
            Span.Event(
                time_unix_nano=event_time,
                name="exception",
                attributes=kvs({"exception.type": "RateLimitError", "exception.escaped": True}),
            )
        ],
        links=[
            Span.Link(
                trace_id=bytes(range(100, 116)),
                span_id=bytes(range(116, 124)),
                trace_state="k=v",
                attributes=kvs({"link.kind": "retry-of"}),
            )
        ],
    )
    root = span(1, {}, name="handle request", kind=Span.SPAN_KIND_SERVER)
    rows, unpriced = run(
        request(
            child, root, resource={"service.name": "chat-app", "deployment.environment": "prod"}
        )
    )
    resource = {"service.name": "chat-app", "deployment.environment": "prod"}
    assert rows[0] == {
        "Timestamp": START,
        "TraceId": (TRACE[:-1] + b"\x01").hex(),
        "SpanId": (SPAN[:-1] + b"\x01").hex(),
        "ParentSpanId": PARENT.hex(),
        "TraceState": "vendor=abc",
        "SpanName": "chat gpt-4o",
        "SpanKind": "Client",
        "ServiceName": "chat-app",
        "ResourceAttributes": resource,
        "ScopeName": "tests.llm",
        "ScopeVersion": "1.0",
        "SpanAttributes": {
            "gen_ai.operation.name": "chat",
            "http.status_code": "200",
            "retry": "false",
        },
        "Duration": 1_500_000_000,
        "StatusCode": "Error",
        "StatusMessage": "rate limited",
        "Events.Timestamp": [event_time],
        "Events.Name": ["exception"],
        "Events.Attributes": [{"exception.type": "RateLimitError", "exception.escaped": "true"}],
        "Links.TraceId": [bytes(range(100, 116)).hex()],
        "Links.SpanId": [bytes(range(116, 124)).hex()],
        "Links.TraceState": ["k=v"],
        "Links.Attributes": [{"link.kind": "retry-of"}],
        "TenantId": "acme",
        "IsLlm": True,  # a gen_ai operation name
        "LlmProvider": "",
        "LlmOperation": "chat",
        "LlmRequestModel": "",
        "LlmResponseModel": "",
        "LlmInputTokens": 0,
        "LlmOutputTokens": 0,
        "LlmCacheReadTokens": 0,
        "LlmReasoningTokens": 0,
        "LlmCostUsd": None,
        "LlmCostSource": "",
        "LlmTimeToFirstTokenMs": None,
    }
    assert rows[1] == {
        **rows[0],
        "TraceId": (TRACE[:-1] + b"\x02").hex(),
        "SpanId": (SPAN[:-1] + b"\x02").hex(),
        "ParentSpanId": "",
        "TraceState": "",
        "SpanName": "handle request",
        "SpanKind": "Server",
        "SpanAttributes": {},
        "StatusCode": "Unset",
        "StatusMessage": "",
        "Events.Timestamp": [],
        "Events.Name": [],
        "Events.Attributes": [],
        "Links.TraceId": [],
        "Links.SpanId": [],
        "Links.TraceState": [],
        "Links.Attributes": [],
        "IsLlm": False,
        "LlmOperation": "",
    }
    assert unpriced == 0


def test_kinds_statuses_and_ids() -> None:
    spans = [
        span(kind, {}, kind=kind, status=Status(code=kind % 3, message="m" * (kind % 2)))
        for kind in range(6)
    ]
    spans.append(span(6, {}, kind=9))  # not an OTLP kind
    spans.append(span(7, {}, parent_span_id=bytes(8)))  # all-zero parent: none
    rows, _ = run(request(*spans))
    assert [r["SpanKind"] for r in rows] == [
        "Unspecified",
        "Internal",
        "Server",
        "Client",
        "Producer",
        "Consumer",
        "",
        "Client",
    ]
    assert [r["StatusCode"] for r in rows[:6]] == ["Unset", "Ok", "Error"] * 2
    assert [r["StatusMessage"] for r in rows[:6]] == ["", "m", "", "m", "", "m"]
    assert rows[7]["ParentSpanId"] == ""


def test_fields_missing_from_some_spans_stay_aligned() -> None:
    # proto3 omits default values, so the columnar view has gaps; each row must still get
    # its own values.
    spans = [
        span(0, {"a": 1}, trace_state="x=1", kind=0, name=""),
        span(1, {}, parent_span_id=PARENT, name="second"),
        span(2, {"b": "2", "c": "3"}, start_time_unix_nano=0, end_time_unix_nano=0),
        span(3, {"d": True}, trace_state="y=2", end_time_unix_nano=START - 5),
    ]
    rows, _ = run(request(*spans))
    assert [r["TraceState"] for r in rows] == ["x=1", "", "", "y=2"]
    assert [r["ParentSpanId"] for r in rows] == ["", PARENT.hex(), "", ""]
    assert [r["SpanName"] for r in rows] == ["", "second", "chat gpt-4o", "chat gpt-4o"]
    assert [r["SpanKind"] for r in rows] == ["Unspecified", "Client", "Client", "Client"]
    assert [r["Timestamp"] for r in rows] == [START, START, 0, START]
    assert [r["Duration"] for r in rows] == [1_500_000_000, 1_500_000_000, 0, 0]
    assert [r["SpanAttributes"] for r in rows] == [
        {"a": "1"},
        {},
        {"b": "2", "c": "3"},
        {"d": "true"},
    ]


def test_resources_and_scopes_are_per_row() -> None:
    req = request(span(0, {}), resource={"service.name": "a"}, scope=("s1", "1"))
    req.resource_spans.append(
        ResourceSpans(
            resource=Resource(attributes=kvs({"service.name": 42})),  # not a string
            scope_spans=[
                ScopeSpans(scope=InstrumentationScope(name="s2"), spans=[span(1, {})]),
                ScopeSpans(scope=InstrumentationScope(name="empty"), spans=[]),
                ScopeSpans(spans=[span(2, {})]),
            ],
        )
    )
    rows, _ = run(req)
    assert [(r["ServiceName"], r["ScopeName"], r["ScopeVersion"]) for r in rows] == [
        ("a", "s1", "1"),
        ("", "s2", ""),
        ("", "", ""),
    ]
    assert rows[1]["ResourceAttributes"] == {"service.name": "42"}
    assert rows[1]["ResourceAttributes"] is rows[2]["ResourceAttributes"]  # shared per resource
    no_name, _ = run(request(span(0, {}), resource={"host.name": "h"}))
    assert no_name[0]["ServiceName"] == ""


def test_empty_request() -> None:
    rows, unpriced = run(ExportTraceServiceRequest())
    assert rows == [] and unpriced == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("ünïcødé ✓", "ünïcødé ✓"),
        ("", ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-42, "-42"),
        (2**63 - 1, "9223372036854775807"),
        (-(2**63), "-9223372036854775808"),
        (0.7, "0.7"),
        (1.0, "1"),
        (100.0, "100"),
        (-0.0, "-0"),
        (123456789.123, "123456789.123"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e22, "1.5e+22"),
        (1e-6, "0.000001"),
        (1.5e-7, "1.5e-7"),
        (1e-10, "1e-10"),
        (5e-324, "5e-324"),
        (float("nan"), "json: unsupported value: NaN"),
        (float("inf"), "json: unsupported value: +Inf"),
        (float("-inf"), "json: unsupported value: -Inf"),
        (b"\x00\xffbytes", base64.b64encode(b"\x00\xffbytes").decode()),
        (["stop", "length"], '["stop","length"]'),
        ([1, 2.5, 3.0, True, "x", None, b"\x01"], '[1,2.5,3,true,"x",null,"AQ=="]'),
        ([], "[]"),
        ({"b": 1, "a": {"c": "<tag>&"}}, '{"a":{"c":"\\u003ctag\\u003e\\u0026"},"b":1}'),
        ({"q": 'say "hi"\n'}, '{"q":"say \\"hi\\"\\n"}'),
        ([1e21, 1e-7], "[1e+21,1e-7]"),
        ([float("nan")], ""),  # Go's encoder refuses: the collector stores ""
        (None, ""),
    ],
)
def test_attribute_values_as_the_collector_writes_them(value: Any, expected: str) -> None:
    assert attribute_value_string(any_value(value)) == expected
    assert one({"k": value})["SpanAttributes"] == {"k": expected}


def test_long_and_odd_attributes() -> None:
    long_value = "x" * 20_000  # three-byte varint length: the generic decoder
    medium = "y" * 300  # two-byte length
    key = "k" * 200  # a key too long for the fast path
    attributes = [("dup", "first"), ("long", long_value), ("medium", medium), (key, 1), ("dup", 2)]
    assert one(attributes)["SpanAttributes"] == {
        "dup": "2",  # the last of duplicate keys wins, as in the collector's map
        "long": long_value,
        "medium": medium,
        key: "1",
    }


def llm_row(attributes: Any, settings: TenantSettings | None = None) -> dict[str, Any]:
    row = one(attributes, settings)
    return {name: value for name, value in row.items() if name.startswith(("IsLlm", "Llm"))}


def price(model: str, inp: int, out: int, cache_read: int = 0, reasoning: int = 0) -> Decimal:
    cost = PRICER.price("", model, inp, out, cache_read, reasoning, START)
    assert cost is not None
    return cost


FAMILIES = {
    "genai-current": {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 200,
        "gen_ai.usage.reasoning.output_tokens": 100,
        "gen_ai.response.time_to_first_chunk": 0.25,
    },
    "genai-older": {
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.prompt_tokens": 1200,
        "gen_ai.usage.completion_tokens": 300,
        "gen_ai.usage.cache_read_input_tokens": 200,
        "gen_ai.usage.reasoning_tokens": 100,
        "gen_ai.server.time_to_first_token": 0.25,
    },
    "openinference": {
        "openinference.span.kind": "LLM",
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.model_name": "gpt-4o",
        "llm.response.model_name": "gpt-4o-2024-08-06",
        "llm.token_count.prompt": 1200,
        "llm.token_count.completion": 300,
        "llm.token_count.total": 1500,
        "llm.token_count.prompt_details.cache_read": 200,
        "llm.token_count.completion_details.reasoning": 100,
    },
    "openllmetry-llm-prefix": {
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o",
        "llm.response.model": "gpt-4o-2024-08-06",
        "llm.usage.prompt_tokens": 1200,
        "llm.usage.completion_tokens": 300,
        "llm.usage.total_tokens": 1500,
        "llm.usage.cache_read_input_tokens": 200,
        "llm.usage.reasoning_tokens": 100,
    },
    "tutorial": {
        "llm.provider": "openai",
        "llm.model": "gpt-4o",
        "llm.tokens.input": 1200,
        "llm.tokens.output": 300,
        "llm.latency.ttft_ms": 250,
    },
    "tutorial-flat": {
        "llm.provider": "openai",
        "llm.model": "gpt-4o",
        "llm.input_tokens": 1200,
        "llm.output_tokens": 300,
    },
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_naming_family_fills_the_typed_columns(family: str) -> None:
    row = llm_row(FAMILIES[family])
    full = family not in ("tutorial", "tutorial-flat")
    assert row["IsLlm"] is True
    assert row["LlmProvider"] == "openai"
    assert row["LlmOperation"] == ("chat" if "genai" in family or "openllmetry" in family else "")
    assert row["LlmRequestModel"] == "gpt-4o"
    assert row["LlmResponseModel"] == ("gpt-4o-2024-08-06" if full else "")
    assert row["LlmInputTokens"] == 1200
    assert row["LlmOutputTokens"] == 300
    assert row["LlmCacheReadTokens"] == (200 if full else 0)
    assert row["LlmReasoningTokens"] == (100 if full else 0)
    model = "gpt-4o-2024-08-06" if full else "gpt-4o"
    expected = price(model, 1200, 300, 200 if full else 0, 100 if full else 0)
    assert (row["LlmCostUsd"], row["LlmCostSource"]) == (expected, "genai-prices")
    ttft = {"genai-current": 250.0, "genai-older": 250.0, "tutorial": 250.0}.get(family)
    assert row["LlmTimeToFirstTokenMs"] == ttft


def test_precedence_current_genai_then_older_then_openinference_then_others() -> None:
    attributes = [
        ("llm.tokens.input", 4),
        ("llm.token_count.prompt", 3),
        ("gen_ai.usage.prompt_tokens", 2),
        ("gen_ai.usage.input_tokens", 1),
        ("llm.provider", "azure"),
        ("gen_ai.system", "az.ai.openai"),
        ("gen_ai.provider.name", "azure.ai.openai"),
        ("llm.model_name", "gpt-4o-mini"),
        ("gen_ai.request.model", "gpt-4o"),
        ("llm.token_count.completion", 30),
        ("gen_ai.usage.completion_tokens", 20),
    ]
    row = llm_row(attributes)
    assert row["LlmInputTokens"] == 1
    assert row["LlmOutputTokens"] == 20
    assert row["LlmProvider"] == "azure.ai.openai"
    assert row["LlmRequestModel"] == "gpt-4o"
    assert row["LlmResponseModel"] == ""
    # The order of the attributes does not matter.
    assert llm_row(list(reversed(attributes))) == row


def test_pricing_uses_the_response_model_else_the_request_model() -> None:
    both = llm_row(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.response.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 100,
        }
    )
    assert both["LlmCostUsd"] == price("gpt-4o-mini", 1000, 100)
    request_only = llm_row({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000})
    assert request_only["LlmCostUsd"] == price("gpt-4o", 1000, 0)


def test_a_total_alone_is_not_split_and_not_priced() -> None:
    row = llm_row({"gen_ai.request.model": "gpt-4o", "llm.usage.total_tokens": 1500})
    assert row["IsLlm"] is True
    assert (row["LlmInputTokens"], row["LlmOutputTokens"]) == (0, 0)
    assert (row["LlmCostUsd"], row["LlmCostSource"]) == (None, "")
    assert one({"llm.usage.total_tokens": 1500})["SpanAttributes"] == {
        "llm.usage.total_tokens": "1500"
    }


def test_token_values_that_are_not_plain_ints() -> None:
    row = llm_row(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": "120",
            "gen_ai.usage.output_tokens": 30.0,
            "gen_ai.usage.cache_read.input_tokens": "lots",
        }
    )
    assert (row["LlmInputTokens"], row["LlmOutputTokens"], row["LlmCacheReadTokens"]) == (
        120,
        30,
        0,
    )
    negative = llm_row(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": -5,
            "gen_ai.usage.output_tokens": 2.5,
        }
    )
    assert (negative["LlmInputTokens"], negative["LlmOutputTokens"]) == (0, 0)
    # beyond UInt64: invalid too (it used to make the whole batch fail to encode)
    huge = llm_row(
        {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": "99999999999999999999999",
            "gen_ai.usage.output_tokens": 1e30,
            "gen_ai.usage.cache_read.input_tokens": str(2**64 - 1),
        }
    )
    assert (huge["LlmInputTokens"], huge["LlmOutputTokens"]) == (0, 0)
    assert huge["LlmCacheReadTokens"] == 2**64 - 1


def test_is_llm() -> None:
    assert llm_row({"gen_ai.request.model": "gpt-4o"})["IsLlm"] is True
    assert llm_row({"gen_ai.usage.output_tokens": 5})["IsLlm"] is True
    assert llm_row({"gen_ai.operation.name": "execute_tool"})["IsLlm"] is True
    assert llm_row({"gen_ai.request.model": ""})["IsLlm"] is False
    assert llm_row({"http.route": "/chat"})["IsLlm"] is False


def test_cost_sources_and_unpriced_count() -> None:
    settings = TenantSettings(
        price_overrides={
            "my-model": ModelPriceOverride(input_mtok=Decimal("1"), output_mtok=Decimal("2"))
        }
    )
    spans = [
        span(0, {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000}),
        span(
            1,
            {
                "gen_ai.request.model": "my-model",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 500,
            },
        ),
        span(
            2,
            {
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 1000,
                "llm.cost_usd": 0.5,
            },
        ),
        span(3, {"gen_ai.request.model": "unknown-model-x", "gen_ai.usage.input_tokens": 10}),
        span(4, {"gen_ai.usage.input_tokens": 10}),  # usage without a model
        span(5, {"gen_ai.request.model": "gpt-4o"}),  # nothing to price
        span(
            6,
            {
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.cache_read.input_tokens": 20,
            },
        ),  # inconsistent
        span(7, {"gen_ai.request.model": "unknown-model-x", "gen_ai.usage.cost": "0.25"}),
    ]
    rows, unpriced = run(request(*spans), settings)
    assert [(r["LlmCostUsd"], r["LlmCostSource"]) for r in rows] == [
        (price("gpt-4o", 1000, 0), "genai-prices"),
        (Decimal("0.002"), "override"),
        (Decimal("0.5"), "attribute"),
        (None, ""),
        (None, ""),
        (None, ""),
        (None, ""),
        (Decimal("0.25"), "attribute"),
    ]
    # Unpriced: the unknown model, usage without a model, inconsistent usage (not the span
    # without usage: there is nothing to price).
    assert unpriced == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gen_ai.usage.cost", 0.0042),
        ("llm.cost.total", "0.0042"),
        ("llm.cost_usd", 0.0042),
        ("llm.cost.estimated", 0.0042),
    ],
)
def test_cost_attributes(key: str, value: Any) -> None:
    row = llm_row({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1, key: value})
    assert (row["LlmCostUsd"], row["LlmCostSource"]) == (Decimal("0.0042"), "attribute")
    assert str(row["LlmCostUsd"]) == "0.004200000000"


def test_cost_is_exactly_genai_prices_on_the_span_date() -> None:
    import genai_prices
    from genai_prices import Usage

    attributes = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 250_000,
        "gen_ai.usage.output_tokens": 1_234,
        "gen_ai.usage.cache_read.input_tokens": 50_000,
    }
    expected = genai_prices.calc_price(
        Usage(input_tokens=250_000, output_tokens=1_234, cache_read_tokens=50_000),
        model_ref="claude-sonnet-4-5",
        provider_id="anthropic",
        genai_request_timestamp=ns_to_datetime(START),
    ).total_price.quantize(Decimal("1e-12"))
    assert llm_row(attributes)["LlmCostUsd"] == expected


CONTENT_ATTRIBUTES = {
    "gen_ai.input.messages": '[{"role":"user","content":"mail me at a@b.co"}]',
    "gen_ai.output.messages": '[{"role":"assistant","content":"Sure."}]',
    "gen_ai.system_instructions": "You are helpful. Owner: owner@corp.com",
    "gen_ai.prompt.0.content": "hi, I am bob@example.org",
    "input.value": "bob@example.org",
    "llm.input_messages.0.message.content": "x@y.io",
    "gen_ai.request.model": "gpt-4o",
    "user.email": "not-content@example.com",  # an app attribute: never touched
    "gen_ai.prompt.name": "support-v2",
}


def content_request() -> ExportTraceServiceRequest:
    events = [
        Span.Event(
            time_unix_nano=START,
            name="gen_ai.content.prompt",
            attributes=kvs({"gen_ai.prompt": "to a@b.co", "other": "o@p.qr"}),
        ),
        Span.Event(
            time_unix_nano=START,
            name="gen_ai.user.message",
            attributes=kvs({"content": "from c@d.ef", "role": "user"}),
        ),
        Span.Event(
            time_unix_nano=START,
            name="exception",
            attributes=kvs({"content": "kept g@h.ij", "gen_ai.completion": "k@l.mn"}),
        ),
    ]
    return request(span(0, CONTENT_ATTRIBUTES, events=events))


def content_rows(policy: PrivacyPolicy) -> tuple[dict[str, str], list[dict[str, str]]]:
    rows, _ = run(content_request(), TenantSettings(privacy=policy))
    return rows[0]["SpanAttributes"], rows[0]["Events.Attributes"]


UNTOUCHED = {
    "gen_ai.request.model": "gpt-4o",
    "user.email": "not-content@example.com",
    "gen_ai.prompt.name": "support-v2",
}


def test_privacy_full() -> None:
    attributes, events = content_rows(PrivacyPolicy.FULL)
    assert attributes == {k: str(v) for k, v in CONTENT_ATTRIBUTES.items()}
    assert events[1] == {"content": "from c@d.ef", "role": "user"}


def test_privacy_redacted_is_the_default() -> None:
    assert TenantSettings().privacy is PrivacyPolicy.REDACTED
    attributes, events = content_rows(PrivacyPolicy.REDACTED)
    assert attributes == {
        "gen_ai.input.messages": f'[{{"role":"user","content":"mail me at {EMAIL}"}}]',
        "gen_ai.output.messages": '[{"role":"assistant","content":"Sure."}]',
        "gen_ai.system_instructions": f"You are helpful. Owner: {EMAIL}",
        "gen_ai.prompt.0.content": f"hi, I am {EMAIL}",
        "input.value": EMAIL,
        "llm.input_messages.0.message.content": EMAIL,
        **UNTOUCHED,
    }
    assert events == [
        {"gen_ai.prompt": f"to {EMAIL}", "other": "o@p.qr"},
        {"content": f"from {EMAIL}", "role": "user"},
        {"content": "kept g@h.ij", "gen_ai.completion": EMAIL},
    ]


def test_privacy_hashed() -> None:
    attributes, events = content_rows(PrivacyPolicy.HASHED)
    assert attributes == {
        **{k: hash_text(str(v)) for k, v in CONTENT_ATTRIBUTES.items() if k not in UNTOUCHED},
        **UNTOUCHED,
    }
    assert events[0] == {"gen_ai.prompt": hash_text("to a@b.co"), "other": "o@p.qr"}
    assert events[1] == {"content": hash_text("from c@d.ef"), "role": "user"}


def test_privacy_off_drops_content() -> None:
    attributes, events = content_rows(PrivacyPolicy.OFF)
    assert attributes == UNTOUCHED
    assert events == [{"other": "o@p.qr"}, {"role": "user"}, {"content": "kept g@h.ij"}]


def test_policies_do_not_leak_into_each_other() -> None:
    # The attribute cache is per policy: the same bytes normalised for tenants with different
    # policies give each its own result, in any order.
    for policy in [PrivacyPolicy.FULL, PrivacyPolicy.OFF, PrivacyPolicy.FULL, PrivacyPolicy.HASHED]:
        attributes, _ = content_rows(policy)
        if policy is PrivacyPolicy.FULL:
            assert attributes["input.value"] == "bob@example.org"
        elif policy is PrivacyPolicy.OFF:
            assert "input.value" not in attributes
        else:
            assert attributes["input.value"] == hash_text("bob@example.org")


def test_normalize_payload_equals_normalize() -> None:
    req = content_request()
    req.resource_spans[0].scope_spans[0].spans.extend(
        span(i, FAMILIES["genai-current"]) for i in range(1, 6)
    )
    message = OtlpMessage("acme", START, req, 6)
    settings = TenantSettings()
    a = normalize(message, settings, PRICER)
    b = normalize_payload(req.SerializeToString(), "acme", START, settings, PRICER)
    assert a.columns == b.columns and a.unpriced == b.unpriced


def test_real_sdk_spans() -> None:
    """What opentelemetry-sdk actually sends, through its own OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanKind, StatusCode, use_span

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "sdk-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("my.instrumentation", "2.1")
    parent = tracer.start_span("invoke_agent", kind=SpanKind.INTERNAL)
    with (
        use_span(parent, end_on_exit=True),
        tracer.start_as_current_span(
            "chat claude",
            kind=SpanKind.CLIENT,
            links=[Link(parent.get_span_context(), {"why": "follows"})],
        ) as child,
    ):
        child.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-3-5-sonnet-latest",
                "gen_ai.response.model": "claude-3-5-sonnet-20241022",
                "gen_ai.usage.input_tokens": 2_000,
                "gen_ai.usage.output_tokens": 150,
                "gen_ai.usage.cache_read.input_tokens": 1_500,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.response.finish_reasons": ("end_turn",),
                "gen_ai.input.messages": '[{"role":"user","content":"ping me: a@b.co"}]',
            }
        )
        child.add_event("gen_ai.user.message", {"content": "call +1 415 555 2671"})
        child.set_status(StatusCode.ERROR, "overloaded")
    provider.shutdown()
    finished = memory.get_finished_spans()
    req = encode_spans(finished)
    rows, unpriced = run(req)
    by_name = {row["SpanName"]: row for row in rows}
    sdk_child = next(s for s in finished if s.name == "chat claude")
    sdk_parent = next(s for s in finished if s.name == "invoke_agent")
    chat = by_name["chat claude"]
    assert chat["TraceId"] == format(sdk_child.context.trace_id, "032x")
    assert chat["SpanId"] == format(sdk_child.context.span_id, "016x")
    assert chat["ParentSpanId"] == format(sdk_parent.context.span_id, "016x")
    assert by_name["invoke_agent"]["ParentSpanId"] == ""
    assert chat["Timestamp"] == sdk_child.start_time
    assert chat["Duration"] == sdk_child.end_time - sdk_child.start_time
    assert (chat["SpanKind"], by_name["invoke_agent"]["SpanKind"]) == ("Client", "Internal")
    assert (chat["StatusCode"], chat["StatusMessage"]) == ("Error", "overloaded")
    assert chat["ServiceName"] == "sdk-app"
    assert chat["ResourceAttributes"]["telemetry.sdk.name"] == "opentelemetry"
    assert (chat["ScopeName"], chat["ScopeVersion"]) == ("my.instrumentation", "2.1")
    assert chat["SpanAttributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-3-5-sonnet-latest",
        "gen_ai.response.model": "claude-3-5-sonnet-20241022",
        "gen_ai.usage.input_tokens": "2000",
        "gen_ai.usage.output_tokens": "150",
        "gen_ai.usage.cache_read.input_tokens": "1500",
        "gen_ai.request.temperature": "0.2",
        "gen_ai.response.finish_reasons": '["end_turn"]',
        "gen_ai.input.messages": f'[{{"role":"user","content":"ping me: {EMAIL}"}}]',
    }
    event = sdk_child.events[0]
    assert chat["Events.Timestamp"] == [event.timestamp]
    assert chat["Events.Name"] == ["gen_ai.user.message"]
    assert chat["Events.Attributes"] == [{"content": "call [REDACTED:PHONE]"}]
    assert chat["Links.TraceId"] == [format(sdk_parent.context.trace_id, "032x")]
    assert chat["Links.SpanId"] == [format(sdk_parent.context.span_id, "016x")]
    assert chat["Links.Attributes"] == [{"why": "follows"}]
    assert chat["IsLlm"] is True and by_name["invoke_agent"]["IsLlm"] is False
    assert (chat["LlmInputTokens"], chat["LlmOutputTokens"], chat["LlmCacheReadTokens"]) == (
        2_000,
        150,
        1_500,
    )
    expected = PRICER.price(
        "anthropic", "claude-3-5-sonnet-20241022", 2_000, 150, 1_500, 0, sdk_child.start_time or 0
    )
    assert expected is not None
    assert (chat["LlmCostUsd"], chat["LlmCostSource"]) == (expected, "genai-prices")
    assert unpriced == 0


def test_many_spans_share_caches_without_mixing_values() -> None:
    spans: Sequence[Span] = [
        span(
            i % 200,
            {
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": i,
                "gen_ai.response.id": f"resp-{i}",
                "n": i % 3,
            },
        )
        for i in range(3_000)
    ]
    rows, _ = run(request(*spans))
    assert [r["LlmInputTokens"] for r in rows] == list(range(3_000))
    assert [r["SpanAttributes"]["gen_ai.response.id"] for r in rows] == [
        f"resp-{i}" for i in range(3_000)
    ]
    assert [r["SpanAttributes"]["n"] for r in rows] == [str(i % 3) for i in range(3_000)]
    assert rows[123]["LlmCostUsd"] == price("gpt-4o-mini", 123, 0)


def test_timestamp_falls_back_to_receive_time_for_pricing() -> None:
    row = one(
        {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10},
        start_time_unix_nano=0,
        end_time_unix_nano=0,
    )
    assert row["Timestamp"] == 0
    assert row["LlmCostUsd"] == PRICER.price("", "gpt-4o", 10, 0, 0, 0, START + 10**9)


def test_runs_fast_enough_to_notice_regressions() -> None:
    from bench.workload import typical_request

    payloads = [typical_request(512, seed=seed) for seed in range(3)]
    settings = TenantSettings()
    best = float("inf")
    for payload in payloads * 2:
        started = time.perf_counter()
        normalize_payload(payload, "bench", START, settings, PRICER)
        best = min(best, time.perf_counter() - started)
    assert best / 512 < 100e-6  # generous: catches accidental O(n^2) or per-span slow paths
