"""The faust app without a broker: its agent under `test_context`, outputs captured at the
topics' `send` and the table's changelog."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from schema.kafka import (
    ANOMALIES_TOPIC,
    DLQ_TOPIC,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    OTLP_TOPIC,
    WINDOWS_TOPIC,
    KafkaRecord,
)
from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams import metrics
from streams.faust_app import StreamsConfig, StreamsRuntime, create_faust_app, runtime_of
from streams.faust_state import decode_record, partition_key, tenant_key
from tests.streams.test_faust_state import (
    CONFIG,
    MS,
    T0,
    S,
    closed_windows,
    expected_for,
    otlp_record,
    spans_in_window,
    traffic,
)


@dataclass
class Captured:
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    changelog: list[tuple[int, bytes, bytes]] = field(default_factory=list)

    def windows(self) -> list[WindowRecord]:
        return [WindowRecord.from_json(m["value"]) for m in self.sent.get(WINDOWS_TOPIC, [])]

    def anomalies(self) -> list[AnomalyRecord]:
        return [AnomalyRecord.from_json(m["value"]) for m in self.sent.get(ANOMALIES_TOPIC, [])]


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


@dataclass
class Harness:
    app: Any
    runtime: StreamsRuntime
    captured: Captured
    agent: Any = None
    offsets: dict[int, int] = field(default_factory=dict)

    async def put(self, record: KafkaRecord, partition: int = 0) -> None:
        # offsets per partition, as Kafka numbers them (the test wrapper counts globally)
        self.agent.sent_offset = self.offsets.get(partition, 0)
        self.offsets[partition] = self.agent.sent_offset + 1
        await self.agent.put(
            record.value, key=record.key, partition=partition, headers=record.headers, wait=False
        )

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    config = StreamsConfig(
        bootstrap="127.0.0.1:1",  # never contacted under test_context
        app_id=f"llmtel-test-{uuid.uuid4().hex[:8]}",
        window=CONFIG,
        partitions=2,
        data_dir=tmp_path / "faust",
        batch_max_messages=50,
        batch_max_wait_s=0.02,
    )
    app = create_faust_app(config)
    runtime = runtime_of(app)
    captured = Captured()

    def capture(topic: Any) -> None:
        async def send(**message: Any) -> asyncio.Future[None]:
            captured.sent.setdefault(topic.get_topic_name(), []).append(message)
            return _done()

        topic.send = send

    for topic in (runtime.windows_topic, runtime.anomalies_topic, runtime.dlq_topic):
        capture(topic)

    def send_changelog(partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        captured.changelog.append((partition, key, value))
        return _done()

    runtime.table.send_changelog = send_changelog
    harness = Harness(app, runtime, captured)
    async with runtime.agent.test_context() as agent:
        harness.agent = agent
        yield harness


async def test_the_app_reads_the_contract_topics_and_a_tick_interval() -> None:
    config = StreamsConfig(bootstrap="a:9092,b:9092", window=CONFIG)
    app = create_faust_app(config)
    runtime = runtime_of(app)
    assert runtime.input_topic.get_topic_name() == OTLP_TOPIC
    assert runtime.dlq_topic.get_topic_name() == DLQ_TOPIC
    assert [str(url) for url in app.conf.broker] == ["kafka://a:9092", "kafka://b:9092"]
    assert config.tick_interval_s == 0.25  # window_s / 4
    assert StreamsConfig(bootstrap="x:1").tick_interval_s == 1.0  # 60 s windows: capped
    assert runtime.table.changelog_topic.get_topic_name().endswith("-windows-changelog")
    with pytest.raises(TypeError):
        runtime_of(object())


async def test_messages_are_consumed_in_batches_and_counted(harness: Harness) -> None:
    messages = traffic(3)
    partition_of = {"acme": 0, "globex": 1}
    for tenant, received, specs in messages:
        await harness.put(otlp_record(tenant, received, specs), partition_of[tenant])
    await harness.until(lambda: harness.runtime.messages == len(messages))
    assert harness.runtime.batches < len(messages)  # several messages per step
    windows = harness.runtime.windows
    assert windows.partitions() == [0, 1]
    assert windows.tenants(0) == ["acme"] and windows.tenants(1) == ["globex"]

    await harness.runtime.tick(T0 + 10 * S)
    emitted = harness.captured.windows()
    assert closed_windows([_step(emitted)]) == expected_for(messages)
    keys = {m["key"] for m in harness.captured.sent[WINDOWS_TOPIC]}
    assert keys == {b"acme", b"globex"}  # keyed by tenant


async def test_state_goes_to_the_table_and_the_changelog_of_the_input_partition(
    harness: Harness,
) -> None:
    await harness.put(otlp_record("globex", T0 + S, spans_in_window(0, 3)), partition=1)
    await harness.until(lambda: harness.runtime.messages == 1)
    table = harness.runtime.table
    record = decode_record(table.data[tenant_key("globex")])
    assert record["p"] == 1 and record["offset"] == 0
    assert record["windows"]["open"][0]["requests"] == 3
    assert {(p, key) for p, key, _ in harness.captured.changelog} == {
        (1, tenant_key("globex")),
        (1, partition_key(1)),
    }
    # the recovery callback rebuilds a partition from the table exactly
    before = harness.runtime.windows.aggregator(1).tenant_state("globex")
    harness.runtime.windows.drop([1])
    harness.runtime.windows.restore([1], table.data.items())
    assert harness.runtime.windows.aggregator(1).tenant_state("globex") == before


async def test_a_poison_message_goes_to_the_dead_letter_topic_and_the_agent_goes_on(
    harness: Harness,
) -> None:
    dead_before = metrics.DEAD_LETTERS._value.get()
    good = otlp_record("acme", T0 + S, spans_in_window(0, 2))
    await harness.put(KafkaRecord(b"acme", b"\x0a\xff\xff", good.headers))
    await harness.put(KafkaRecord(b"acme", good.value, []))
    await harness.put(good)
    await harness.until(lambda: harness.runtime.messages == 3)
    letters = harness.captured.sent[DLQ_TOPIC]
    assert [m["value"] for m in letters] == [b"\x0a\xff\xff", good.value]
    headers = dict(letters[0]["headers"])
    assert headers[HEADER_DLQ_SOURCE] == f"{OTLP_TOPIC}/0/0".encode()
    assert headers[HEADER_DLQ_REASON].startswith(b"contract: value is not")
    assert b"missing or malformed header" in dict(letters[1]["headers"])[HEADER_DLQ_REASON]
    assert metrics.DEAD_LETTERS._value.get() == dead_before + 2
    await harness.runtime.tick(T0 + 10 * S)
    (acme,) = [w for w in harness.captured.windows() if w.scope is Scope.TENANT and w.requests]
    assert acme.requests == 2


async def test_a_cost_spike_is_published_as_an_anomaly_keyed_by_tenant(harness: Harness) -> None:
    windows_before = metrics.WINDOWS_EMITTED._value.get()
    anomalies_before = metrics.ANOMALIES_EMITTED._value.get()
    runtime = harness.runtime
    for k in range(6):
        for tenant in ("acme", "globex"):
            cost = "0.05" if (k, tenant) == (5, "acme") else "0.01"
            specs = spans_in_window(k, 4, cost=cost)
            await harness.put(otlp_record(tenant, specs[-1].end_ns + 100 * MS, specs))
        await harness.until(lambda k=k: runtime.messages == 2 * (k + 1))  # type: ignore[misc]
        await runtime.tick(T0 + (k + 1) * S + CONFIG.lateness_ns)  # the timer, just in time
    anomalies = harness.captured.anomalies()
    assert {(a.tenant, a.scope, a.metric) for a in anomalies} == {
        ("acme", Scope.TENANT, Metric.COST_USD),
        ("acme", Scope.MODEL, Metric.COST_USD),
        ("acme", Scope.SERVICE, Metric.COST_USD),
    }
    assert all(a.window_start_ns == T0 + 5 * S for a in anomalies)
    assert {m["key"] for m in harness.captured.sent[ANOMALIES_TOPIC]} == {b"acme"}
    assert metrics.ANOMALIES_EMITTED._value.get() == anomalies_before + 3
    assert metrics.WINDOWS_EMITTED._value.get() == windows_before + len(harness.captured.windows())


async def test_late_spans_are_counted_in_the_metric(harness: Harness) -> None:
    late_before = metrics.LATE_SPANS._value.get()
    await harness.put(otlp_record("acme", T0 + S, spans_in_window(0, 1)))
    await harness.until(lambda: harness.runtime.messages == 1)
    await harness.runtime.tick(T0 + 5 * S)
    await harness.put(otlp_record("acme", T0 + 5 * S, spans_in_window(0, 3)))  # window closed
    await harness.until(lambda: harness.runtime.messages == 2)
    assert metrics.LATE_SPANS._value.get() == late_before + 3


async def test_the_timer_advances_only_caught_up_partitions(harness: Harness) -> None:
    runtime = harness.runtime
    await harness.put(otlp_record("acme", T0 + S, spans_in_window(0, 2)), partition=0)
    await harness.put(otlp_record("globex", T0 + S, spans_in_window(0, 2)), partition=1)
    await harness.until(lambda: runtime.messages == 2)
    highwaters = {0: 1, 1: 7}  # partition 1 has a backlog of six messages

    class Consumer:
        def highwater(self, tp: TP) -> int:
            return highwaters[tp.partition]

    runtime.clock = lambda: T0 + 10 * S
    harness.app._consumer = Consumer()
    harness.app.rebalancing = True
    assert await runtime.tick_caught_up() is None  # never during a rebalance
    harness.app.rebalancing = False
    step = await runtime.tick_caught_up()
    assert step is not None
    assert {w.tenant for w in step.windows} == {"acme"}


async def test_publishing_is_retried_until_it_works(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("streams.faust_app.RETRY_INITIAL_S", 0.01)
    sent = harness.runtime.windows_topic.send
    failures = [RuntimeError("broker down"), RuntimeError("still down")]

    async def flaky(**message: Any) -> Any:
        if failures:
            raise failures.pop()
        return await sent(**message)

    harness.runtime.windows_topic.send = flaky
    await harness.put(otlp_record("acme", T0 + S, spans_in_window(0, 2)))
    await harness.until(lambda: harness.runtime.messages == 1)
    await harness.runtime.tick(T0 + 5 * S)
    assert failures == []
    tenant_windows = [w for w in harness.captured.windows() if w.scope is Scope.TENANT]
    assert [w.requests for w in tenant_windows if w.requests] == [2]
    # state is written only after the windows went out
    assert decode_record(harness.runtime.table.data[tenant_key("acme")])["windows"]["open"] == []


def _step(windows: list[WindowRecord]) -> Any:
    from streams.faust_state import Step

    return Step(windows=windows)


class FakeConsumer:
    """What the runtime asks of faust's consumer when it finds a gap."""

    def __init__(self, earliest: int = 0, committed: dict[int, int] | None = None) -> None:
        self.earliest = earliest
        self._committed_offset = {TP(OTLP_TOPIC, p): o for p, o in (committed or {}).items()}
        self.seeks: list[tuple[int, int]] = []

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, self.earliest)

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp.partition, offset))


async def test_a_message_the_consumer_skipped_is_read_again(harness: Harness) -> None:
    """faust can lose the first message after a rebalance; the runtime seeks back to it."""
    consumer = FakeConsumer(committed={0: 0})
    harness.app._consumer = consumer
    runtime = harness.runtime
    first = otlp_record("acme", T0 + S, spans_in_window(0, 2))
    second = otlp_record("acme", T0 + S, spans_in_window(0, 3))
    harness.offsets[0] = 1  # offset 0 (first) never reaches the stream
    await harness.put(second)
    await harness.until(lambda: runtime.messages == 1)
    assert consumer.seeks == [(0, 0)]
    assert runtime.windows.tenants(0) == []  # nothing applied past the hole
    harness.offsets[0] = 0  # the re-read delivers both
    await harness.put(first)
    await harness.put(second)
    await harness.until(lambda: runtime.messages == 3)
    await runtime.tick(T0 + 10 * S)
    (acme,) = [w for w in harness.captured.windows() if w.scope is Scope.TENANT and w.requests]
    assert acme.requests == 5


async def test_messages_deleted_by_retention_are_given_up(harness: Harness) -> None:
    consumer = FakeConsumer(earliest=7, committed={0: 3})
    harness.app._consumer = consumer
    harness.offsets[0] = 7
    await harness.put(otlp_record("acme", T0 + S, spans_in_window(0, 2)))
    await harness.until(lambda: harness.runtime.messages == 1)
    assert consumer.seeks == [(0, 7)]
    assert harness.runtime.windows.next_offset(0) == 7


class FakeAssignor:
    def __init__(self, *actives: TP) -> None:
        self.actives = set(actives)

    def assigned_actives(self) -> set[TP]:
        return self.actives


async def test_a_rebalance_rebuilds_the_owned_partitions_from_the_table(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = harness.runtime
    await harness.put(otlp_record("acme", T0 + S, spans_in_window(0, 2)), partition=0)
    await harness.put(otlp_record("globex", T0 + S, spans_in_window(0, 3)), partition=1)
    await harness.until(lambda: runtime.messages == 2)
    saved = runtime.windows.aggregator(1).tenant_state("globex")

    consumer = FakeConsumer()
    consumer.topic_partitions = lambda topic: 2  # type: ignore[attr-defined]
    harness.app._consumer = consumer
    # partition 0 moves to another worker: dropped at once, its late messages ignored
    await runtime.on_revoked(harness.app, {TP(OTLP_TOPIC, 0), TP("other", 1)}, signal=None)
    assert runtime.windows.partitions() == [1]
    # the next assignment keeps partition 1 only: rebuilt from the table, identical
    monkeypatch.setattr(harness.app, "assignor", FakeAssignor(TP(OTLP_TOPIC, 1), TP("x", 0)))
    await runtime.on_recovered()
    assert runtime.windows.partitions() == [1]
    assert runtime.windows.aggregator(1).tenant_state("globex") == saved
    assert runtime.windows.next_offset(1) == 1
    harness.offsets[0] = 1
    await harness.put(otlp_record("acme", T0 + S, spans_in_window(0, 2)), partition=0)
    await harness.until(lambda: runtime.messages == 3)
    assert runtime.windows.partitions() == [1]


async def test_a_worker_configured_for_other_partitions_stops(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = FakeConsumer()
    consumer.topic_partitions = lambda topic: 12  # type: ignore[attr-defined]
    harness.app._consumer = consumer
    crashes: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashes.append(reason)

    monkeypatch.setattr(harness.app, "crash", crash)
    await harness.runtime.on_recovered()
    assert "has 12 partitions but the streams worker is configured for 2" in str(crashes[0])
