"""Pytest fixtures for tests against a real Kafka broker (see llmtel/devkafka.py).

Load them with `pytest_plugins = ["tests.kafka.fixtures"]` in a root conftest, or import
them into a package's conftest (tests/kafka/conftest.py does). Tests that use them are
marked `@pytest.mark.kafka`.

    kafka_broker  (session)  the running KafkaBroker; kill()/restart() it if a test needs to
    kafka_bootstrap          "127.0.0.1:PORT", after making sure the broker is up
    topic_prefix             a prefix unique to this test, e.g. "t-test-foo-3f2a9c1d-"
    make_topic               `await make_topic("spans", partitions=3) -> full topic name`;
                             the topics it made are deleted after the test
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import for_code

from llmtel.devkafka import KafkaBroker, KafkaHarnessError, ensure_kafka_jars

ADMIN_TIMEOUT_S = 20.0

MakeTopic = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One real single-node KRaft broker for the whole session, on free ports.

    Skipped when java or mvn is missing on a developer machine; under CI (CI set) that is an
    error instead, so a missing toolchain cannot hide the Kafka tests.
    """
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"the Kafka tests need {' and '.join(missing)} on PATH")
    try:
        libs = ensure_kafka_jars()
    except KafkaHarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    broker = KafkaBroker(libs=libs)
    broker.start(data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """The bootstrap address; brings the broker back if an earlier test stopped or killed it."""
    if not kafka_broker.is_running():
        kafka_broker.restart()
    return kafka_broker.bootstrap


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:80]
    return f"t-{name}-{uuid.uuid4().hex[:8]}-"


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(ADMIN_TIMEOUT_S * 1000)
    )
    async with asyncio.timeout(ADMIN_TIMEOUT_S):
        await admin.start()
    return admin


def _raise_errors(response: Any) -> None:
    # CreateTopics/DeleteTopics responses: a list of (topic, error_code, ...) per topic
    for entry in getattr(response, "topic_errors", None) or getattr(response, "topics", []):
        topic, code = entry[0], entry[1]
        if code:
            raise for_code(code)(f"topic {topic}: {entry}")


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
) -> str:
    """Create a topic (replication factor 1) and wait until every partition has a leader."""
    admin = await _admin(bootstrap)
    try:
        async with asyncio.timeout(ADMIN_TIMEOUT_S):
            new = NewTopic(name, partitions, 1, topic_configs=dict(config or {}))
            _raise_errors(await admin.create_topics([new]))
            while True:
                (described,) = await admin.describe_topics([name])
                leaders = [p["leader"] for p in described["partitions"]]
                ok = described["error_code"] == 0 and len(leaders) == partitions
                if ok and all(leader >= 0 for leader in leaders):
                    return name
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = await _admin(bootstrap)
    try:
        async with asyncio.timeout(ADMIN_TIMEOUT_S):
            _raise_errors(await admin.delete_topics(names))
    finally:
        await admin.close()


@pytest.fixture
async def make_topic(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[MakeTopic]:
    made: list[str] = []

    async def make(
        suffix: str = "topic", partitions: int = 1, config: Mapping[str, str] | None = None
    ) -> str:
        name = await create_topic(kafka_bootstrap, topic_prefix + suffix, partitions, config)
        made.append(name)
        return name

    yield make
    if made:
        # the broker may be down on purpose; the names are unique anyway
        with contextlib.suppress(Exception):
            await delete_topics(kafka_bootstrap, made)
