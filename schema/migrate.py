"""Numbered ClickHouse migrations, applied in order by `llmtel migrate` (and at start-up).

Each `migrations/NNNN_name.sql` holds idempotent DDL (`IF NOT EXISTS`) with `{db}` and
`{ttl_days}` placeholders, statements separated by `;` at the end of a line. What SQL alone
cannot do safely (a step that depends on the state an interrupted run left) is a
`migrations/NNNN_name.py` defining `apply(db, ttl_days)`, which must be just as re-runnable.
Applied versions are recorded in `{db}.schema_migrations`. Retention is not a migration:
the TTL of the span tables is compared with `retention_days` on every run and modified when
it differs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import cast

from schema.clickhouse import Database

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.DOTALL)

# tables whose TTL follows the retention setting, with their TTL time expression
RETENTION_TABLES: dict[str, str] = {
    "otel_traces": "toDateTime(Timestamp)",
    "otel_traces_trace_id_ts": "toDateTime(Start)",
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # "0001"
    name: str  # "0001_otel_traces"
    text: str  # the file's content: SQL, or Python source when `python`
    python: bool = False

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def statements(self, db: Database, ttl_days: int) -> list[str]:
        text = db.sql(self.text).replace("{ttl_days}", str(int(ttl_days)))
        statements = []
        for chunk in _STATEMENT_END.split(text):
            code = "\n".join(
                line for line in chunk.splitlines() if not line.strip().startswith("--")
            ).strip()
            if code:
                statements.append(code)
        return statements

    def apply(self, db: Database, ttl_days: int) -> None:
        if not self.python:
            for statement in self.statements(db, ttl_days):
                db.command(statement)
            return
        namespace: dict[str, object] = {"__name__": f"schema.migrations.m{self.version}"}
        exec(compile(self.text, self.name + ".py", "exec"), namespace)
        apply = namespace.get("apply")
        if not callable(apply):
            raise RuntimeError(f"migration {self.name}.py defines no apply(db, ttl_days)")
        cast(Callable[[Database, int], None], apply)(db, ttl_days)


def available() -> list[Migration]:
    """Every migration shipped with llmtel, in order."""
    found = []
    for entry in resources.files("schema").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            name = entry.name.rsplit(".", 1)[0]
            python = match.group(3) == "py"
            found.append(Migration(match.group(1), name, entry.read_text("utf-8"), python))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in schema/migrations: {versions}")
    return found


def applied_versions(db: Database) -> set[str]:
    rows = db.query(f"SELECT version FROM {db.table(MIGRATIONS_TABLE)}")
    return {str(row[0]) for row in rows}


def migrate(db: Database, retention_days: int) -> list[str]:
    """Apply pending migrations, then align span retention; return what was done (or [])."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    db.command(
        f"CREATE TABLE IF NOT EXISTS {db.table(MIGRATIONS_TABLE)} ("
        "version String, name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)"
        ") ENGINE = MergeTree ORDER BY version"
    )
    done: list[str] = []
    already = applied_versions(db)
    for migration in available():
        if migration.version in already:
            continue
        migration.apply(db, retention_days)
        db.insert_columns(
            MIGRATIONS_TABLE,
            [[migration.version], [migration.name], [migration.checksum]],
            ("version", "name", "checksum"),
        )
        log.info("migration applied", extra={"migration": migration.name})
        done.append(migration.name)
    done.extend(apply_retention(db, retention_days))
    if done:
        db.forget_schema()
    return done


def ttl_days(db: Database, table: str) -> int | None:
    """The day count in `table`'s TTL clause as ClickHouse reports it, or None without one."""
    rows = db.query(
        "SELECT engine_full FROM system.tables WHERE database = {database:String} "
        "AND name = {table:String}",
        {"database": db.name, "table": table},
    )
    if not rows:
        return None
    match = _TTL_DAYS.search(str(rows[0][0]))
    return int(match.group(1)) if match else None


def apply_retention(db: Database, retention_days: int) -> list[str]:
    """Set the TTL of the span tables to `retention_days` where it differs."""
    changed = []
    for table, time_expr in RETENTION_TABLES.items():
        current = ttl_days(db, table)
        if current is None or current == retention_days:
            continue
        db.command(
            f"ALTER TABLE {db.table(table)} "
            f"MODIFY TTL {time_expr} + toIntervalDay({int(retention_days)})"
        )
        log.info(
            "retention changed",
            extra={"table": table, "from_days": current, "to_days": retention_days},
        )
        changed.append(f"retention {table}: {current} -> {retention_days} days")
    return changed
