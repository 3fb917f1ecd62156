"""`Database` on the real engine: URLs, binding, columnar inserts, threads."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from schema.clickhouse import Database, http_client_options, validate_identifier
from tests.conftest import connect_database

pytestmark = pytest.mark.clickhouse


def test_identifiers_are_validated() -> None:
    assert validate_identifier("llmtel_1") == "llmtel_1"
    for bad in ("", "1abc", "a-b", "a.b", "x; DROP DATABASE y", "a" * 64):
        with pytest.raises(ValueError, match="invalid ClickHouse identifier"):
            validate_identifier(bad)


def test_urls_are_checked() -> None:
    with pytest.raises(ValueError, match="unsupported ClickHouse URL"):
        Database.connect("postgres://localhost/db")
    with pytest.raises(ValueError, match="chdb:///absolute/path"):
        Database.connect("chdb://relative/path")
    with pytest.raises(ValueError, match="invalid ClickHouse identifier"):
        Database.connect("http://localhost:8123/bad-name")


def test_server_urls_give_client_options() -> None:
    assert http_client_options("http://ch.internal:8123/llmtel") == {
        "host": "ch.internal",
        "port": 8123,
        "username": "default",
        "password": "",
        "secure": False,
        "autogenerate_session_id": False,
    }
    secure = http_client_options("https://writer:p%40ss@ch.example")
    assert (secure["port"], secure["secure"]) == (8443, True)
    assert (secure["username"], secure["password"]) == ("writer", "p@ss")


def test_connect_creates_the_database_and_a_second_handle_shares_it(
    empty_db: Database, clickhouse_url: str
) -> None:
    empty_db.command("CREATE TABLE {db}.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    empty_db.insert_columns("t", [[1, 2, 3]], ["a"])
    other = connect_database(clickhouse_url, empty_db.name)
    try:
        assert other.name == empty_db.name
        assert other.query("SELECT sum(a) FROM {db}.t") == [(6,)]
    finally:
        other.close()


def test_values_are_bound_never_spliced(empty_db: Database) -> None:
    hostile = "x' OR 1=1; DROP DATABASE {db} --"
    rows = empty_db.query("SELECT {v:String}, {n:UInt64}", {"v": hostile, "n": 7})
    assert rows == [(hostile, 7)]
    dicts = empty_db.query_dicts("SELECT {v:String} AS v", {"v": "%(x)s {y}"})
    assert dicts == [{"v": "%(x)s {y}"}]


def test_columnar_insert_keeps_nanoseconds_nested_and_decimals(empty_db: Database) -> None:
    empty_db.command(
        "CREATE TABLE {db}.x (ts DateTime64(9), cost Nullable(Decimal(38, 12)), "
        "Ev Nested(ts DateTime64(9), name String)) ENGINE = MergeTree ORDER BY ts"
    )
    ns = 1_767_225_600_123_456_789
    empty_db.insert_columns(
        "x",
        [[ns, ns + 1], [Decimal("0.000000000001"), None], [[ns], []], [["e"], []]],
        ["ts", "cost", "Ev.ts", "Ev.name"],
    )
    rows = empty_db.query(
        "SELECT toUnixTimestamp64Nano(ts), cost, arrayMap(t -> toUnixTimestamp64Nano(t), Ev.ts), "
        "Ev.name FROM {db}.x ORDER BY ts"
    )
    assert rows == [
        (ns, Decimal("0.000000000001"), [ns], ["e"]),
        (ns + 1, None, [], []),
    ]


def test_insert_of_an_unknown_column_names_it(empty_db: Database) -> None:
    empty_db.command("CREATE TABLE {db}.y (a UInt8) ENGINE = MergeTree ORDER BY a")
    with pytest.raises(ValueError, match="nope"):
        empty_db.insert_columns("y", [[1]], ["nope"])


def test_many_threads_read_while_one_writes(empty_db: Database) -> None:
    empty_db.command("CREATE TABLE {db}.z (a UInt64) ENGINE = MergeTree ORDER BY a")
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(30):
                empty_db.insert_columns("z", [list(range(1000))], ["a"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(30):
                (count,) = empty_db.query("SELECT count() FROM {db}.z")[0]
                assert count % 1000 == 0
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert empty_db.query("SELECT count() FROM {db}.z") == [(30_000,)]


def test_ping_and_close(clickhouse_url: str, empty_db: Database) -> None:
    handle = connect_database(clickhouse_url, empty_db.name)
    assert handle.ping()
    handle.close()
    handle.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        handle.query("SELECT 1")
