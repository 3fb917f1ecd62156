"""`ensure_topics` against the real broker: creates what is missing, leaves the rest alone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schema.kafka import ALL_TOPICS
from schema.topics import TopicSetupError, ensure_topics, max_message_bytes
from tests.ingest.helpers import free_port
from tests.kafka.fixtures import create_topic, delete_topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


@pytest.fixture
async def names(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[list[str]]:
    made = [topic_prefix + name for name in ALL_TOPICS]
    yield made
    with contextlib.suppress(Exception):
        await delete_topics(kafka_bootstrap, made)


async def describe(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Partition count per topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def max_message_setting(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    finally:
        await admin.close()
    [(_, _, _, _, entries)] = response.resources
    return next(str(e[1]) for e in entries if e[0] == "max.message.bytes")


async def test_creates_every_topic_with_the_requested_partitions(
    kafka_bootstrap: str, names: list[str]
) -> None:
    created = await ensure_topics(kafka_bootstrap, 3, 1, names, max_request_bytes=4 << 20)
    assert created == names
    assert await describe(kafka_bootstrap, names) == dict.fromkeys(names, 3)
    assert await max_message_setting(kafka_bootstrap, names[0]) == str(max_message_bytes(4 << 20))


async def test_is_idempotent_and_leaves_existing_topics_alone(
    kafka_bootstrap: str, names: list[str]
) -> None:
    await create_topic(kafka_bootstrap, names[0], partitions=1)
    created = await ensure_topics(kafka_bootstrap, 4, 1, names)
    assert created == names[1:]
    assert await ensure_topics(kafka_bootstrap, 4, 1, names) == []
    # a concurrent run creates nothing twice and fails nowhere
    again = await asyncio.gather(*(ensure_topics(kafka_bootstrap, 4, 1, names) for _ in range(3)))
    assert again == [[], [], []]
    partitions = await describe(kafka_bootstrap, names)
    assert partitions == {names[0]: 1, **dict.fromkeys(names[1:], 4)}


async def test_concurrent_first_runs_create_each_topic_once(
    kafka_bootstrap: str, names: list[str]
) -> None:
    runs = await asyncio.gather(*(ensure_topics(kafka_bootstrap, 2, 1, names) for _ in range(3)))
    assert sorted(name for run in runs for name in run) == sorted(names)
    assert await describe(kafka_bootstrap, names) == dict.fromkeys(names, 2)


async def test_a_refused_topic_says_what_to_change(kafka_bootstrap: str, names: list[str]) -> None:
    with pytest.raises(TopicSetupError, match="LLMTEL_KAFKA_REPLICATION_FACTOR"):
        await ensure_topics(kafka_bootstrap, 1, 3, names[:1])


async def test_unreachable_kafka_is_an_error_not_a_hang() -> None:
    with pytest.raises(TopicSetupError, match="LLMTEL_KAFKA_BOOTSTRAP"):
        await ensure_topics(f"127.0.0.1:{free_port()}", 1, 1, ["x"], timeout_s=2)
