"""Preparing in worker processes gives the same block as inline, survives a dead worker."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from bench.workload import typical_request
from schema.models import TenantSettings
from streams.pool import PreparePool, merge
from streams.prepare import Job, PreparedBlock, prepare_block
from streams.pricing import Pricer
from streams.windows import WindowConfig

# the span table's types in SPAN_COLUMNS order (what `Database.column_types` reads)
from tests.schema.test_native import span_column_types

NOW = time.time_ns()
WINDOW_NS = WindowConfig().window_ns


def jobs(count: int, spans: int = 64) -> list[Job]:
    return [
        Job(f"tenant{i % 2}", NOW, typical_request(spans, seed=i), TenantSettings())
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def pool() -> Iterator[PreparePool]:
    workers = PreparePool(1, span_column_types(), WINDOW_NS)
    workers.warm_up()
    yield workers
    workers.close()


def inline(batch: list[Job]) -> PreparedBlock:
    return prepare_block(batch, span_column_types(), WINDOW_NS, Pricer())


async def test_a_worker_prepares_what_inline_preparing_gives(pool: PreparePool) -> None:
    batch = jobs(4)
    prepared = await pool.prepare(batch)
    expected = inline(batch)
    assert prepared.rows == expected.rows == 4 * 64
    assert prepared.block == expected.block
    assert prepared.windows == expected.windows
    assert not prepared.failures


async def test_a_request_that_cannot_be_prepared_is_reported_and_the_rest_kept(
    pool: PreparePool,
) -> None:
    batch = jobs(3)
    batch.insert(1, Job("t", NOW, b"\xff\xff not protobuf", TenantSettings()))
    prepared = await pool.prepare(batch)
    assert prepared.rows == 3 * 64
    assert [index for index, _ in prepared.failures] == [1]
    assert "DecodeError" in prepared.failures[0][1]


async def test_a_killed_worker_is_replaced_and_the_batch_prepared(pool: PreparePool) -> None:
    pids = list(pool._executor._processes) if pool._executor else []  # type: ignore[union-attr]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        while True:  # reaped by the pool's manager thread once it notices
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
    batch = jobs(3)
    prepared = await pool.prepare(batch)
    assert prepared.rows == 3 * 64 and not prepared.failures
    assert prepared.block == inline(batch).block


def test_the_window_sums_cover_every_llm_span_of_the_batch() -> None:
    prepared = inline(jobs(2))
    assert sum(p.requests for p in prepared.windows) == prepared.rows  # typical: all LLM
    assert {p.tenant for p in prepared.windows} == {"tenant0", "tenant1"}
    assert sum(len(p.durations) for p in prepared.windows) == prepared.rows


def test_merge_concatenates_blocks_and_shifts_failure_indexes() -> None:
    first, second = inline(jobs(1)), inline(jobs(2))
    second.failures = [(1, "boom")]
    merged = merge([first, second], [0, 1])
    assert merged.block == first.block + second.block
    assert merged.rows == first.rows + second.rows
    assert merged.windows == first.windows + second.windows
    assert merged.failures == [(2, "boom")]
