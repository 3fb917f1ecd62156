"""The harness runs a real broker: partitions, idempotent acks=all produce, consumer groups
with committed offsets and rebalancing, and data that survives a SIGKILL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from llmtel.devkafka import KafkaBroker, probe_metadata
from tests.kafka.fixtures import MakeTopic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

STEP_S = 30.0  # no single step of a test may take longer


@asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=10_000,
    )
    async with asyncio.timeout(STEP_S):
        await p.start()
    try:
        yield p
    finally:
        async with asyncio.timeout(STEP_S):
            await p.stop()


@asynccontextmanager
async def consumer(bootstrap: str, group: str, *topics: str) -> AsyncIterator[AIOKafkaConsumer]:
    c = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        heartbeat_interval_ms=300,
        session_timeout_ms=6_000,
        request_timeout_ms=10_000,
    )
    async with asyncio.timeout(STEP_S):
        await c.start()
    try:
        yield c
    finally:
        async with asyncio.timeout(STEP_S):
            await c.stop()


async def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> None:
    async with producer(bootstrap) as p, asyncio.timeout(STEP_S):
        sends = [
            await p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
            for i in range(start, start + count)
        ]
        await asyncio.gather(*sends)


async def read(c: AIOKafkaConsumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    async with asyncio.timeout(STEP_S):
        while len(values) < count:
            batches = await c.getmany(timeout_ms=200)
            values += [m.value for batch in batches.values() for m in batch]
    return values


async def until(condition: Callable[[], bool], *pollers: AIOKafkaConsumer) -> None:
    """Keep the consumers polling (so they heartbeat and rebalance) until condition holds."""
    async with asyncio.timeout(STEP_S):
        while not condition():
            await asyncio.gather(*(c.getmany(timeout_ms=100) for c in pollers))


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    async with asyncio.timeout(STEP_S):
        await admin.start()
        try:
            topics: list[str] = await admin.list_topics()
        finally:
            await admin.close()
    return topics


async def committed_total(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    async with asyncio.timeout(STEP_S):
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
    return sum(meta.offset for meta in offsets.values())


def test_broker_answers_metadata(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert probe_metadata(host, int(port)) == [1]


async def test_topic_with_three_partitions(kafka_bootstrap: str, make_topic: MakeTopic) -> None:
    topic = await make_topic("events", partitions=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    async with asyncio.timeout(STEP_S):
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]
    assert {p["leader"] for p in described["partitions"]} == {1}


async def test_auto_create_is_off(kafka_bootstrap: str, topic_prefix: str) -> None:
    missing = topic_prefix + "missing"
    async with producer(kafka_bootstrap) as p:
        with pytest.raises((TimeoutError, KafkaError)):
            await asyncio.wait_for(p.send_and_wait(missing, b"x"), 2)
    assert missing not in await list_topics(kafka_bootstrap)


async def test_idempotent_produce_then_group_consume_and_commit(
    kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topic = await make_topic("events", partitions=3)
    await produce(kafka_bootstrap, topic, 60)
    group = topic_prefix + "group"
    async with consumer(kafka_bootstrap, group, topic) as c:
        values = await read(c, 60)
        await c.commit()
    assert sorted(values) == sorted(f"v{i}".encode() for i in range(60))
    assert await committed_total(kafka_bootstrap, group) == 60

    # a new member of the group resumes after the commit: it sees only what came later
    await produce(kafka_bootstrap, topic, 5, start=60)
    async with consumer(kafka_bootstrap, group, topic) as c:
        assert sorted(await read(c, 5)) == sorted(f"v{i}".encode() for i in range(60, 65))


async def test_second_consumer_gets_a_share_of_partitions(
    kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topic = await make_topic("events", partitions=3)
    group = topic_prefix + "group"
    everything = {TopicPartition(topic, p) for p in range(3)}
    async with consumer(kafka_bootstrap, group, topic) as first:
        await until(lambda: first.assignment() == everything, first)
        async with consumer(kafka_bootstrap, group, topic) as second:

            def shared() -> bool:
                a, b = first.assignment(), second.assignment()
                return bool(a) and bool(b) and not (a & b) and (a | b) == everything

            await until(shared, first, second)
        # the second one leaves: the first gets everything back
        await until(lambda: first.assignment() == everything, first)


async def test_kill_and_restart_keep_data_and_committed_offsets(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, make_topic: MakeTopic, topic_prefix: str
) -> None:
    topic = await make_topic("events", partitions=3)
    group = topic_prefix + "group"
    await produce(kafka_bootstrap, topic, 30)
    async with consumer(kafka_bootstrap, group, topic) as c:
        await read(c, 30)
        await c.commit()
    await produce(kafka_bootstrap, topic, 10, start=30)

    pid = kafka_broker.pid
    kafka_broker.kill()
    assert not kafka_broker.is_running()
    started = time.monotonic()
    await asyncio.to_thread(kafka_broker.restart)
    assert kafka_broker.pid != pid
    assert kafka_broker.bootstrap == kafka_bootstrap
    assert time.monotonic() - started < STEP_S

    assert await committed_total(kafka_bootstrap, group) == 30
    async with consumer(kafka_bootstrap, group, topic) as c:
        assert sorted(await read(c, 10)) == sorted(f"v{i}".encode() for i in range(30, 40))
    async with consumer(kafka_bootstrap, topic_prefix + "fresh", topic) as c:
        assert len(await read(c, 40)) == 40
