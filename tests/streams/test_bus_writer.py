"""The bus bounds memory and pushes back; the writer stores everything, retries, sets aside."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.workload import typical_request
from schema.clickhouse import Database
from schema.messages import BusFull, HandoffUnavailable, OtlpMessage
from schema.models import TenantSettings
from schema.spans import SPAN_COLUMNS, SPANS_TABLE, SpanBatch
from streams.bus import InProcessBus
from streams.native_prepare import prepare_block
from streams.prepare import Job, PreparedBlock
from streams.pricing import Pricer
from streams.windows import WindowPartial
from streams.writer import Prepare, SpanWriter, joined


def message(spans: int, tenant: str = "t") -> OtlpMessage:
    return OtlpMessage(tenant, 0, ExportTraceServiceRequest(), spans)


def rows_for(msg: OtlpMessage) -> SpanBatch:
    batch = SpanBatch()
    for column in batch.columns:
        column.extend([msg.tenant_id] * msg.span_count)
    return batch


def preparing(process: Callable[[OtlpMessage], SpanBatch]) -> Prepare:
    """A writer's prepare step from a per-message row function (failures listed, not raised)."""

    async def prepare(messages: list[OtlpMessage]) -> PreparedBlock:
        batch = SpanBatch()
        failures = []
        for index, msg in enumerate(messages):
            try:
                batch.extend(process(msg))
            except ValueError as exc:
                failures.append((index, str(exc)))
        return PreparedBlock(tenants(batch), len(batch), 0, [], failures)

    return prepare


def tenants(batch: SpanBatch) -> bytes:
    """A stand-in block naming the batch's rows (the tests' rows are tenant names); like
    Native blocks, two of them concatenated are one longer block."""
    return "".join(f"{name}," for name in batch.columns[0]).encode()


def rows_of(block: bytes) -> int:
    return block.count(b",")


def stored_rows(blocks: list[bytes]) -> int:
    return sum(rows_of(block) for block in blocks)


async def test_bus_refuses_when_full_and_accepts_after_release() -> None:
    bus = InProcessBus(capacity_spans=10, retry_after_s=3)
    await bus.submit(message(6))
    with pytest.raises(BusFull) as refused:
        await bus.submit(message(5))
    assert refused.value.retry_after_s == 3
    taken = await bus.take(100, 0.01)
    assert [m.span_count for m in taken] == [6]
    # taken but not stored: capacity is still held
    with pytest.raises(BusFull):
        await bus.submit(message(5))
    bus.release(6)
    await bus.submit(message(5))
    assert bus.in_flight_spans == 5


async def test_a_bus_that_refused_reports_full_until_capacity_comes_back() -> None:
    bus = InProcessBus(capacity_spans=10, retry_after_s=3)
    await bus.submit(message(6))
    assert bus.full() is None  # room left: requests are decoded and tried
    with pytest.raises(BusFull):
        await bus.submit(message(5))
    assert bus.full() == 3  # the next one would most likely be refused too
    bus.release(6)
    assert bus.full() is None
    await bus.submit(message(10))
    assert bus.full() == 3  # exactly full
    bus.close()
    assert bus.full() is None  # closing is reported by submit, as unavailable


async def test_oversized_request_is_accepted_into_an_empty_bus() -> None:
    bus = InProcessBus(capacity_spans=10)
    await bus.submit(message(50))
    assert bus.in_flight_spans == 50


async def test_take_respects_max_spans_and_waits_to_fill() -> None:
    bus = InProcessBus(capacity_spans=1000)
    for _ in range(5):
        await bus.submit(message(3))
    first = await bus.take(7, 0.01)
    assert sum(m.span_count for m in first) == 6  # whole messages only
    rest = await bus.take(100, 0.01)
    assert sum(m.span_count for m in rest) == 9


async def test_closed_bus_refuses_then_drains() -> None:
    bus = InProcessBus(capacity_spans=100)
    await bus.submit(message(4))
    bus.close()
    with pytest.raises(HandoffUnavailable):
        await bus.submit(message(1))
    assert [m.span_count for m in await bus.take(100, 1.0)] == [4]
    assert await bus.take(100, 1.0) == []


async def test_writer_stores_everything_then_stops_when_bus_closes() -> None:
    bus = InProcessBus(capacity_spans=10_000)
    stored: list[bytes] = []
    writer = SpanWriter(
        bus,
        preparing(rows_for),
        lambda prepared: stored.append(prepared.block),
        lambda m, e: None,
        max_rows=50,
        max_wait_s=0.01,
        in_flight=3,
    )
    task = asyncio.create_task(writer.run())
    for i in range(40):
        await bus.submit(message(7, tenant=f"t{i % 3}"))
    bus.close()
    await asyncio.wait_for(task, 5)
    assert stored_rows(stored) == 280
    assert all(rows_of(b) <= 56 for b in stored)  # batches bounded (whole messages)
    assert bus.in_flight_spans == 0


async def test_writer_retries_a_failing_store_without_losing_rows() -> None:
    bus = InProcessBus(capacity_spans=100)
    attempts = 0
    stored: list[bytes] = []

    def flaky_store(prepared: PreparedBlock) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise ConnectionError("clickhouse down")
        stored.append(prepared.block)

    writer = SpanWriter(
        bus,
        preparing(rows_for),
        flaky_store,
        lambda m, e: None,
        max_rows=100,
        max_wait_s=0.01,
        retry_initial_s=0.01,
    )
    task = asyncio.create_task(writer.run())
    await bus.submit(message(60))
    await asyncio.sleep(0.005)
    # while the store fails, capacity stays held: the edge is pushed back
    with pytest.raises(BusFull):
        await bus.submit(message(60))
    bus.close()
    await asyncio.wait_for(task, 5)
    assert attempts == 3
    assert stored_rows(stored) == 60
    assert bus.in_flight_spans == 0


async def test_writer_sets_aside_a_request_it_cannot_process_and_keeps_going() -> None:
    bus = InProcessBus(capacity_spans=100)
    stored: list[bytes] = []
    dead: list[tuple[OtlpMessage, BaseException]] = []

    def process(msg: OtlpMessage) -> SpanBatch:
        if msg.tenant_id == "poison":
            raise ValueError("boom")
        return rows_for(msg)

    writer = SpanWriter(
        bus,
        preparing(process),
        lambda prepared: stored.append(prepared.block),
        lambda m, e: dead.append((m, e)),
        max_rows=100,
        max_wait_s=0.01,
    )
    task = asyncio.create_task(writer.run())
    await bus.submit(message(2, "a"))
    await bus.submit(message(3, "poison"))
    await bus.submit(message(4, "b"))
    bus.close()
    await asyncio.wait_for(task, 5)
    assert stored_rows(stored) == 6
    assert [m.tenant_id for m, _ in dead] == ["poison"]
    assert "boom" in str(dead[0][1])
    assert bus.in_flight_spans == 0


async def test_inserts_follow_the_order_batches_were_taken_in() -> None:
    """Batches prepare concurrently; the slow first one is still inserted first."""
    bus = InProcessBus(capacity_spans=1000)
    order: list[str] = []

    async def prepare(messages: list[OtlpMessage]) -> PreparedBlock:
        if messages[0].tenant_id == "slow":
            await asyncio.sleep(0.2)
        batch = SpanBatch()
        for msg in messages:
            batch.extend(rows_for(msg))
        return PreparedBlock(tenants(batch), len(batch), 0, [], [])

    writer = SpanWriter(
        bus,
        prepare,
        lambda prepared: order.append(prepared.block.split(b",")[0].decode()),
        lambda m, e: None,
        max_rows=5,
        max_wait_s=0.01,
        in_flight=3,
    )
    task = asyncio.create_task(writer.run())
    await bus.submit(message(5, "slow"))
    await asyncio.sleep(0.05)
    await bus.submit(message(5, "fast"))
    bus.close()
    await asyncio.wait_for(task, 5)
    assert order == ["slow", "fast"]


async def test_batches_prepared_during_a_slow_insert_go_into_the_next_insert_together() -> None:
    """A backlog makes fewer, bigger inserts (up to insert_max_rows), in order, nothing lost."""
    bus = InProcessBus(capacity_spans=1000)
    gate = threading.Event()
    inserts: list[PreparedBlock] = []

    def store(prepared: PreparedBlock) -> None:
        gate.wait(5)  # the first insert is slow; the next batches get prepared meanwhile
        inserts.append(prepared)

    async def prepare(messages: list[OtlpMessage]) -> PreparedBlock:
        batch = SpanBatch()
        for msg in messages:
            batch.extend(rows_for(msg))
        window = WindowPartial(messages[0].tenant_id, 0, "m", "s", requests=len(batch))
        return PreparedBlock(tenants(batch), len(batch), 1, [window], [])

    writer = SpanWriter(
        bus, prepare, store, lambda m, e: None,
        max_rows=10, max_wait_s=0.01, in_flight=4, insert_max_rows=25,
    )  # fmt: skip
    task = asyncio.create_task(writer.run())
    for name in ("a", "b", "c", "d", "e"):
        await bus.submit(message(10, name))
        await asyncio.sleep(0.05)  # one request per batch
    gate.set()
    bus.close()
    await asyncio.wait_for(task, 5)
    assert [insert.block for insert in inserts] == [
        b"a," * 10,
        b"b," * 10 + b"c," * 10,  # 20 rows: joined; "d" would make 30 > 25
        b"d," * 10 + b"e," * 10,
    ]
    assert [insert.rows for insert in inserts] == [10, 20, 20]
    assert [insert.unpriced for insert in inserts] == [1, 2, 2]
    assert [[w.tenant for w in insert.windows] for insert in inserts] == [
        ["a"],
        ["b", "c"],
        ["d", "e"],
    ]
    assert bus.in_flight_spans == 0


async def test_a_batch_that_failed_to_prepare_is_set_aside_when_joined() -> None:
    bus = InProcessBus(capacity_spans=1000)
    gate = threading.Event()
    inserts: list[bytes] = []
    dead: list[str] = []

    def store(prepared: PreparedBlock) -> None:
        gate.wait(5)
        inserts.append(prepared.block)

    async def prepare(messages: list[OtlpMessage]) -> PreparedBlock:
        if messages[0].tenant_id == "broken":
            raise RuntimeError("worker died")
        batch = SpanBatch()
        for msg in messages:
            batch.extend(rows_for(msg))
        return PreparedBlock(tenants(batch), len(batch), 0, [], [])

    writer = SpanWriter(
        bus, prepare, store, lambda m, e: dead.append(m.tenant_id),
        max_rows=10, max_wait_s=0.01, in_flight=4, insert_max_rows=100,
    )  # fmt: skip
    task = asyncio.create_task(writer.run())
    for name in ("a", "b", "broken", "c"):
        await bus.submit(message(10, name))
        await asyncio.sleep(0.05)
    gate.set()
    bus.close()
    await asyncio.wait_for(task, 5)
    assert inserts == [b"a," * 10, b"b," * 10 + b"c," * 10]
    assert dead == ["broken"]
    assert bus.in_flight_spans == 0


def test_joined_native_blocks_are_one_insert_and_one_part(db: Database) -> None:
    types = db.column_types(SPANS_TABLE, SPAN_COLUMNS)
    pricer = Pricer()
    blocks = [
        prepare_block(
            [Job("t", time.time_ns(), typical_request(50, seed=seed), TenantSettings())],
            types,
            10_000_000_000,
            pricer,
        )
        for seed in (1, 2, 3)
    ]
    db.command(f"SYSTEM STOP MERGES {db.table(SPANS_TABLE)}")
    db.insert_native(SPANS_TABLE, SPAN_COLUMNS, joined(blocks).block)
    parts = db.query(
        "SELECT count(), sum(rows) FROM system.parts WHERE database = {d:String} "
        "AND table = {t:String} AND active",
        {"d": db.name, "t": SPANS_TABLE},
    )
    assert parts == [(1, 150)]
    assert joined(blocks).windows == [w for block in blocks for w in block.windows]
