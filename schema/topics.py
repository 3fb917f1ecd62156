"""Creating the distributed pipeline's Kafka topics (`llmtel migrate` in distributed mode).

Idempotent like the ClickHouse migrations: topics that exist are left as they are (their
partition count and configuration are never changed here), missing ones are created with
the requested partitions and replication, and every created partition has a leader before
this returns.

A topic's `max.message.bytes` must admit the largest request ingest accepts (one message
per request, see `schema.kafka`); a broker's default of about 1 MiB would refuse larger
requests, so created topics get `max_message_bytes(max_request_bytes)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidReplicationFactorError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from schema.kafka import ALL_TOPICS

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024  # ingest's default body limit
# room for the key, the headers and the record/batch framing around one request's bytes
MESSAGE_OVERHEAD_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 30.0


class TopicSetupError(RuntimeError):
    """Kafka refused to create a topic or did not answer; the message says what to fix."""


def max_message_bytes(max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> int:
    """The largest Kafka message a request of `max_request_bytes` (decompressed) becomes."""
    return max_request_bytes + MESSAGE_OVERHEAD_BYTES


async def ensure_topics(
    bootstrap: str,
    partitions: int,
    replication: int,
    topics: Iterable[str] = ALL_TOPICS,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[str]:
    """Create the missing `topics`; return the names created (empty when all existed).

    Raises `TopicSetupError` when the cluster cannot be reached within `timeout_s` or
    refuses a topic (e.g. a replication factor above the number of brokers).
    """
    wanted = list(dict.fromkeys(topics))
    if partitions < 1 or replication < 1:
        raise ValueError("partitions and replication must be at least 1")
    config = {"max.message.bytes": str(max_message_bytes(max_request_bytes))}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="llmtel-migrate",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if not missing:
                return []
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication, topic_configs=config) for name in missing]
            )
            created = _check_created(response, bootstrap, replication)
            await _wait_for_leaders(admin, created, partitions)
    except TimeoutError:
        raise TopicSetupError(
            f"Kafka at {bootstrap} did not finish creating topics within {timeout_s:.0f} s; "
            "check LLMTEL_KAFKA_BOOTSTRAP and that the brokers are up"
        ) from None
    except KafkaError as exc:
        raise TopicSetupError(
            f"could not create topics on Kafka at {bootstrap}: {exc!r}; check "
            "LLMTEL_KAFKA_BOOTSTRAP and that the brokers are up"
        ) from exc
    finally:
        await admin.close()
    for name in created:
        log.info(
            "created Kafka topic %s (%d partitions, replication %d)", name, partitions, replication
        )
    return created


def _check_created(response: Any, bootstrap: str, replication: int) -> list[str]:
    """The topics the CreateTopics response says were made; raise for real refusals."""
    created: list[str] = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue  # made by someone else meanwhile: left alone like any existing topic
        hint = ""
        if error is InvalidReplicationFactorError:
            hint = (
                f"; the replication factor ({replication}) may not exceed the number of brokers:"
                " lower LLMTEL_KAFKA_REPLICATION_FACTOR"
            )
        detail = f" ({message})" if message else ""
        raise TopicSetupError(
            f"Kafka at {bootstrap} refused to create topic {name!r}: {error.__name__}{detail}{hint}"
        )
    return created


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], partitions: int) -> None:
    """Until every partition of `names` has a leader: producers can use the topics at once."""
    pending = list(names)
    while pending:
        described = await admin.describe_topics(pending)
        ready = {
            topic["topic"]
            for topic in described
            if topic["error_code"] == 0
            and len(topic["partitions"]) == partitions
            and all(p["leader"] >= 0 for p in topic["partitions"])
        }
        pending = [name for name in pending if name not in ready]
        if pending:
            await asyncio.sleep(0.1)
