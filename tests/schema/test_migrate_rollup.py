"""The per-minute LLM rollup, filled by its materialized view on every span insert."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schema.clickhouse import Database
from schema.migrate import migrate
from tests.api.rows import BASE_NS, MS, NS, insert_spans, llm_span, span

pytestmark = pytest.mark.clickhouse

FIGURES = (
    "sum(Requests), sum(Errors), sum(InputTokens), sum(OutputTokens), sum(CacheReadTokens), "
    "sum(ReasoningTokens), sum(CostUsd), sum(UnpricedRequests)"
)


def rollup(db: Database, group: str = "", where: str = "1") -> list[tuple[Any, ...]]:
    keys = f"{group}, " if group else ""
    tail = f" GROUP BY {group} ORDER BY {group}" if group else ""
    return db.query(f"SELECT {keys}{FIGURES} FROM {{db}}.llm_rollup_1m WHERE {where}{tail}")


def test_counts_tokens_and_exact_cost_per_minute_model_and_tenant(db: Database) -> None:
    minute = BASE_NS
    spans = [
        llm_span(TenantId="a", Timestamp=minute + i * NS, cost="0.1", input_tokens=10,
                 output_tokens=5, LlmCacheReadTokens=2, LlmReasoningTokens=1)
        for i in range(3)
    ] + [
        llm_span(TenantId="a", Timestamp=minute + 5 * NS, cost="0.2", StatusCode="Error"),
        llm_span(TenantId="a", Timestamp=minute + 61 * NS, cost=None, model="mystery"),
        llm_span(TenantId="b", Timestamp=minute, cost="0.000000000001"),
        span(TenantId="a", Timestamp=minute + NS),  # not an LLM span: not in the rollup
    ]  # fmt: skip
    insert_spans(db, spans)
    rows = rollup(db, "TenantId, toUnixTimestamp(Minute), Model")
    m0 = minute // NS
    assert rows == [
        ("a", m0, "gpt-4o", 4, 1, 130, 35, 6, 3, Decimal("0.5"), 0),
        ("a", m0 + 60, "mystery", 1, 0, 100, 20, 0, 0, Decimal("0"), 1),
        ("b", m0, "gpt-4o", 1, 0, 100, 20, 0, 0, Decimal("0.000000000001"), 0),
    ]


def test_decimal_sums_stay_exact_across_inserts_and_merges(db: Database) -> None:
    # 0.1 + 0.2 in floating point is 0.30000000000000004; in Decimal(38, 12) it is 0.3
    for _ in range(10):
        insert_spans(db, [llm_span(TenantId="a", cost="0.1"), llm_span(TenantId="a", cost="0.2")])
    insert_spans(db, [llm_span(TenantId="a", cost="0.000000000001") for _ in range(1000)])
    insert_spans(db, [llm_span(TenantId="a", cost="123456789012.123456789012")])
    expected = Decimal("3") + Decimal("0.000000001") + Decimal("123456789012.123456789012")
    assert rollup(db)[0][6] == expected
    db.command("OPTIMIZE TABLE {db}.llm_rollup_1m FINAL")
    assert rollup(db)[0][6] == expected
    assert rollup(db)[0][0] == 1021
    parts = db.query("SELECT count() FROM {db}.llm_rollup_1m")
    assert parts[0][0] < 1021  # aggregated, not one row per span


def test_model_falls_back_to_the_request_model(db: Database) -> None:
    insert_spans(db, [
        llm_span(TenantId="a", LlmRequestModel="gpt-4o", LlmResponseModel="gpt-4o-2024-08-06"),
        llm_span(TenantId="a", LlmRequestModel="claude-x", LlmResponseModel=""),
    ])  # fmt: skip
    assert [r[0] for r in rollup(db, "Model")] == ["claude-x", "gpt-4o-2024-08-06"]


def test_latency_quantiles_are_plausible(db: Database) -> None:
    spans = [
        llm_span(TenantId="a", Duration=(i + 1) * MS, LlmTimeToFirstTokenMs=float(i + 1))
        for i in range(1000)
    ] + [llm_span(TenantId="a", Duration=5 * MS)]  # no TTFT: not in the TTFT digest
    insert_spans(db, spans[:500])
    insert_spans(db, spans[500:])
    (p50, p95), ttft50 = db.query(
        "SELECT quantilesTDigestMerge(0.5, 0.95)(DurationNs), "
        "quantileTDigestMerge(0.5)(TimeToFirstTokenMs) FROM {db}.llm_rollup_1m"
    )[0]
    assert 450 * MS <= p50 <= 550 * MS
    assert 900 * MS <= p95 <= 1000 * MS
    assert 450 <= ttft50 <= 550


SKETCH_QUANTILES = (
    "SELECT quantilesDDMerge(0.01, 0.5, 0.95)(DurationNs), "
    "quantileDDMerge(0.01, 0.5)(TimeToFirstTokenMs) FROM {db}.llm_latency_sketch_"
)


def test_latency_sketches_per_tenant_minute_and_hour(db: Database) -> None:
    spans = [
        llm_span(TenantId="a", Timestamp=BASE_NS + i * NS, Duration=(i + 1) * MS,
                 LlmTimeToFirstTokenMs=float(i + 1))
        for i in range(1000)
    ] + [
        llm_span(TenantId="a", Timestamp=BASE_NS, Duration=5 * MS),  # no TTFT
        llm_span(TenantId="b", Timestamp=BASE_NS, Duration=60_000 * MS),  # another tenant
        span(TenantId="a", Timestamp=BASE_NS, Duration=60_000 * MS),  # not an LLM span
    ]  # fmt: skip
    insert_spans(db, spans[:500])
    insert_spans(db, spans[500:])
    for grain in ("1m", "1h"):
        (p50, p95), ttft50 = db.query(SKETCH_QUANTILES + grain + " WHERE TenantId = 'a'")[0]
        # exact: 500 and 950 ms (1,001 values); the sketch is within 1 % of a value near them
        assert p50 == pytest.approx(500 * MS, rel=0.02)
        assert p95 == pytest.approx(950 * MS, rel=0.02)
        assert ttft50 == pytest.approx(500, rel=0.02)
    minutes = db.query(
        "SELECT TenantId, count() FROM {db}.llm_latency_sketch_1m FINAL "
        "GROUP BY TenantId ORDER BY TenantId"
    )
    assert minutes == [("a", 17), ("b", 1)]  # 1,000 s of spans: 17 minutes


def test_sketch_migration_backfills_retained_spans(db: Database) -> None:
    insert_spans(db, [llm_span(TenantId="a", Timestamp=BASE_NS, Duration=700 * MS)])
    for table in ("llm_latency_sketch_1m_mv", "llm_latency_sketch_1h_mv",
                  "llm_latency_sketch_1m", "llm_latency_sketch_1h"):  # fmt: skip
        db.command(f"DROP TABLE {{db}}.{table}")
    db.command("DELETE FROM {db}.schema_migrations WHERE version = '0012'")
    assert migrate(db, 30) == ["0012_latency_sketches"]
    for grain in ("1m", "1h"):
        (p50, _), _ = db.query(SKETCH_QUANTILES + grain)[0]
        assert p50 == pytest.approx(700 * MS, rel=0.01)
    # and the views keep them up to date afterwards
    insert_spans(db, [llm_span(TenantId="a", Timestamp=BASE_NS, Duration=100 * MS)])
    for grain in ("1m", "1h"):
        [(fastest,)] = db.query(
            f"SELECT quantileDDMerge(0.01, 0)(DurationNs) FROM {{db}}.llm_latency_sketch_{grain}"
        )
        assert fastest == pytest.approx(100 * MS, rel=0.01)
    assert migrate(db, 30) == []


OVERVIEW_TABLES = (
    "llm_tenant_series_1m_mv",
    "llm_latency_sketch_all_1h_mv",
    "llm_tenant_series_1m",
    "llm_latency_sketch_all_1h",
)


def overview_rollups(db: Database) -> tuple[Any, ...]:
    series = db.query(
        "SELECT TenantId, Minute, sum(Requests), sum(Errors), sum(CostUsd) "
        "FROM {db}.llm_tenant_series_1m GROUP BY TenantId, Minute ORDER BY TenantId, Minute"
    )
    sketches = db.query(
        "SELECT Hour, quantilesDDMerge(0.01, 0.5, 1)(DurationNs), "
        "ifNotFinite(quantileDDMerge(0.01, 0.5)(TimeToFirstTokenMs), -1) "
        "FROM {db}.llm_latency_sketch_all_1h GROUP BY Hour ORDER BY Hour"
    )
    return series, sketches


def test_overview_rollups_match_their_sources_after_backfill_and_inserts(db: Database) -> None:
    """0015: per tenant and minute, the sums of llm_rollup_1m; per hour, the sketch of every
    tenant's calls (whether backfilled by the migration or fed by the views)."""
    first = [
        llm_span(TenantId="a", Timestamp=BASE_NS + i * 20 * NS, Duration=100 * MS,
                 cost="0.25", StatusCode="Error" if i == 0 else "Ok",
                 LlmTimeToFirstTokenMs=10.0)
        for i in range(6)
    ] + [
        llm_span(TenantId="b", Timestamp=BASE_NS + 3600 * NS, Duration=900 * MS, cost=None),
        llm_span(TenantId="b", Timestamp=BASE_NS, Duration=900 * MS, cost="1"),
    ]  # fmt: skip
    insert_spans(db, first)
    fed = overview_rollups(db)
    for table in OVERVIEW_TABLES:
        db.command(f"DROP TABLE {{db}}.{table}")
    db.command("DELETE FROM {db}.schema_migrations WHERE version = '0015'")
    assert migrate(db, 30) == ["0015_overview_rollups"]
    assert overview_rollups(db) == fed
    series, sketches = fed
    assert series == [
        ("a", datetime.fromtimestamp(BASE_NS // NS, UTC).replace(tzinfo=None), 3, 1,
         Decimal("0.75")),
        ("a", datetime.fromtimestamp(BASE_NS // NS + 60, UTC).replace(tzinfo=None), 3, 0,
         Decimal("0.75")),
        ("b", datetime.fromtimestamp(BASE_NS // NS, UTC).replace(tzinfo=None), 1, 0,
         Decimal("1")),
        ("b", datetime.fromtimestamp(BASE_NS // NS + 3600, UTC).replace(tzinfo=None), 1, 0,
         Decimal("0")),
    ]  # fmt: skip
    (_, (p50, slowest), ttft50), (_, (late50, _), late_ttft) = sketches
    assert p50 == pytest.approx(100 * MS, rel=0.01)  # 6 of a's calls and 1 of b's
    assert slowest == pytest.approx(900 * MS, rel=0.01)
    assert ttft50 == pytest.approx(10, rel=0.01)
    assert late50 == pytest.approx(900 * MS, rel=0.01)
    assert late_ttft == -1  # b's later call has no time to first token
    # the views keep both up to date
    insert_spans(db, [llm_span(TenantId="a", Timestamp=BASE_NS, Duration=5000 * MS, cost="1")])
    series, sketches = overview_rollups(db)
    assert series[0][2:] == (4, 1, Decimal("1.75"))
    assert sketches[0][1][1] == pytest.approx(5000 * MS, rel=0.01)
