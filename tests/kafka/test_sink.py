"""The Kafka -> ClickHouse sink against a real broker and the embedded engine: every span
stored exactly once (also across a crash between insert and commit), poison messages on
the dead-letter topic, windows and anomalies persisted, partitions shared by two sinks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import REGISTRY

from bench.workload import typical_request
from schema.clickhouse import Database
from schema.kafka import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    HEADER_TENANT,
    KafkaRecord,
    decode_otlp,
    encode_otlp,
)
from schema.messages import OtlpMessage
from schema.models import TenantSettings
from schema.spans import SPAN_COLUMNS, SPANS_TABLE
from schema.tenants import TenantStore
from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams.normalize import normalize
from streams.pricing import Pricer
from streams.sink import DEDUP_SETTINGS, KafkaSink, SinkTopics, _Range, _ranges_json
from tests.kafka.fixtures import MakeTopic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

STEP_S = 30.0
PRICER = Pricer()
# fast group membership, so that rebalances in these tests take a second, not ten
CONSUMER = {"heartbeat_interval_ms": 300, "session_timeout_ms": 6_000}


class SimulatedCrash(Exception):
    pass


@dataclass
class Traffic:
    """OTLP messages to produce, and what the sink must store for them."""

    spans: int = 0
    cost: Decimal = Decimal(0)
    records: list[KafkaRecord] = field(default_factory=list)

    def add(self, count: int, spans: int, tenant: str = "acme") -> list[KafkaRecord]:
        made = []
        for _ in range(count):
            request = ExportTraceServiceRequest.FromString(typical_request(spans))
            message = OtlpMessage(tenant, time.time_ns(), request, spans)
            rows = normalize(message, TenantSettings(), PRICER)
            self.spans += len(rows)
            self.cost += sum((c for c in rows.column("LlmCostUsd") if c is not None), Decimal(0))
            made.append(encode_otlp(message))
        self.records += made
        return made


@dataclass(frozen=True)
class Stored:
    spans: int
    distinct_spans: int
    cost: Decimal
    rollup_requests: int
    rollup_cost: Decimal


def stored(db: Database) -> Stored:
    spans, distinct, cost = db.query(
        f"SELECT count(), uniqExact(SpanId), sum(LlmCostUsd) FROM {{db}}.{SPANS_TABLE}"
    )[0]
    requests, rollup_cost = db.query("SELECT sum(Requests), sum(CostUsd) FROM {db}.llm_rollup_1m")[
        0
    ]
    return Stored(int(spans), int(distinct), Decimal(cost), int(requests), Decimal(rollup_cost))


def exact(traffic: Traffic) -> Stored:
    return Stored(traffic.spans, traffic.spans, traffic.cost, traffic.spans, traffic.cost)


async def make_topics(make_topic: MakeTopic, partitions: int) -> SinkTopics:
    return SinkTopics(
        otlp=await make_topic("otlp", partitions),
        windows=await make_topic("windows"),
        anomalies=await make_topic("anomalies"),
        dlq=await make_topic("dlq"),
    )


@asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    async with asyncio.timeout(STEP_S):
        await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def produce(
    bootstrap: str, topic: str, records: Iterable[KafkaRecord], partitions: int = 1
) -> None:
    """Send in order, spread round-robin over the partitions, and wait for every ack."""
    async with producer(bootstrap) as p, asyncio.timeout(STEP_S):
        sent = [
            await p.send(topic, r.value, key=r.key, headers=r.headers, partition=i % partitions)
            for i, r in enumerate(records)
        ]
        await asyncio.gather(*sent)


def make_sink(
    db: Database, bootstrap: str, group: str, topics: SinkTopics, **options: Any
) -> KafkaSink:
    settings: dict[str, Any] = {"max_rows": 5_000, "max_wait_s": 0.2, "commit_interval_s": 0.2}
    settings["retry_initial_s"] = 0.05
    settings.update(options)
    tenants = settings.pop("tenants", None) or TenantStore(db)
    return KafkaSink(
        db, tenants, PRICER, bootstrap, group, topics=topics, consumer_config=CONSUMER,
        **settings,
    )  # fmt: skip


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    async with asyncio.timeout(STEP_S):
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    async with asyncio.timeout(STEP_S):
        await consumer.start()
        try:
            found: list[Any] = []
            while len(found) < count:
                batches = await consumer.getmany(timeout_ms=200)
                found += [m for batch in batches.values() for m in batch]
            await asyncio.sleep(0.3)  # nothing more than expected
            batches = await consumer.getmany(timeout_ms=300)
            found += [m for batch in batches.values() for m in batch]
        finally:
            await consumer.stop()
    return found


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# -- the tests -------------------------------------------------------------------------------


async def test_every_span_is_stored_once_and_offsets_committed(
    db: Database, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topics = await make_topics(make_topic, partitions=3)
    traffic = Traffic()
    traffic.add(24, spans=40)
    await produce(kafka_bootstrap, topics.otlp, traffic.records, partitions=3)
    group = topic_prefix + "sink"
    rows_before = sample("llmtel_insert_rows_total")

    sink = make_sink(db, kafka_bootstrap, group, topics, max_rows=200)
    try:
        await sink.run_until_idle()
        lag = {
            p: sample("llmtel_sink_consumer_lag", {"topic": topics.otlp, "partition": str(p)})
            for p in range(3)
        }
    finally:
        await sink.close()

    assert stored(db) == exact(traffic)
    assert sink.stored_batches == 5  # 200 rows = 5 messages per batch
    assert sample("llmtel_insert_rows_total") - rows_before == traffic.spans
    offsets = await committed(kafka_bootstrap, group)
    assert {tp.partition: o for tp, o in offsets.items() if tp.topic == topics.otlp} == {
        0: 8,
        1: 8,
        2: 8,
    }
    assert lag == {0: 0.0, 1: 0.0, 2: 0.0}


@pytest.mark.parametrize("recorded", [True, False], ids=["replayed", "control-no-records"])
async def test_crash_between_insert_and_commit_does_not_double_count(
    db: Database,
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    topic_prefix: str,
    recorded: bool,
) -> None:
    topics = await make_topics(make_topic, partitions=3)
    traffic = Traffic()
    traffic.add(12, spans=30)
    await produce(kafka_bootstrap, topics.otlp, traffic.records, partitions=3)
    group = topic_prefix + "sink"

    # small batches (4 messages), commits held back: two are stored, neither is committed
    first = make_sink(db, kafka_bootstrap, group, topics, max_rows=100, commit_interval_s=60)
    flushes = 0

    def crash_on_second() -> None:
        nonlocal flushes
        flushes += 1
        if flushes == 2:
            raise SimulatedCrash

    first.before_commit = crash_on_second
    with pytest.raises(SimulatedCrash):
        await first.run_until_idle()
    await first.abort()
    assert first.stored_batches == 1  # the second was inserted, then the "crash"
    assert await committed(kafka_bootstrap, group) == {}
    assert stored(db).spans == 240

    # more traffic arrives: a naive restart would cut different (bigger) batches
    await produce(kafka_bootstrap, topics.otlp, traffic.add(12, spans=30), partitions=3)
    if not recorded:
        db.command("TRUNCATE TABLE {db}.sink_batches")

    second = make_sink(db, kafka_bootstrap, group, topics)
    try:
        await second.run_until_idle()
    finally:
        await second.close()

    result = stored(db)
    if recorded:
        assert second.replayed_batches == 2
        assert result == exact(traffic)
    else:  # the control: without the recorded batches, redelivery double counts
        assert second.replayed_batches == 0
        assert result.spans > traffic.spans
        assert result.rollup_requests > traffic.spans
    offsets = await committed(kafka_bootstrap, group)
    assert sum(o for tp, o in offsets.items() if tp.topic == topics.otlp) == 24


class BrokenSettings:
    """Settings the normaliser chokes on: stands in for a normaliser bug."""


class Tenants:
    def __init__(self, db: Database) -> None:
        self._store = TenantStore(db)

    def get_settings(self, tenant_id: str) -> Any:
        return BrokenSettings() if tenant_id == "broken" else self._store.get_settings(tenant_id)


async def test_poison_messages_go_to_the_dead_letter_topic(
    db: Database, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topics = await make_topics(make_topic, partitions=1)
    traffic = Traffic()
    good = traffic.add(2, spans=10)
    garbage = KafkaRecord(b"acme", b"\xff\xfe not protobuf", good[0].headers)
    no_headers = KafkaRecord(b"acme", good[0].value, [])
    broken = Traffic().add(1, spans=5, tenant="broken")[0]
    await produce(kafka_bootstrap, topics.otlp, [good[0], garbage, no_headers, broken, good[1]])
    await produce(kafka_bootstrap, topics.windows, [KafkaRecord(b"acme", b"{not json", [])])
    before = {
        r: sample("llmtel_dlq_messages_total", {"reason": r})
        for r in ("contract", "normalize", "record")
    }
    group = topic_prefix + "sink"

    sink = make_sink(db, kafka_bootstrap, group, topics, tenants=Tenants(db))
    try:
        await sink.run_until_idle()
    finally:
        await sink.close()

    assert stored(db) == exact(traffic)  # the good messages around the poison
    dead = await read_all(kafka_bootstrap, topics.dlq, 4)
    assert len(dead) == 4
    by_source = {dict(m.headers)[HEADER_DLQ_SOURCE].decode(): m for m in dead}
    assert set(by_source) == {
        f"{topics.otlp}/0/1",
        f"{topics.otlp}/0/2",
        f"{topics.otlp}/0/3",
        f"{topics.windows}/0/0",
    }
    reasons = {s: dict(m.headers)[HEADER_DLQ_REASON].decode() for s, m in by_source.items()}
    assert reasons[f"{topics.otlp}/0/1"].startswith("contract: value is not an ExportTrace")
    assert reasons[f"{topics.otlp}/0/2"].startswith("contract: missing or malformed header")
    assert reasons[f"{topics.otlp}/0/3"].startswith("normalize: AttributeError")
    assert reasons[f"{topics.windows}/0/0"].startswith("record: ")
    kept = by_source[f"{topics.otlp}/0/1"]
    assert kept.value == garbage.value and kept.key == b"acme"
    assert dict(kept.headers)[HEADER_TENANT] == b"acme"  # the original headers travel along
    after = {r: sample("llmtel_dlq_messages_total", {"reason": r}) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"contract": 2, "normalize": 1, "record": 1}
    offsets = await committed(kafka_bootstrap, group)
    assert offsets[TopicPartition(topics.otlp, 0)] == 5
    assert offsets[TopicPartition(topics.windows, 0)] == 1


async def test_windows_and_anomalies_are_persisted_once(
    db: Database, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topics = await make_topics(make_topic, partitions=1)
    start = 1_800_000_000 * 10**9
    window = WindowRecord(
        tenant="acme", scope=Scope.MODEL, key="gpt-4o", window_start_ns=start,
        window_end_ns=start + 60 * 10**9, requests=31, errors=1, input_tokens=4000,
        output_tokens=900, cost_usd=Decimal("0.123456789012"), unpriced=2,
        latency_p95_ns=1_500_000_000,
    )  # fmt: skip
    later = WindowRecord(**{**_fields(window), "window_start_ns": start + 60 * 10**9,
                            "window_end_ns": start + 120 * 10**9, "requests": 3})  # fmt: skip
    anomaly = AnomalyRecord(
        tenant="acme", scope=Scope.MODEL, key="gpt-4o", metric=Metric.COST_USD,
        window_start_ns=start, window_end_ns=start + 60 * 10**9,
        value=Decimal("0.123456789012"), average=Decimal("0.01"), factor=3.0, history=5,
    )  # fmt: skip
    windows = [KafkaRecord(b"acme", r.to_json(), []) for r in (window, window, later)]
    await produce(kafka_bootstrap, topics.windows, windows)  # the first one delivered twice
    await produce(
        kafka_bootstrap, topics.anomalies, [KafkaRecord(b"acme", anomaly.to_json(), [])] * 2
    )

    sink = make_sink(db, kafka_bootstrap, topic_prefix + "sink", topics)
    try:
        await sink.run_until_idle()
    finally:
        await sink.close()

    rows = db.query(
        "SELECT TenantId, Scope, ScopeKey, Requests, CostUsd, Unpriced, LatencyP95Ns "
        "FROM {db}.tenant_windows FINAL ORDER BY WindowStart"
    )
    assert rows == [
        ("acme", "model", "gpt-4o", 31, Decimal("0.123456789012"), 2, 1_500_000_000),
        ("acme", "model", "gpt-4o", 3, Decimal("0.123456789012"), 2, 1_500_000_000),
    ]
    assert db.query(
        "SELECT Metric, Value, RollingAverage, Factor, History FROM {db}.anomalies FINAL"
    ) == [("cost_usd", Decimal("0.123456789012"), Decimal("0.01"), 3.0, 5)]


def _fields(record: WindowRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]


class FlakyDatabase:
    """The real database, but the first `failures` span inserts fail."""

    def __init__(self, db: Database, failures: int) -> None:
        self._db = db
        self.failures = failures

    def insert_native(self, table: str, *args: Any, **kwargs: Any) -> None:
        if table == SPANS_TABLE and self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is away")
        self._db.insert_native(table, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_failed_inserts_are_retried_never_skipped(
    db: Database, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topics = await make_topics(make_topic, partitions=1)
    traffic = Traffic()
    traffic.add(4, spans=20)
    await produce(kafka_bootstrap, topics.otlp, traffic.records)
    flaky = FlakyDatabase(db, failures=3)
    failures_before = sample("llmtel_insert_failures_total")
    group = topic_prefix + "sink"

    sink = make_sink(flaky, kafka_bootstrap, group, topics)  # type: ignore[arg-type]
    try:
        await sink.run_until_idle()
    finally:
        await sink.close()

    assert flaky.failures == 0
    assert sample("llmtel_insert_failures_total") - failures_before == 3
    assert stored(db) == exact(traffic)
    assert (await committed(kafka_bootstrap, group))[TopicPartition(topics.otlp, 0)] == 4


async def test_two_sinks_share_the_partitions_and_store_everything_once(
    db: Database, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topics = await make_topics(make_topic, partitions=4)
    group = topic_prefix + "sink"
    traffic = Traffic()
    stop = asyncio.Event()
    first = make_sink(db, kafka_bootstrap, group, topics, max_rows=200)
    second = make_sink(db, kafka_bootstrap, group, topics, max_rows=200)
    tasks = [asyncio.create_task(first.run(stop))]
    try:
        await produce(kafka_bootstrap, topics.otlp, traffic.add(20, spans=25), partitions=4)
        await until(lambda: first.stored_spans > 0)
        tasks.append(asyncio.create_task(second.run(stop)))  # a rebalance while data flows
        await produce(kafka_bootstrap, topics.otlp, traffic.add(20, spans=25), partitions=4)
        await until(lambda: bool(owned(second)) and stored(db).spans >= traffic.spans)
        await produce(kafka_bootstrap, topics.otlp, traffic.add(20, spans=25), partitions=4)
        await until(lambda: stored(db).spans >= traffic.spans)
        mine, theirs = owned(first), owned(second)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    assert mine and theirs and not (mine & theirs)
    assert stored(db) == exact(traffic)
    offsets = await committed(kafka_bootstrap, group)
    assert sum(o for tp, o in offsets.items() if tp.topic == topics.otlp) == 60


def owned(sink: KafkaSink) -> set[TopicPartition]:
    consumer = sink._consumer
    return (
        {tp for tp in consumer.assignment() if tp.topic == sink.topics.otlp} if consumer else set()
    )


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(STEP_S):
        while not condition():
            await asyncio.sleep(0.1)


async def test_a_stale_record_of_a_recreated_topic_is_not_replayed(
    db: Database, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    """A recorded batch whose first record is not the log's (the topic was deleted and
    created again under its name) must not be replayed: its token is known to ClickHouse,
    so the new messages would be dropped as duplicates."""
    topics = await make_topics(make_topic, partitions=1)
    group = topic_prefix + "sink"
    old = Traffic()
    old.add(1, spans=10)
    old_rows = normalize(
        decode(old.records[0]), TenantSettings(), PRICER
    )  # stored long ago under token "old-batch"
    db.insert_columns(
        SPANS_TABLE, old_rows.columns, SPAN_COLUMNS,
        settings={**DEDUP_SETTINGS, "insert_deduplication_token": "old-batch"},
    )  # fmt: skip
    ranges = {TopicPartition(topics.otlp, 0): _Range(0, 3, 0, 1_000_000_000_000)}
    db.insert_columns(
        "sink_batches",
        [[group], [topics.otlp], [0], [0], [3], ["old-batch"], [_ranges_json(ranges)]],
        ("GroupId", "Topic", "Partition", "StartOffset", "EndOffset", "BatchId", "Ranges"),
    )
    traffic = Traffic()
    await produce(kafka_bootstrap, topics.otlp, traffic.add(3, spans=10))

    sink = make_sink(db, kafka_bootstrap, group, topics)
    try:
        await sink.run_until_idle()
    finally:
        await sink.close()

    assert sink.replayed_batches == 0
    both = Stored(
        old.spans + traffic.spans, old.spans + traffic.spans, old.cost + traffic.cost,
        old.spans + traffic.spans, old.cost + traffic.cost,
    )  # fmt: skip
    assert stored(db) == both


def decode(record: KafkaRecord) -> OtlpMessage:
    return decode_otlp(record.value, record.headers)
