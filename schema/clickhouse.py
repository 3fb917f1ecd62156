"""One handle on ClickHouse, embedded (chDB) or server (HTTP), with the same SQL for both.

SQL text names tables as `{db}.table`; `Database.sql` substitutes the validated database
name, and values always travel as server-side parameters (`{name:Type}`), never formatted
into the text.

Threads: the embedded engine is shared by API requests (FastAPI's threadpool) and the span
writer's thread. One clickhouse-connect chDB client serialises every call on its engine
handle, so a shared client makes reads wait for inserts; chDB allows many handles on the
one engine a process hosts, so `Database` keeps a small pool of chDB clients and hands one
to each call (measured: 2 writers + 4 readers finish in 3.8 s with one client per thread
vs 6.5 s sharing one client). An HTTP client is thread-safe once it has no session id,
so server mode uses a single client.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlparse

import clickhouse_connect

DEFAULT_DATABASE = "llmtel"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def validate_identifier(name: str) -> str:
    """Return `name` if it is safe to put into SQL text as a database or table name."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid ClickHouse identifier {name!r}: use letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return name


def http_client_options(url: str) -> dict[str, Any]:
    """clickhouse-connect arguments for `http(s)://[user[:password]@]host[:port][/db]`."""
    parsed = urlparse(url)
    secure = parsed.scheme == "https"
    return {
        "host": parsed.hostname or "localhost",
        "port": parsed.port or (8443 if secure else 8123),
        "username": unquote(parsed.username) if parsed.username else "default",
        "password": unquote(parsed.password) if parsed.password else "",
        "secure": secure,
        # no session: a session-less HTTP client may be used from many threads at once
        "autogenerate_session_id": False,
    }


def _params(parameters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # no parameters -> None: clickhouse-connect then leaves the SQL text alone
    return dict(parameters) if parameters else None


class Database:
    """A ClickHouse database reached through a clickhouse-connect client (or a pool of them)."""

    def __init__(
        self, name: str, factory: Callable[[], Any], *, embedded: bool, concurrency: int
    ) -> None:
        self.name = validate_identifier(name)
        self.embedded = embedded
        self._factory = factory
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        # at most `concurrency` calls at once; embedded mode has that many clients at most
        self._slots = threading.BoundedSemaphore(concurrency)
        self._closed = False
        self._column_types: dict[tuple[str, tuple[str, ...]], list[str]] = {}

    @classmethod
    def connect(cls, url: str, database: str | None = None, *, pool_size: int = 4) -> Database:
        """Open `url`: `chdb:///abs/path` (embedded) or `http(s)://[user:pw@]host:port/db`.

        The database is created if missing. For chdb it comes from `database` (default
        "llmtel"); for a server it comes from the URL path, else `database`, else "llmtel".
        """
        parsed = urlparse(url)
        if parsed.scheme == "chdb":
            path = parsed.path
            if parsed.netloc or not path.startswith("/"):
                raise ValueError(f"chdb URL must be chdb:///absolute/path, got {url!r}")
            name = validate_identifier(database or DEFAULT_DATABASE)

            def chdb_client() -> Any:
                return clickhouse_connect.get_client(dsn=f"chdb://{path}")

            db = cls(name, chdb_client, embedded=True, concurrency=pool_size)
        elif parsed.scheme in ("http", "https"):
            options = http_client_options(url)
            name = validate_identifier(
                unquote(parsed.path.strip("/")) or database or DEFAULT_DATABASE
            )

            def http_client() -> Any:
                return clickhouse_connect.get_client(**options)

            db = cls(name, http_client, embedded=False, concurrency=max(pool_size, 8))
        else:
            raise ValueError(
                f"unsupported ClickHouse URL {url!r}: use chdb:///path or http(s)://host:8123/db"
            )
        db.command(f"CREATE DATABASE IF NOT EXISTS {name}")
        return db

    # -- client handling -------------------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[Any]:
        if self._closed:
            raise RuntimeError("database handle is closed")
        with self._slots:
            if not self.embedded:
                yield self._shared()
                return
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                client = self._factory()
                with self._lock:
                    self._all.append(client)
            try:
                yield client
            finally:
                self._idle.put(client)

    def _shared(self) -> Any:
        with self._lock:
            if not self._all:
                self._all.append(self._factory())
            return self._all[0]

    # -- SQL -------------------------------------------------------------------------------

    def sql(self, text: str) -> str:
        """`text` with every `{db}` replaced by this database's (validated) name."""
        return text.replace("{db}", self.name)

    def table(self, name: str) -> str:
        return f"{self.name}.{validate_identifier(name)}"

    def command(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run a statement that returns no rows (DDL, ALTER, INSERT ... SELECT)."""
        with self._client() as client:
            return client.command(
                self.sql(sql),
                parameters=_params(parameters),
                settings=dict(settings) if settings else None,
            )

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a SELECT, fully read."""
        with self._client() as client:
            result = client.query(self.sql(sql), parameters=_params(parameters))
            return [tuple(row) for row in result.result_rows]

    def query_dicts(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of a SELECT as dicts keyed by column name."""
        with self._client() as client:
            result = client.query(self.sql(sql), parameters=_params(parameters))
            names = result.column_names
            return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def insert_columns(
        self,
        table: str,
        columns: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert column-oriented data (one list per column) into `table` of this database."""
        if not columns or not len(columns[0]):
            return
        types = self._types_of(table, tuple(column_names))
        with self._client() as client:
            client.insert(
                table=validate_identifier(table),
                data=columns,
                column_names=list(column_names),
                column_type_names=types,
                database=self.name,
                column_oriented=True,
                settings=dict(settings) if settings else None,
            )

    def insert_native(
        self,
        table: str,
        column_names: Sequence[str],
        block: bytes,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert a block already encoded in ClickHouse's Native format (`schema.native`)."""
        if not block:
            return
        with self._client() as client:
            client.raw_insert(
                table=f"{self.name}.{validate_identifier(table)}",
                column_names=list(column_names),
                insert_block=block,
                settings=dict(settings) if settings else None,
                fmt="Native",
            )

    def column_types(self, table: str, column_names: Sequence[str]) -> list[str]:
        """ClickHouse type names of `column_names` in `table` (read once, then cached)."""
        return list(self._types_of(table, tuple(column_names)))

    def _types_of(self, table: str, column_names: tuple[str, ...]) -> list[str]:
        """Column types for an insert, read once per table and column list."""
        key = (table, column_names)
        types = self._column_types.get(key)
        if types is None:
            rows = self.query(f"DESCRIBE TABLE {self.table(table)}")
            described = {str(row[0]): str(row[1]) for row in rows}
            missing = [name for name in column_names if name not in described]
            if missing:
                raise ValueError(f"table {self.table(table)} has no columns {missing}")
            types = [described[name] for name in column_names]
            self._column_types[key] = types
        return types

    def forget_schema(self) -> None:
        """Drop cached column types (after migrations changed a table)."""
        self._column_types.clear()

    def ping(self) -> bool:
        """True when ClickHouse answers a trivial query."""
        try:
            return self.query("SELECT 1") == [(1,)]
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients, self._all = self._all, []
        for client in clients:
            client.close()
