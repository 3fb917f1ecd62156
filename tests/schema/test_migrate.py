"""Migrations: the span table honours the column contract; runs are idempotent; TTL follows."""

from __future__ import annotations

import time

import pytest

from schema.clickhouse import Database
from schema.migrate import Migration, available, migrate, ttl_days
from schema.spans import SPAN_COLUMNS, SPANS_TABLE
from tests.api.rows import BASE_NS, HOUR, NS, insert_spans, llm_span, span
from tests.conftest import TEST_RETENTION_DAYS

pytestmark = pytest.mark.clickhouse


def columns_of(db: Database, table: str) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in db.query(f"DESCRIBE TABLE {db.table(table)}")}


def test_first_run_applies_everything_in_order_and_second_run_does_nothing(
    empty_db: Database,
) -> None:
    names = [m.name for m in available()]
    assert names == sorted(names) and names[0].startswith("0001_")
    assert migrate(empty_db, 30) == names
    assert migrate(empty_db, 30) == []
    recorded = empty_db.query("SELECT name FROM {db}.schema_migrations ORDER BY version")
    assert [r[0] for r in recorded] == names
    tables = {r[0] for r in empty_db.query(
        "SELECT name FROM system.tables WHERE database = {d:String}", {"d": empty_db.name}
    )}  # fmt: skip
    assert {
        "otel_traces",
        "otel_traces_trace_id_ts",
        "otel_traces_trace_id_ts_mv",
        "llm_rollup_1m",
        "llm_rollup_1m_mv",
        "tenants",
        "api_keys",
        "schema_migrations",
    } <= tables


def test_half_applied_migration_is_completed_on_the_next_run(empty_db: Database) -> None:
    migrate(empty_db, 30)
    last = available()[-1]
    empty_db.command("DELETE FROM {db}.schema_migrations WHERE version = {v:String}",
                     {"v": last.version})  # fmt: skip
    # its DDL already ran: re-running it must be harmless (IF NOT EXISTS)
    assert migrate(empty_db, 30) == [last.name]
    assert migrate(empty_db, 30) == []


def test_span_table_has_exactly_the_contract_columns_in_order(db: Database) -> None:
    described = [str(r[0]) for r in db.query("DESCRIBE TABLE {db}.otel_traces")]
    assert tuple(described) == SPAN_COLUMNS


def test_span_column_types_match_the_collector_exporter_and_llmtel(db: Database) -> None:
    types = columns_of(db, SPANS_TABLE)
    expected = {
        "Timestamp": "DateTime64(9)",
        "TraceId": "String",
        "SpanName": "LowCardinality(String)",
        "ResourceAttributes": "Map(LowCardinality(String), String)",
        "SpanAttributes": "Map(LowCardinality(String), String)",
        "Duration": "UInt64",
        "StatusCode": "LowCardinality(String)",
        "Events.Timestamp": "Array(DateTime64(9))",
        "Events.Name": "Array(LowCardinality(String))",
        "Events.Attributes": "Array(Map(LowCardinality(String), String))",
        "Links.TraceId": "Array(String)",
        "Links.Attributes": "Array(Map(LowCardinality(String), String))",
        "TenantId": "LowCardinality(String)",
        "IsLlm": "Bool",
        "LlmResponseModel": "LowCardinality(String)",
        "LlmInputTokens": "UInt64",
        "LlmCostUsd": "Nullable(Decimal(38, 12))",
        "LlmCostSource": "LowCardinality(String)",
        "LlmTimeToFirstTokenMs": "Nullable(Float64)",
    }
    assert {name: types[name] for name in expected} == expected
    engine = db.query(
        "SELECT partition_key, sorting_key FROM system.tables "
        "WHERE database = {d:String} AND name = 'otel_traces'",
        {"d": db.name},
    )
    assert engine == [
        ("toDate(Timestamp)", "TenantId, ServiceName, SpanName, toDateTime(Timestamp)")
    ]
    indexes = {r[0]: r[1] for r in db.query(
        "SELECT name, type FROM system.data_skipping_indices "
        "WHERE database = {d:String} AND table = 'otel_traces'", {"d": db.name}
    )}  # fmt: skip
    assert indexes["idx_trace_id"] == "bloom_filter"
    assert indexes["idx_span_attr_key"] == "bloom_filter"
    assert indexes["idx_duration"] == "minmax"


def span_table_engine(db: Database) -> str:
    """otel_traces' engine clause with its settings, as ClickHouse reports it."""
    return str(
        db.query(
            "SELECT engine_full FROM system.tables "
            "WHERE database = {d:String} AND name = 'otel_traces'",
            {"d": db.name},
        )[0][0]
    )


def test_retention_change_modifies_the_ttl_once(db: Database) -> None:
    assert ttl_days(db, "otel_traces") == TEST_RETENTION_DAYS
    assert ttl_days(db, "otel_traces_trace_id_ts") == TEST_RETENTION_DAYS
    changed = migrate(db, 7)
    assert changed == [
        f"retention otel_traces: {TEST_RETENTION_DAYS} -> 7 days",
        f"retention otel_traces_trace_id_ts: {TEST_RETENTION_DAYS} -> 7 days",
    ]
    assert ttl_days(db, "otel_traces") == 7
    assert ttl_days(db, "otel_traces_trace_id_ts") == 7
    assert migrate(db, 7) == []
    engine_full = span_table_engine(db)
    assert "ttl_only_drop_parts = 1" in engine_full
    with pytest.raises(ValueError, match="at least 1"):
        migrate(db, 0)


def test_span_merges_use_the_wider_merge_selector(db: Database) -> None:
    """Migration 0011: fewer rewrites per span row (docs/benchmarks.md has the measurement)."""
    engine_full = span_table_engine(db)
    assert "merge_selector_base = 10" in engine_full
    assert "merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0" in engine_full


def test_expired_day_partitions_are_dropped(db: Database) -> None:
    insert_spans(db, [span(TenantId="a", Timestamp=BASE_NS - 3 * 24 * HOUR)])
    insert_spans(db, [span(TenantId="a", Timestamp=time.time_ns())])
    assert db.query("SELECT count() FROM {db}.otel_traces") == [(2,)]
    migrate(db, 1)
    db.command("OPTIMIZE TABLE {db}.otel_traces FINAL")
    assert db.query("SELECT count() FROM {db}.otel_traces") == [(1,)]


def test_trace_lookup_table_records_each_trace_time_range(db: Database) -> None:
    trace = "ab" * 16
    first = BASE_NS
    insert_spans(db, [
        llm_span(TraceId=trace, Timestamp=first + 500_000_000, TenantId="a"),
        span(TraceId=trace, Timestamp=first + 3 * 10**9, TenantId="a"),
    ])  # fmt: skip
    insert_spans(db, [span(TraceId=trace, Timestamp=first + 9 * 10**9, TenantId="a")])
    rows = db.query(
        "SELECT TenantId, toUnixTimestamp(min(Start)), toUnixTimestamp(max(End)) "
        "FROM {db}.otel_traces_trace_id_ts WHERE TraceId = {t:String} GROUP BY TenantId",
        {"t": trace},
    )
    assert rows == [("a", BASE_NS // NS, BASE_NS // NS + 9)]


def test_a_python_migration_runs_its_apply_and_must_define_one(empty_db: Database) -> None:
    source = (
        "def apply(db, ttl_days):\n"
        "    db.command(f'CREATE TABLE {{db}}.py_made (d UInt32) ENGINE = MergeTree ORDER BY d')\n"
        "    db.command(f'INSERT INTO {{db}}.py_made VALUES ({ttl_days})')\n"
    )
    Migration("9001", "9001_py_made", source, python=True).apply(empty_db, 7)
    assert empty_db.query("SELECT d FROM {db}.py_made") == [(7,)]
    with pytest.raises(RuntimeError, match="defines no apply"):
        Migration("9002", "9002_nothing", "x = 1\n", python=True).apply(empty_db, 7)
    assert any(m.python for m in available())  # 0014 is one
