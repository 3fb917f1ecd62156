"""The faust worker's pure core: per-partition windows, replay guards, restore, dead letters.

The helpers at the top (span specs -> encoded `llmtel.otlp.v1` records, and an independent
recomputation of the windows) are shared with the faust agent and real-Kafka tests.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from schema.kafka import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    HEADER_TENANT,
    OTLP_TOPIC,
    KafkaRecord,
    encode_otlp,
)
from schema.messages import OtlpMessage
from schema.models import ModelPriceOverride, PrivacyPolicy, TenantSettings
from schema.spans import COLUMN_INDEX, SpanBatch
from schema.windows import Metric, Scope, WindowRecord
from streams.faust_state import (
    Consumed,
    PartitionedWindows,
    Step,
    decode_record,
    partition_key,
    span_normalizer,
    tenant_key,
)
from streams.normalize import normalize
from streams.pricing import Pricer
from streams.windows import WindowConfig, p95_rank

S = 1_000_000_000
MS = 1_000_000
CONFIG = WindowConfig(window_s=1, lateness_s=0.5, history=10, min_history=3)
T0 = 1_700_000_000 * S  # a window boundary


# --- shared helpers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpanSpec:
    """One LLM span: it ends at `end_ns` and lasts `duration_ns`."""

    end_ns: int
    duration_ns: int = 200 * MS
    model: str = "gpt-4o-mini"
    provider: str = "openai"
    input_tokens: int = 100
    output_tokens: int = 20
    cost: str | None = None  # explicit cost attribute (gen_ai.usage.cost), USD
    error: bool = False
    service: str = "chat-app"


def _kv(key: str, value: str | int | float) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_request(specs: Sequence[SpanSpec]) -> ExportTraceServiceRequest:
    """One resource (service) per distinct `spec.service`."""
    request = ExportTraceServiceRequest()
    scopes: dict[str, Any] = {}
    for spec in specs:
        if spec.service not in scopes:
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.append(_kv("service.name", spec.service))
            scopes[spec.service] = resource_spans.scope_spans.add()
            scopes[spec.service].scope.name = "test"
        scope_spans = scopes[spec.service]
        span = Span(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name=f"chat {spec.model}",
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=spec.end_ns - spec.duration_ns,
            end_time_unix_nano=spec.end_ns,
        )
        attributes = [
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.provider.name", spec.provider),
            _kv("gen_ai.request.model", spec.model),
            _kv("gen_ai.response.model", spec.model),
            _kv("gen_ai.usage.input_tokens", spec.input_tokens),
            _kv("gen_ai.usage.output_tokens", spec.output_tokens),
        ]
        if spec.cost is not None:
            attributes.append(_kv("gen_ai.usage.cost", spec.cost))
        span.attributes.extend(attributes)
        if spec.error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message="boom"))
        scope_spans.spans.append(span)
    return request


def otlp_message(tenant: str, received_at_ns: int, specs: Sequence[SpanSpec]) -> OtlpMessage:
    return OtlpMessage(tenant, received_at_ns, otlp_request(specs), len(specs))


def otlp_record(tenant: str, received_at_ns: int, specs: Sequence[SpanSpec]) -> KafkaRecord:
    """The `llmtel.otlp.v1` record ingest would produce for these spans."""
    return encode_otlp(otlp_message(tenant, received_at_ns, specs))


def expected_windows(
    produced: Iterable[tuple[str, SpanSpec]], window_ns: int
) -> dict[tuple[str, Scope, str, int], dict[str, Any]]:
    """Tenant, model and service windows recomputed from the spans, independently of
    streams.windows.

    Only for spans with an explicit cost (the test knows the price)."""
    groups: dict[tuple[str, Scope, str, int], list[SpanSpec]] = {}
    for tenant, spec in produced:
        start = spec.end_ns - spec.end_ns % window_ns
        for scope, key in (
            (Scope.TENANT, ""),
            (Scope.MODEL, spec.model),
            (Scope.SERVICE, spec.service),
        ):
            groups.setdefault((tenant, scope, key, start), []).append(spec)
    expected = {}
    for group, specs in groups.items():
        durations = sorted(spec.duration_ns for spec in specs)
        expected[group] = {
            "requests": len(specs),
            "errors": sum(spec.error for spec in specs),
            "input_tokens": sum(spec.input_tokens for spec in specs),
            "output_tokens": sum(spec.output_tokens for spec in specs),
            "cost_usd": sum((Decimal(spec.cost or "0") for spec in specs), Decimal(0)),
            "latency_p95_ns": durations[p95_rank(len(durations)) - 1],
        }
    return expected


def window_values(record: WindowRecord) -> dict[str, Any]:
    return {
        "requests": record.requests,
        "errors": record.errors,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost_usd": record.cost_usd,
        "latency_p95_ns": record.latency_p95_ns,
    }


def window_id(record: WindowRecord) -> tuple[str, Scope, str, int]:
    return (record.tenant, record.scope, record.key, record.window_start_ns)


# --- helpers of this module -------------------------------------------------------------


def consumed(record: KafkaRecord, partition: int, offset: int) -> Consumed:
    return Consumed(OTLP_TOPIC, partition, offset, record.key, record.value, record.headers)


def driver(config: WindowConfig = CONFIG) -> PartitionedWindows:
    return PartitionedWindows(config, span_normalizer(Pricer()))


def persist(table: dict[bytes, bytes], step: Step) -> None:
    for write in step.writes:
        table[write.key] = write.value


def spans_in_window(k: int, n: int, cost: str = "0.01", **kw: Any) -> list[SpanSpec]:
    """n spans ending inside window k (counted from T0), 10 ms apart from its middle."""
    middle = T0 + k * S + S // 2
    return [SpanSpec(end_ns=middle + i * 10 * MS, cost=cost, **kw) for i in range(n)]


def traffic(
    windows: int, tenants: Sequence[str] = ("acme", "globex")
) -> list[tuple[str, int, list[SpanSpec]]]:
    """One message per tenant and window, received 100 ms after its spans."""
    out = []
    for k in range(windows):
        for tenant in tenants:
            specs = spans_in_window(k, 4)
            specs[1:3] = [dataclasses.replace(spec, service="batch-job") for spec in specs[1:3]]
            out.append((tenant, specs[-1].end_ns + 100 * MS, specs))
    return out


def as_consumed(
    messages: Sequence[tuple[str, int, list[SpanSpec]]], partition_of: dict[str, int]
) -> list[Consumed]:
    offsets: dict[int, int] = {}
    out = []
    for tenant, received, specs in messages:
        partition = partition_of[tenant]
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        out.append(consumed(otlp_record(tenant, received, specs), partition, offset))
    return out


def closed_windows(steps: Iterable[Step]) -> dict[tuple[str, Scope, str, int], dict[str, Any]]:
    """Non-empty windows by id; fails if one window came out twice with different values."""
    seen: dict[tuple[str, Scope, str, int], dict[str, Any]] = {}
    for step in steps:
        for record in step.windows:
            if record.requests == 0:
                continue
            values = window_values(record)
            assert seen.setdefault(window_id(record), values) == values, record
    return seen


def expected_for(messages: Sequence[tuple[str, int, list[SpanSpec]]]) -> dict[Any, Any]:
    return expected_windows(((tenant, spec) for tenant, _, specs in messages for spec in specs), S)


# --- tests ------------------------------------------------------------------------------


def test_windows_equal_an_independent_recomputation() -> None:
    messages = traffic(4)
    windows = driver()
    steps = [windows.process(as_consumed(messages, {"acme": 0, "globex": 1}))]
    steps.append(windows.advance(T0 + 10 * S))
    assert closed_windows(steps) == expected_for(messages)
    assert steps[0].applied == len(messages) and steps[0].late == 0


def test_a_backlog_closes_windows_on_receive_time_not_as_late() -> None:
    # a worker that was down for 6 windows: it starts with the wall clock far ahead, but the
    # partition is behind, so the driver does not advance it; receive times close the windows
    messages = traffic(6)
    windows = driver()
    step = windows.process(as_consumed(messages, {"acme": 0, "globex": 0}))
    assert step.late == 0
    # windows 0..4 closed while applying (window 5 is still open at the last receive time)
    starts = sorted({r.window_start_ns for r in step.windows if r.requests})
    assert starts == [T0 + k * S for k in range(5)]
    # anomalies are judged in order too: none in steady traffic
    assert step.anomalies == []
    final = windows.advance(T0 + 20 * S)
    assert closed_windows([step, final]) == expected_for(messages)


def test_state_is_written_per_tenant_on_its_partition() -> None:
    windows = driver()
    step = windows.process(as_consumed(traffic(1), {"acme": 0, "globex": 1}))
    writes = {(w.partition, w.key): decode_record(w.value) for w in step.writes}
    assert set(writes) == {
        (0, tenant_key("acme")),
        (1, tenant_key("globex")),
        (0, partition_key(0)),
        (1, partition_key(1)),
    }
    acme = writes[(0, tenant_key("acme"))]
    assert acme["p"] == 0 and acme["offset"] == 0 and acme["windows"]["open"]
    assert writes[(0, partition_key(0))] == {"v": 1, "p": 0, "next_offset": 1}


@pytest.mark.parametrize("crash_after", [1, 3, 5])
def test_replay_after_a_crash_counts_every_message_once(crash_after: int) -> None:
    """State persisted up to some batch, offsets committed earlier: the replay is skipped."""
    messages = traffic(6)
    records = as_consumed(messages, {"acme": 0, "globex": 0})
    table: dict[bytes, bytes] = {}
    first = driver()
    steps = []
    for index in range(0, crash_after * 2, 2):  # batches of two messages, each persisted
        steps.append(first.process(records[index : index + 2]))
        persist(table, steps[-1])
    # crash: offsets were committed only up to message 1; a new worker restores the table
    second = driver()
    second.restore([0], table.items())
    replay = second.process(records[2:])
    assert replay.skipped == crash_after * 2 - 2
    steps += [replay, second.advance(T0 + 20 * S)]
    assert closed_windows(steps) == expected_for(messages)


def test_partially_persisted_step_reapplies_only_the_unpersisted_tenants() -> None:
    messages = traffic(2)
    records = as_consumed(messages, {"acme": 0, "globex": 0})
    table: dict[bytes, bytes] = {}
    first = driver()
    persist(table, first.process(records[:2]))
    step = first.process(records[2:])
    # the crash lost globex's record and the partition record of the second step
    table[tenant_key("acme")] = next(w.value for w in step.writes if w.key == tenant_key("acme"))
    second = driver()
    second.restore([0], table.items())
    replay = second.process(records[2:])
    assert replay.skipped == 1 and replay.applied == 1
    final = second.advance(T0 + 20 * S)
    assert closed_windows([step, replay, final]) == expected_for(messages)


def test_restore_takes_only_the_wanted_partitions_and_skips_unreadable_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table: dict[bytes, bytes] = {}
    first = driver()
    persist(table, first.process(as_consumed(traffic(1), {"acme": 0, "globex": 1})))
    table[b"t:broken"] = b'{"v": 1, "p": 0, "windows": {"v": 99}}'
    table[b"t:garbage"] = b"not json"
    table[b"other"] = b"ignored"
    second = driver()
    second.restore([0], table.items())
    assert second.partitions() == [0]
    assert second.tenants(0) == ["acme"]
    assert second.next_offset(0) == 1
    assert "unreadable window state record" in caplog.text
    assert second.aggregator(0).tenant_state("acme") == first.aggregator(0).tenant_state("acme")


def test_contract_violations_become_dead_letters_and_processing_goes_on() -> None:
    good = otlp_record("acme", T0 + S // 2, spans_in_window(0, 2))
    no_headers = Consumed(OTLP_TOPIC, 0, 0, b"acme", good.value, [])
    not_protobuf = Consumed(OTLP_TOPIC, 0, 1, b"acme", b"\xff\xff\xff", good.headers)
    windows = driver()
    step = windows.process([no_headers, not_protobuf, consumed(good, 0, 2)])
    assert [letter.source.offset for letter in step.dead_letters] == [0, 1]
    headers = dict(step.dead_letters[1].headers())
    assert headers[HEADER_DLQ_SOURCE] == f"{OTLP_TOPIC}/0/1".encode()
    assert headers[HEADER_DLQ_REASON].startswith(b"contract: value is not an Export")
    assert headers[HEADER_TENANT] == b"acme"  # the original headers are kept
    assert step.applied == 1 and step.counted == 2
    assert windows.next_offset(0) == 3
    # a replay of the dead letters is skipped by the partition's offset
    assert windows.process([not_protobuf]).dead_letters == []


def test_a_failing_normaliser_sends_the_request_to_the_dead_letter_topic() -> None:
    def broken(message: OtlpMessage, payload: bytes) -> SpanBatch:
        raise KeyError("bug")

    windows = PartitionedWindows(CONFIG, broken)
    step = windows.process([consumed(otlp_record("acme", T0, spans_in_window(0, 1)), 0, 0)])
    assert step.dead_letters[0].reason == "normalize: KeyError: 'bug'"
    assert windows.next_offset(0) == 1


def test_a_five_fold_cost_spike_is_one_anomaly_per_scope() -> None:
    windows = driver()
    messages = traffic(5)
    spike = spans_in_window(5, 4, cost="0.05")
    messages.append(("acme", spike[-1].end_ns + 100 * MS, spike))
    step = windows.process(as_consumed(messages, {"acme": 0, "globex": 1}))
    step.anomalies += windows.advance(T0 + 7 * S).anomalies
    found = {(a.tenant, a.scope, a.key, a.metric) for a in step.anomalies}
    assert found == {
        ("acme", Scope.TENANT, "", Metric.COST_USD),
        ("acme", Scope.MODEL, "gpt-4o-mini", Metric.COST_USD),
        ("acme", Scope.SERVICE, "chat-app", Metric.COST_USD),
    }
    assert len(step.anomalies) == 3


def test_windows_cost_matches_what_the_sink_stores() -> None:
    """Priced by the same Pricer as the sink, content dropped: identical costs."""
    pricer = Pricer()
    specs = [SpanSpec(end_ns=T0 + S // 2, input_tokens=1234, output_tokens=567)]
    message = otlp_message("acme", T0 + S, specs)
    stored = normalize(message, TenantSettings(), pricer)
    cost_column = stored.columns[COLUMN_INDEX["LlmCostUsd"]]
    windows = driver()
    windows.process([consumed(encode_otlp(message), 0, 0)])
    (tenant_window,) = [
        r for r in windows.advance(T0 + 5 * S).windows if r.scope is Scope.TENANT and r.requests
    ]
    assert cost_column[0] is not None and tenant_window.cost_usd == cost_column[0]


def test_tenant_price_overrides_reach_the_windows() -> None:
    override = TenantSettings(
        privacy=PrivacyPolicy.FULL,
        price_overrides={
            "gpt-4o-mini": ModelPriceOverride(input_mtok=Decimal(1), output_mtok=Decimal(2))
        },
    )
    lookups: list[str] = []

    def settings_for(tenant: str) -> TenantSettings:
        lookups.append(tenant)
        return override if tenant == "acme" else TenantSettings()

    windows = PartitionedWindows(CONFIG, span_normalizer(Pricer(), settings_for))
    specs = [SpanSpec(end_ns=T0 + S // 2, input_tokens=1_000_000, output_tokens=1_000_000)]
    windows.process(
        [
            consumed(otlp_record("acme", T0 + S, specs), 0, 0),
            consumed(otlp_record("acme", T0 + S, specs), 0, 1),
        ]
    )
    (tenant_window,) = [
        r for r in windows.advance(T0 + 5 * S).windows if r.scope is Scope.TENANT and r.requests
    ]
    assert tenant_window.cost_usd == Decimal(6)  # 2 x (1 M input x $1 + 1 M output x $2)
    assert lookups == ["acme", "acme"]


def test_a_partition_whose_offsets_jump_is_held_back_until_re_read() -> None:
    messages = traffic(3, tenants=("acme",))
    records = as_consumed(messages, {"acme": 0})
    windows = driver()
    windows.process(records[:1])
    # the consumer lost offset 1 (faust does after a rebalance): nothing of partition 0 is
    # applied, the gap is reported
    step = windows.process(records[2:])
    assert step.gaps == {0: (1, 2)} and step.applied == 0 and not step.writes
    assert windows.next_offset(0) == 1
    # re-read from offset 1: everything once
    again = windows.process(records[1:])
    assert again.gaps == {} and again.applied == 2
    final = windows.advance(T0 + 20 * S)
    assert closed_windows([step, again, final]) == expected_for(messages)


def test_a_gap_of_one_partition_does_not_hold_back_the_others() -> None:
    records = as_consumed(traffic(2), {"acme": 0, "globex": 1})  # offsets 0, 1 on each
    windows = driver()
    windows.expect(0, 0)
    step = windows.process([r for r in records if (r.partition, r.offset) != (0, 0)])
    assert step.gaps == {0: (0, 1)}
    assert step.applied == 2  # globex's two messages


def test_the_committed_offset_of_a_partition_without_state_reveals_a_lost_first_message() -> None:
    records = as_consumed(traffic(2, tenants=("acme",)), {"acme": 0})
    windows = driver()
    windows.expect(0, 0)
    assert windows.process(records[1:]).gaps == {0: (0, 1)}
    windows.expect(0, 5)  # only for partitions without a position
    assert windows.next_offset(0) == 0


def test_skip_to_gives_up_messages_deleted_by_retention() -> None:
    records = as_consumed(traffic(4, tenants=("acme",)), {"acme": 0})
    windows = driver()
    windows.process(records[:1])
    windows.skip_to(0, 3)
    step = windows.process(records[3:])
    assert step.applied == 1 and step.gaps == {}
    assert {w.key: decode_record(w.value) for w in step.writes}[partition_key(0)][
        "next_offset"
    ] == 4
