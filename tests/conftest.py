"""Shared fixtures: one ClickHouse engine per pytest process, one fresh database per test.

chDB hosts one engine path per process for the whole process lifetime, so every test in
this process uses the session's `clickhouse_url` and is isolated by database name instead.
Set LLMTEL_TEST_CLICKHOUSE_URL=http://host:8123 to run the same tests against a server.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from schema.clickhouse import Database
from schema.migrate import migrate

TEST_RETENTION_DAYS = 30


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """`chdb:///<session tmp dir>` (or the server from LLMTEL_TEST_CLICKHOUSE_URL)."""
    server = os.environ.get("LLMTEL_TEST_CLICKHOUSE_URL")
    if server:
        return server.rstrip("/")
    path: Path = tmp_path_factory.mktemp("chdb")
    return f"chdb://{path.resolve()}"


def connect_database(clickhouse_url: str, name: str) -> Database:
    """A handle on database `name` at the session's ClickHouse (created if missing)."""
    if clickhouse_url.startswith("chdb://"):
        return Database.connect(clickhouse_url, name)
    return Database.connect(f"{clickhouse_url}/{name}")


@pytest.fixture
def empty_db(clickhouse_url: str) -> Iterator[Database]:
    """A fresh, empty database `t_<random>`, dropped after the test."""
    name = f"t_{secrets.token_hex(6)}"
    db = connect_database(clickhouse_url, name)
    try:
        yield db
    finally:
        db.command(f"DROP DATABASE IF EXISTS {name} SYNC")
        db.close()


@pytest.fixture
def db(empty_db: Database) -> Database:
    """A fresh database with every migration applied (retention TEST_RETENTION_DAYS)."""
    migrate(empty_db, TEST_RETENTION_DAYS)
    return empty_db
