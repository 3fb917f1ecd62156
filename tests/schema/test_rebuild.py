"""Rebuilding a table with a new index_granularity: no row lost or doubled, views still
bound, and an interrupted rebuild completes on the next run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from schema.clickhouse import Database
from schema.migrate import migrate
from schema.rebuild import (
    SPARE_SUFFIX,
    create_query,
    merges_vertically,
    partitions,
    regranulate,
    table_granularity,
    with_granularity,
)
from tests.api.rows import BASE_NS, HOUR, MS, NS, insert_spans, llm_span
from tests.conftest import TEST_RETENTION_DAYS

pytestmark = pytest.mark.clickhouse

DAY = 24 * HOUR


@pytest.fixture
def chain(empty_db: Database) -> Iterator[Database]:
    """src -> (view) -> mid (4 monthly partitions) -> (view) -> top: a table both read and
    written by materialized views, like llm_latency_1m."""
    db = empty_db
    db.command(
        "CREATE TABLE {db}.src (t DateTime, k UInt32, v UInt64) ENGINE = MergeTree "
        "PARTITION BY toYYYYMM(t) ORDER BY (k, t)"
    )
    db.command(
        "CREATE TABLE {db}.mid (k UInt32, t DateTime, n SimpleAggregateFunction(sum, UInt64)) "
        "ENGINE = AggregatingMergeTree PARTITION BY toYYYYMM(t) ORDER BY (k, t)"
    )
    db.command(
        "CREATE TABLE {db}.top (k UInt32, n SimpleAggregateFunction(sum, UInt64)) "
        "ENGINE = AggregatingMergeTree ORDER BY k"
    )
    db.command(
        "CREATE MATERIALIZED VIEW {db}.src_mv TO {db}.mid AS "
        "SELECT k, toStartOfHour(t) AS t, sum(v) AS n FROM {db}.src GROUP BY k, t"
    )
    db.command(
        "CREATE MATERIALIZED VIEW {db}.mid_mv TO {db}.top AS "
        "SELECT k, sum(n) AS n FROM {db}.mid GROUP BY k"
    )
    insert(db, 0, 4000)
    yield db


def insert(db: Database, first: int, count: int) -> None:
    """`count` rows over four months, v = 1 each, k = row number mod 7."""
    db.command(
        "INSERT INTO {db}.src SELECT toDateTime('2026-01-01 00:00:00') + "
        "toIntervalDay(number % 120), number % 7, 1 "
        f"FROM numbers({first}, {count})"
    )


def figures(db: Database) -> tuple[Any, ...]:
    return (
        db.query("SELECT count(), sum(v) FROM {db}.src")[0],
        db.query("SELECT k, sum(n) FROM {db}.mid GROUP BY k ORDER BY k"),
        db.query("SELECT k, sum(n) FROM {db}.top GROUP BY k ORDER BY k"),
    )


def tables(db: Database) -> set[str]:
    rows = db.query("SELECT name FROM system.tables WHERE database = {d:String}", {"d": db.name})
    return {str(r[0]) for r in rows}


def largest_granule(db: Database, table: str) -> int:
    """The most rows per granule (on average within a part) over `table`'s active parts."""
    parts = db.query(
        "SELECT rows, marks FROM system.parts WHERE database = {d:String} "
        "AND table = {t:String} AND active",
        {"d": db.name, "t": table},
    )
    # a part of R rows in granules of G rows has at least ceil(R / G) marks
    return max(-(-int(rows) // max(int(marks), 1)) for rows, marks in parts)


def test_rows_stay_once_and_views_keep_feeding_both_ways(chain: Database) -> None:
    db = chain
    before = figures(db)
    assert table_granularity(db, "mid") == 8192
    assert regranulate(db, "mid", 16) is True
    assert table_granularity(db, "mid") == 16
    assert figures(db) == before  # every part moved over, none twice
    assert f"mid{SPARE_SUFFIX}" not in tables(db)
    # the view into `mid` and the view out of it follow the new table
    insert(db, 4000, 700)
    count, total = figures(db)[0]
    assert (count, total) == (4700, 4700)
    assert sum(int(n) for _, n in figures(db)[1]) == 4700
    assert sum(int(n) for _, n in figures(db)[2]) == 4700
    assert regranulate(db, "mid", 16) is False  # already done


def test_rewrite_gives_the_moved_parts_the_new_granules(chain: Database) -> None:
    db = chain
    db.command("OPTIMIZE TABLE {db}.mid FINAL")
    assert largest_granule(db, "mid") > 16
    before = figures(db)
    regranulate(db, "mid", 16, rewrite=True)
    assert largest_granule(db, "mid") <= 16
    assert figures(db) == before


def test_interrupted_before_the_rewrite_completes_it(chain: Database) -> None:
    db = chain
    db.command("OPTIMIZE TABLE {db}.mid FINAL")
    before = figures(db)
    assert regranulate(db, "mid", 16) is True  # as if stopped after the move
    assert largest_granule(db, "mid") > 16
    assert regranulate(db, "mid", 16, rewrite=True) is True
    assert largest_granule(db, "mid") <= 16
    assert figures(db) == before
    assert regranulate(db, "mid", 16, rewrite=True) is False


def wide_table(db: Database, settings: str = "") -> None:
    """12 columns outside the sorting key, in two wide parts: merges of it run vertically
    (the thresholds lowered so that 4,000 rows are enough)."""
    columns = ", ".join(f"c{i} UInt64" for i in range(12))
    db.command(
        f"CREATE TABLE {{db}}.wide (k UInt32, {columns}) ENGINE = MergeTree ORDER BY k "
        "SETTINGS vertical_merge_algorithm_min_rows_to_activate = 1, "
        f"min_bytes_for_wide_part = 0{settings}"
    )
    for first in (0, 2000):
        values = ", ".join(f"number * {i}" for i in range(12))
        db.command(f"INSERT INTO {{db}}.wide SELECT number, {values} FROM numbers({first}, 2000)")


def test_a_rewrite_is_refused_where_merges_keep_the_old_granules(empty_db: Database) -> None:
    db = empty_db
    wide_table(db)
    assert merges_vertically(db, "wide") is True
    assert merges_vertically(db, "otel_traces_missing") is False
    with pytest.raises(ValueError, match="merges vertically"):
        regranulate(db, "wide", 16, rewrite=True)
    assert table_granularity(db, "wide") == 8192  # refused before touching anything
    assert "wide" + SPARE_SUFFIX not in tables(db)
    # why: the rebuild itself works, but a vertical merge keeps each part's granules
    assert regranulate(db, "wide", 16) is True
    db.command("OPTIMIZE TABLE {db}.wide FINAL")
    assert largest_granule(db, "wide") > 16
    assert db.query("SELECT count(), sum(c3) FROM {db}.wide")[0] == (4000, 3 * 3999 * 4000 // 2)


def test_a_rewrite_works_where_merges_are_horizontal(empty_db: Database) -> None:
    db = empty_db
    wide_table(db, ", enable_vertical_merge_algorithm = 0")
    assert merges_vertically(db, "wide") is False
    assert regranulate(db, "wide", 16, rewrite=True) is True
    assert largest_granule(db, "wide") <= 16
    assert db.query("SELECT count(), sum(c3) FROM {db}.wide")[0] == (4000, 3 * 3999 * 4000 // 2)


def test_interrupted_after_create_completes(chain: Database) -> None:
    db = chain
    before = figures(db)
    regranulate(db, "mid", 16)
    regranulate(db, "mid", 8192)  # back, then stop right after creating the spare
    query = create_query(db, "mid")
    assert query is not None
    db.command(with_granularity(query, db.table("mid"), db.table("mid" + SPARE_SUFFIX), 32))
    assert regranulate(db, "mid", 32) is True
    assert table_granularity(db, "mid") == 32
    assert figures(db) == before


def test_interrupted_after_exchange_and_a_partial_move_completes(chain: Database) -> None:
    db = chain
    before = figures(db)
    spare = f"mid{SPARE_SUFFIX}"
    query = create_query(db, "mid")
    assert query is not None
    db.command(with_granularity(query, db.table("mid"), db.table(spare), 16))
    db.command(f"EXCHANGE TABLES {{db}}.mid AND {{db}}.{spare}")
    first = partitions(db, spare)[0]
    db.command(f"ALTER TABLE {{db}}.{spare} MOVE PARTITION ID '{first}' TO TABLE {{db}}.mid")
    assert len(partitions(db, spare)) == 3
    assert regranulate(db, "mid", 16) is True
    assert figures(db) == before
    assert spare not in tables(db)


def test_a_foreign_spare_table_is_refused_not_dropped(chain: Database) -> None:
    db = chain
    db.command(f"CREATE TABLE {{db}}.mid{SPARE_SUFFIX} (x UInt8) ENGINE = MergeTree ORDER BY x")
    db.command(f"INSERT INTO {{db}}.mid{SPARE_SUFFIX} VALUES (1)")
    with pytest.raises(RuntimeError, match="left over"):
        regranulate(db, "mid", 16)
    assert db.query(f"SELECT count() FROM {{db}}.mid{SPARE_SUFFIX}") == [(1,)]
    assert table_granularity(db, "mid") == 8192


def test_missing_table_is_an_error(chain: Database) -> None:
    with pytest.raises(LookupError, match="no table"):
        regranulate(chain, "nope", 16)


def test_migration_0014_on_a_database_with_data(db: Database) -> None:
    """Upgrade: tables of 8,192-row granules holding spans get the smaller ones; the trace
    ranges and latency buckets read the same, and the views go on filling them."""
    for table in ("otel_traces_trace_id_ts", "llm_latency_1m", "llm_latency_1h"):
        regranulate(db, table, 8192)
    db.command("DELETE FROM {db}.schema_migrations WHERE version = '0014'")
    spans = [
        llm_span(TenantId="a", Timestamp=BASE_NS - i * 60 * NS, Duration=(i % 50 + 1) * 100 * MS)
        for i in range(400)
    ] + [llm_span(TenantId="b", Timestamp=BASE_NS - 40 * DAY)]  # fmt: skip
    insert_spans(db, spans)
    db.command("OPTIMIZE TABLE {db}.llm_latency_1m FINAL")  # 8,192-row granules: > 128 rows
    assert largest_granule(db, "llm_latency_1m") > 128
    ranges = (
        "SELECT TraceId, min(Start), max(End) FROM {db}.otel_traces_trace_id_ts "
        "GROUP BY TraceId ORDER BY TraceId"
    )
    buckets = (
        "SELECT TenantId, sum(Requests), sumForEachMerge(DurationBuckets) "
        "FROM {{db}}.llm_latency_{g} GROUP BY TenantId"
    )
    before = (db.query(ranges), db.query(buckets.format(g="1m")), db.query(buckets.format(g="1h")))
    assert sorted(r[1] for r in before[1]) == [1, 400]
    assert migrate(db, TEST_RETENTION_DAYS) == ["0014_smaller_granules"]
    assert table_granularity(db, "otel_traces_trace_id_ts") == 1024
    assert table_granularity(db, "llm_latency_1m") == 128
    assert table_granularity(db, "llm_latency_1h") == 128
    assert largest_granule(db, "llm_latency_1m") <= 128  # rewritten, not only moved
    after = (db.query(ranges), db.query(buckets.format(g="1m")), db.query(buckets.format(g="1h")))
    assert after == before
    insert_spans(db, [llm_span(TenantId="a", Timestamp=BASE_NS, Duration=50 * MS)])
    assert sorted(r[1] for r in db.query(buckets.format(g="1h"))) == [1, 401]
    assert len(db.query(ranges)) == len(before[0]) + 1
    assert migrate(db, TEST_RETENTION_DAYS) == []


def test_with_granularity_sets_replaces_or_adds_the_setting() -> None:
    head = "CREATE TABLE d.t (`a` UInt8) ENGINE = MergeTree ORDER BY a"
    assert with_granularity(head, "d.t", "d.u", 64) == (
        "CREATE TABLE d.u (`a` UInt8) ENGINE = MergeTree ORDER BY a SETTINGS index_granularity = 64"
    )
    assert with_granularity(
        head + " SETTINGS index_granularity = 8192, x = 1", "d.t", "d.u", 64
    ) == (
        "CREATE TABLE d.u (`a` UInt8) ENGINE = MergeTree ORDER BY a "
        "SETTINGS index_granularity = 64, x = 1"
    )
    assert with_granularity(head + " SETTINGS x = 1", "d.t", "d.u", 64).endswith(
        "SETTINGS index_granularity = 64, x = 1"
    )
    with pytest.raises(ValueError, match="unexpected CREATE TABLE"):
        with_granularity(head, "d.other", "d.u", 64)
