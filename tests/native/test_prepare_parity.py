"""The compiled normaliser produces what the Python reference produces, on random requests.

tests/streams/test_normalize.py checks every curated case of the reference against the
compiled code too (its `run` helper); this adds seeded random requests mixing every shape
both have to agree on, several jobs per batch, tenants with different policies and prices,
and requests that fail.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from bench.workload import typical_request
from schema import semconv
from schema.models import ModelPriceOverride, PrivacyPolicy, TenantSettings
from streams.native_prepare import prepare_block
from streams.prepare import Job
from tests.native.parity import PRICER, assert_native_agrees
from tests.schema.test_native import span_column_types

START = 1_760_000_000_123_456_789

KEYS = [
    *(key for keys in semconv.SLOT_ATTRIBUTES.values() for key in keys),
    "gen_ai.prompt.0.content",
    "gen_ai.completion.0.content",
    "gen_ai.prompt.name",
    "input.value",
    "gen_ai.input.messages",
    "content",
    "message",
    "http.method",
    "server.address",
    "temperature",
    "ünïcode.kéy",
    "",
]
MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet-latest",
    "claude-sonnet-4-5",
    "gemini-1.5-pro",
    "deepseek-chat",
    "o1",
    "no-such-model-xyz",
    "",
]
PROVIDERS = ["openai", "anthropic", "google", "gcp.vertex_ai", "deepseek", "Azure", "", "x"]
TEXTS = [
    "",
    "plain",
    "mail me at someone@example.com",
    "call +1 415 555 0100 now",
    "card 4111 1111 1111 1111",
    "Bearer abcdefghijklmnopqrstuvwxyz012345",
    "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
    "<b>&amp;</b> \u2028 \u2029 ∑ 😀",
    'ctl \x00\x01\x08\x0c\x1f\x7f "q" \\ \n\t\r',
    "x" * 300,
]
COUNT_TEXTS = ["12", "0", " 7", "1e3", "12.0", "12.5", "-5", "abc", "１２", "99999999999", ""]


def any_value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(12 if depth < 2 else 7)
    if kind <= 1:
        return AnyValue(string_value=rng.choice(TEXTS + MODELS + COUNT_TEXTS))
    if kind == 2:
        return AnyValue(
            int_value=rng.choice(
                [0, 1, 127, 128, 16_383, 16_384, -1, -(2**63), 2**63 - 1, rng.randrange(10**6)]
            )
        )
    if kind == 3:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 4:
        return AnyValue(
            double_value=rng.choice(
                [
                    0.0,
                    -0.0,
                    0.7,
                    1.0,
                    1e16,
                    1e21,
                    1.5e-7,
                    1e-6,
                    5e-324,
                    1.7976931348623157e308,
                    float("nan"),
                    float("inf"),
                    -float("inf"),
                    rng.uniform(-1e6, 1e6),
                    rng.random() * 10 ** rng.randrange(-30, 30),
                ]
            )
        )
    if kind == 5:
        return AnyValue(bytes_value=rng.randbytes(rng.randrange(0, 7)))
    if kind == 6:
        return AnyValue()
    if kind <= 8:
        return AnyValue(
            array_value=ArrayValue(
                values=[any_value(rng, depth + 1) for _ in range(rng.randrange(4))]
            )
        )
    if kind <= 10:
        return AnyValue(
            kvlist_value=KeyValueList(
                values=[
                    KeyValue(key=rng.choice(KEYS), value=any_value(rng, depth + 1))
                    for _ in range(rng.randrange(4))
                ]
            )
        )
    return AnyValue(string_value=rng.choice(TEXTS))


def llm_value(rng: random.Random, key: str) -> AnyValue:
    slot = next((s for s, keys in semconv.SLOT_ATTRIBUTES.items() if key in keys), None)
    if slot in (semconv.REQUEST_MODEL, semconv.RESPONSE_MODEL):
        return AnyValue(string_value=rng.choice(MODELS))
    if slot == semconv.PROVIDER:
        return AnyValue(string_value=rng.choice(PROVIDERS))
    if slot in semconv.TOKEN_SLOTS:
        if rng.random() < 0.8:
            return AnyValue(int_value=rng.choice([0, 3, 150, 1000, 250_001, rng.randrange(10**5)]))
        if rng.random() < 0.5:
            return AnyValue(string_value=rng.choice(COUNT_TEXTS))
        return AnyValue(double_value=rng.choice([12.0, 12.5, -1.0, 1e30]))
    if slot == semconv.TIME_TO_FIRST_TOKEN:
        return rng.choice(
            [
                AnyValue(double_value=rng.random()),
                AnyValue(int_value=rng.randrange(900)),
                AnyValue(string_value=rng.choice(["12.5", "abc", "-3", "1e2", "inf", " 4"])),
            ]
        )
    if slot == semconv.COST_USD:
        return rng.choice(
            [
                AnyValue(double_value=rng.random()),
                AnyValue(string_value=rng.choice(["0.0125", "-1", "x", "1e-20", "3"])),
                AnyValue(int_value=2),
            ]
        )
    return any_value(rng)


def attributes(rng: random.Random, count: int) -> list[KeyValue]:
    out = []
    for _ in range(count):
        key = rng.choice(KEYS)
        value = llm_value(rng, key) if rng.random() < 0.7 else any_value(rng)
        out.append(KeyValue(key=key, value=value))
    return out


def random_span(rng: random.Random) -> Span:
    start = START + rng.randrange(-(10**13), 10**13)
    span = Span(
        trace_id=rng.choice([rng.randbytes(16), bytes(16), b""]),
        span_id=rng.choice([rng.randbytes(8), bytes(8)]),
        parent_span_id=rng.choice([b"", rng.randbytes(8), bytes(8)]),
        trace_state=rng.choice(["", "a=1,b=2"]),
        name=rng.choice(["chat gpt-4o", "", "embeddings", "ü"]),
        kind=rng.choice([0, 1, 2, 3, 4, 5]),
        start_time_unix_nano=rng.choice([start, 0]),
        end_time_unix_nano=rng.choice([start + rng.randrange(10**10), 0, start - 5]),
        attributes=attributes(rng, rng.randrange(0, 14)),
    )
    if rng.random() < 0.4:
        span.status.CopyFrom(Status(code=rng.choice([0, 1, 2]), message=rng.choice(["", "boom"])))
    for _ in range(rng.choice([0, 0, 1, 2])):
        event = span.events.add(
            time_unix_nano=start + rng.randrange(10**9),
            name=rng.choice(["gen_ai.choice", "gen_ai.user.message", "exception", "log"]),
        )
        event.attributes.extend(attributes(rng, rng.randrange(0, 4)))
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        link = span.links.add(
            trace_id=rng.randbytes(16), span_id=rng.randbytes(8), trace_state="k=v"
        )
        link.attributes.extend(attributes(rng, rng.randrange(0, 3)))
    return span


def random_request(rng: random.Random) -> bytes:
    request = ExportTraceServiceRequest()
    for _ in range(rng.randrange(1, 3)):
        resource_spans = request.resource_spans.add()
        resource_attributes = attributes(rng, rng.randrange(0, 4))
        service = rng.choice(
            [
                AnyValue(string_value="chat-app"),
                AnyValue(string_value="other"),
                AnyValue(int_value=3),
            ]
        )
        resource_attributes.insert(
            rng.randrange(len(resource_attributes) + 1), KeyValue(key="service.name", value=service)
        )
        resource_spans.resource.attributes.extend(resource_attributes)
        for _ in range(rng.randrange(0, 3)):
            scope_spans = resource_spans.scope_spans.add(
                scope=InstrumentationScope(
                    name=rng.choice(["", "openai"]), version=rng.choice(["", "1.0"])
                )
            )
            scope_spans.spans.extend(random_span(rng) for _ in range(rng.randrange(0, 12)))
    return request.SerializeToString()


SETTINGS = [
    TenantSettings(),
    TenantSettings(privacy=PrivacyPolicy.FULL),
    TenantSettings(privacy=PrivacyPolicy.HASHED),
    TenantSettings(privacy=PrivacyPolicy.OFF),
    TenantSettings(
        price_overrides={
            "gpt-4o": ModelPriceOverride(input_mtok=Decimal("1.1234567"), output_mtok=Decimal("2")),
            "no-such-model-xyz": ModelPriceOverride(
                input_mtok=Decimal("0.5"),
                output_mtok=Decimal("1.5"),
                cache_read_mtok=Decimal("0.05"),
            ),
        }
    ),
]


@pytest.mark.parametrize("seed", range(100))
def test_random_requests(seed: int) -> None:
    rng = random.Random(seed)
    jobs = [
        Job(
            rng.choice(["acme", "globex", "ü-tenant"]),
            START + rng.randrange(10**10),
            random_request(rng),
            rng.choice(SETTINGS),
        )
        for _ in range(rng.randrange(1, 6))
    ]
    assert_native_agrees(jobs, window_ns=rng.choice([10**9, 60 * 10**9]))


def test_typical_batch_with_a_broken_request_in_the_middle() -> None:
    good = [typical_request(64, seed=seed) for seed in range(3)]
    broken = good[0][: len(good[0]) // 2]  # truncated inside a span
    jobs = [
        Job("acme", START, payload, TenantSettings())
        for payload in (good[0], broken, good[1], good[2])
    ]
    prepared = assert_native_agrees(jobs)
    assert [index for index, _ in prepared.failures] == [1]
    assert prepared.rows == 3 * 64


def test_garbage_fails_alone() -> None:
    jobs = [
        Job("acme", START, b"\xff\xff\xff", TenantSettings()),
        Job("acme", START, typical_request(8, seed=1), TenantSettings()),
        Job("acme", START, b"", TenantSettings()),  # an empty request: no rows, no failure
    ]
    prepared = assert_native_agrees(jobs)
    assert [index for index, _ in prepared.failures] == [0]
    assert prepared.rows == 8


def test_any_failure_keeps_nothing_of_that_request() -> None:
    """Invalid UTF-8 in a late span name: the spans of that request before it are dropped."""
    request = ExportTraceServiceRequest.FromString(typical_request(16, seed=3))
    raw = bytearray(request.SerializeToString())
    at = raw.rfind(b"chat ")
    assert at > 0
    raw[at] = 0xFF
    jobs = [
        Job("acme", START, bytes(raw), TenantSettings()),
        Job("b", START, typical_request(4, seed=4), TenantSettings()),
    ]
    prepared = assert_native_agrees(jobs)
    assert [index for index, _ in prepared.failures] == [0]
    assert prepared.rows == 4


def test_without_window_sums() -> None:
    """window_ns 0 (the Kafka sink keeps no windows): the same block, no sums."""
    jobs = [Job("acme", START, typical_request(32, seed=seed), TenantSettings()) for seed in (5, 6)]
    prepared = assert_native_agrees(jobs, window_ns=0)
    assert prepared.rows == 64 and prepared.windows == []


def test_threads_share_the_compiled_normaliser() -> None:
    """`LLMTEL_PREPARE_WORKERS=0` and the Kafka sink prepare in threads at the same time,
    through one cached normaliser; its privacy-filter callbacks let threads interleave."""
    batches = [
        [
            Job("acme", START, typical_request(64, seed=seed * 10 + i), SETTINGS[i % 3])
            for i in range(4)
        ]
        for seed in range(8)
    ]
    types = span_column_types()
    expected = [prepare_block(jobs, types, 10**9, PRICER).block for jobs in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            blocks = list(pool.map(lambda jobs: prepare_block(jobs, types, 10**9, PRICER), batches))
            assert [prepared.failures for prepared in blocks] == [[]] * len(batches)
            assert [prepared.block for prepared in blocks] == expected
