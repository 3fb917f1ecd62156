"""Native blocks encoded apart from the insert are exactly what clickhouse-connect sends."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bench.workload import typical_request
from schema.clickhouse import Database
from schema.models import PrivacyPolicy, TenantSettings
from schema.native import encode_native
from schema.spans import SPAN_COLUMNS, SPANS_TABLE, SpanBatch
from streams.normalize import normalize_payload
from streams.pricing import Pricer

# The span table's column types in SPAN_COLUMNS order, for tests that encode without a
# database at hand; `test_encoding_matches_clickhouse_connects_own_encoder` checks it.
MAP = "Map(LowCardinality(String), String)"
LC = "LowCardinality(String)"
SPAN_TYPES = [
    *("DateTime64(9)", "String", "String", "String", "String", LC, LC, LC, MAP, "String"),
    *("String", MAP, "UInt64", LC, "String", "Array(DateTime64(9))", f"Array({LC})"),
    *(f"Array({MAP})", "Array(String)", "Array(String)", "Array(String)", f"Array({MAP})", LC),
    *("Bool", LC, LC, LC, LC, "UInt64", "UInt64", "UInt64", "UInt64"),
    *("Nullable(Decimal(38, 12))", LC, "Nullable(Float64)"),
]


def with_odd_spans(payload: bytes) -> bytes:
    """Typical spans plus an event, a link, an unknown model and a span without attributes."""
    request = ExportTraceServiceRequest.FromString(payload)
    spans = request.resource_spans[0].scope_spans[0].spans
    event = spans[0].events.add(time_unix_nano=spans[0].start_time_unix_nano, name="gen_ai.choice")
    event.attributes.append(KeyValue(key="finish_reason", value=AnyValue(string_value="stop")))
    spans[1].links.add(trace_id=spans[0].trace_id, span_id=spans[0].span_id)
    spans[2].attributes.append(
        KeyValue(key="gen_ai.response.model", value=AnyValue(string_value="no-such-model-x"))
    )
    del spans[3].attributes[:]
    return request.SerializeToString()


def span_column_types() -> list[str]:
    """The span table's column types, as `Database.column_types` reads them from a database."""
    return SPAN_TYPES


def typical_batch() -> SpanBatch:
    """Spans with costs and unpriced (None) costs, events, content and empty maps."""
    batch = SpanBatch()
    pricer = Pricer()
    for seed, privacy in enumerate(PrivacyPolicy):
        payload = with_odd_spans(typical_request(64, seed=seed))
        batch.extend(
            normalize_payload(
                payload, f"t{seed}", time.time_ns(), TenantSettings(privacy=privacy), pricer
            )
        )
    return batch


def python_encoded(types: list[str], columns: list[list[Any]]) -> bytes:
    context = InsertContext(
        "t", list(SPAN_COLUMNS), [get_from_name(t) for t in types], columns, column_oriented=True
    )
    sent = b"".join(NativeTransform.build_insert(context))
    prefix, _, block = sent.partition(b" FORMAT Native\n")  # the query text the client adds
    assert prefix.startswith(b"INSERT INTO")
    return block


def test_encoding_matches_clickhouse_connects_own_encoder(db: Database) -> None:
    types = db.column_types(SPANS_TABLE, SPAN_COLUMNS)
    assert types == SPAN_TYPES
    batch = typical_batch()
    assert None in batch.column("LlmCostUsd") and any(batch.column("Events.Name"))
    assert encode_native(SPAN_COLUMNS, types, batch.columns) == python_encoded(types, batch.columns)


def test_insert_native_round_trips_every_column(db: Database) -> None:
    types = db.column_types(SPANS_TABLE, SPAN_COLUMNS)
    batch = typical_batch()
    db.insert_native(SPANS_TABLE, SPAN_COLUMNS, encode_native(SPAN_COLUMNS, types, batch.columns))
    names = ", ".join(f"`{name}`" for name in SPAN_COLUMNS)
    stored = db.query(f"SELECT {names} FROM {{db}}.otel_traces ORDER BY TenantId, SpanId")
    expected = sorted(zip(*batch.columns, strict=True), key=lambda row: (row[22], row[2]))
    assert len(stored) == len(expected) == len(batch)
    cost = SPAN_COLUMNS.index("LlmCostUsd")
    for got, want in zip(stored, expected, strict=True):
        assert got[cost] == want[cost]  # exact decimals, NULL stays NULL
        assert got[1:3] == want[1:3] and got[11] == want[11] and got[22] == want[22]
    assert sum((row[cost] or Decimal(0)) for row in stored) == sum(
        (c or Decimal(0)) for c in batch.column("LlmCostUsd")
    )


def test_ragged_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        encode_native(["a", "b"], ["UInt8", "UInt8"], [[1, 2], [1]])
