"""What the sink's exactly-once storage rests on, checked on the engine itself (migration
0006): a batch inserted again under its token is stored once, in the span table and in
both views fed from it; and the sink's record of a batch reads back exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aiokafka import TopicPartition

from schema.clickhouse import Database
from schema.spans import SPAN_COLUMNS, SPANS_TABLE
from streams.sink import DEDUP_SETTINGS, _Range, _ranges_from_json, _ranges_json
from tests.api.rows import columns, llm_span

pytestmark = pytest.mark.clickhouse


def insert(db: Database, rows: list[dict[str, Any]], token: str) -> None:
    settings = {**DEDUP_SETTINGS, "insert_deduplication_token": token}
    db.insert_columns(SPANS_TABLE, columns(rows), SPAN_COLUMNS, settings=settings)


def totals(db: Database) -> tuple[Any, ...]:
    spans, cost = db.query(f"SELECT count(), sum(LlmCostUsd) FROM {{db}}.{SPANS_TABLE}")[0]
    requests, rollup_cost = db.query("SELECT sum(Requests), sum(CostUsd) FROM {db}.llm_rollup_1m")[
        0
    ]
    traces = db.query("SELECT count() FROM {db}.otel_traces_trace_id_ts")[0][0]
    return spans, cost, requests, rollup_cost, traces


def test_a_batch_inserted_again_under_its_token_is_counted_once(db: Database) -> None:
    batch = [llm_span(cost="0.25") for _ in range(3)]
    insert(db, batch, "batch-1")
    once = totals(db)
    assert once == (3, Decimal("0.75"), 3, Decimal("0.75"), 3)

    insert(db, batch, "batch-1")  # the redelivery
    assert totals(db) == once

    insert(db, [llm_span(cost="0.25") for _ in range(3)], "batch-2")
    assert totals(db) == (6, Decimal("1.5"), 6, Decimal("1.5"), 6)


def test_views_are_not_double_counted_even_when_their_blocks_look_alike(db: Database) -> None:
    # two different batches whose rollup blocks are identical: both must count
    insert(db, [llm_span(cost="0.1", Timestamp=1_800_000_000 * 10**9, TraceId="a" * 32)], "x")
    insert(db, [llm_span(cost="0.1", Timestamp=1_800_000_000 * 10**9, TraceId="a" * 32)], "y")
    spans, _, requests, rollup_cost, _ = totals(db)
    assert (spans, requests, rollup_cost) == (2, 2, Decimal("0.2"))


def test_the_dedup_window_is_set_where_the_sink_inserts(db: Database) -> None:
    for table in ("otel_traces", "llm_rollup_1m", "otel_traces_trace_id_ts"):
        (engine,) = db.query(
            "SELECT engine_full FROM system.tables "
            "WHERE database = {d:String} AND name = {t:String}",
            {"d": db.name, "t": table},
        )[0]
        assert "non_replicated_deduplication_window = 10000" in engine, table


def test_a_recorded_batch_reads_back_exactly() -> None:
    ranges = {
        TopicPartition("llmtel.otlp.v1", 2): _Range(10, 17, 11, 1_700_000_000_123),
        TopicPartition("llmtel.otlp.v1", 0): _Range(0, 4, 0, 1_700_000_000_000),
        TopicPartition("llmtel.windows.v1", 0): _Range(5, 6, 5, 1_700_000_000_999),
    }
    assert _ranges_from_json(_ranges_json(ranges)) == ranges
