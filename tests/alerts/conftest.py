"""Alert test fixtures: a local receiver, an alert store on a fresh database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from schema.alert_store import AlertStore
from schema.clickhouse import Database
from tests.alerts.receiver import Receiver, receiver
from tests.api.conftest import keys, store  # noqa: F401 - fixtures
from tests.kafka.fixtures import (  # noqa: F401 - fixtures
    kafka_bootstrap,
    kafka_broker,
    make_topic,
    topic_prefix,
)

ALLOWED = ("http://127.0.0.1",)


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


@pytest.fixture
def alert_store(db: Database) -> AlertStore:
    return AlertStore(db, cache_ttl_s=0.05)
