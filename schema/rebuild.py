"""Give an existing MergeTree table a new `index_granularity`, which ClickHouse cannot ALTER.

A table's granule size decides how many rows a point or narrow-range read decompresses and
deserialises; a size picked before the table had data may turn out wrong. The rebuild
touches no row: an empty table with the new setting takes the old one's name in one atomic
EXCHANGE (materialized views are bound to table names, so from that instant the inserts,
the views reading the table and those writing into it all use the new one), then the old
parts move over partition by partition (MOVE PARTITION: hard links, no copy, no view fires).
Moved parts keep their old granules until a merge rewrites them; `rewrite=True` rewrites
them at once (OPTIMIZE ... FINAL of each partition that still has coarser granules, as
`mergeTreeIndex` shows them), for small tables without TTL whose old partitions would
otherwise never be merged again. Only horizontal merges cut new granules: a vertical merge
(plain MergeTree with many columns outside the sorting key) keeps each source part's, so
there old rows keep theirs until TTL drops them, and `rewrite=True` is refused.

Every step checks where the previous run stopped, so an interrupted rebuild completes on
the next run and never loses or duplicates a part. An insert still running into the old
table when the parts move leaves a part behind: the loop moves until the old table is empty.
"""

from __future__ import annotations

import logging
import re

from schema.clickhouse import Database, validate_identifier

log = logging.getLogger(__name__)

SPARE_SUFFIX = "_regranulate"
_GRANULARITY = re.compile(r"\bindex_granularity\s*=\s*(\d+)")
_MOVE_ROUNDS = 10
_PARTITION_ID = re.compile(r"^[0-9A-Za-z_-]+$")


def table_granularity(db: Database, table: str) -> int | None:
    """`table`'s index_granularity (8192 when not set), or None when there is no such table."""
    query = create_query(db, table)
    return None if query is None else granularity_of(query)


def granularity_of(query: str) -> int:
    """The index_granularity a CREATE TABLE statement sets (ClickHouse's default: 8192)."""
    return int(own_setting(query, "index_granularity") or 8192)


def own_setting(query: str, name: str) -> str | None:
    """The numeric MergeTree setting `name` a CREATE TABLE statement sets, if it does."""
    match = re.search(rf"\b{re.escape(name)}\s*=\s*(\d+)", query)
    return match.group(1) if match else None


def create_query(db: Database, table: str) -> str | None:
    rows = db.query(
        "SELECT create_table_query FROM system.tables "
        "WHERE database = {database:String} AND name = {table:String}",
        {"database": db.name, "table": table},
    )
    return str(rows[0][0]) if rows else None


def with_granularity(query: str, old_name: str, new_name: str, granularity: int) -> str:
    """`query` (a CREATE TABLE as system.tables shows it) for `new_name`, `granularity`."""
    head = f"CREATE TABLE {old_name} "
    if not query.startswith(head):
        raise ValueError(f"unexpected CREATE TABLE statement for {old_name}: {query[:120]!r}")
    body = query[len(head) :]
    setting = f"index_granularity = {int(granularity)}"
    if _GRANULARITY.search(body):
        body = _GRANULARITY.sub(setting, body, count=1)
    elif re.search(r"\bSETTINGS\b", body):
        body = re.sub(r"\bSETTINGS\b", f"SETTINGS {setting},", body, count=1)
    else:
        body = f"{body} SETTINGS {setting}"
    return f"CREATE TABLE {new_name} {body}"


def partitions(db: Database, table: str, *, coarser_than: int | None = None) -> list[str]:
    """Ids of the partitions holding rows (a moved or dropped partition leaves an empty
    covering part, active until cleaned up); with `coarser_than`, only those with a part
    whose granules were cut for more rows than that. A part's last granule may take up to
    twice its granule size (the tail is folded into it), so "coarser" means twice or more.
    """
    name = validate_identifier(table)
    coarse = (
        ""
        if coarser_than is None
        else " AND name IN (SELECT part_name FROM mergeTreeIndex("
        f"'{db.name}', '{name}') WHERE rows_in_granule >= {2 * int(coarser_than)})"
    )
    rows = db.query(
        "SELECT DISTINCT partition_id FROM system.parts WHERE database = {database:String} "
        f"AND table = {{table:String}} AND active AND rows > 0{coarse} ORDER BY partition_id",
        {"database": db.name, "table": name},
    )
    found = [str(row[0]) for row in rows]
    for partition in found:
        if not _PARTITION_ID.match(partition):
            raise ValueError(f"unexpected partition id {partition!r} in {db.table(table)}")
    return found


# engines whose merges ClickHouse may run vertically (MergeTask::chooseMergeAlgorithm)
_VERTICAL_ENGINES = frozenset(
    {"MergeTree", "ReplacingMergeTree", "CollapsingMergeTree", "VersionedCollapsingMergeTree"}
)
_VERTICAL_SETTINGS = (
    "enable_vertical_merge_algorithm",
    "vertical_merge_algorithm_min_columns_to_activate",
)


def merges_vertically(db: Database, table: str) -> bool:
    """Whether large merges of `table` may take the vertical algorithm, which writes each
    source granule as it was (blocks_are_granules_size) instead of cutting new ones."""
    rows = db.query(
        "SELECT engine, create_table_query FROM system.tables "
        "WHERE database = {database:String} AND name = {table:String}",
        {"database": db.name, "table": table},
    )
    if not rows or rows[0][0] not in _VERTICAL_ENGINES:
        return False
    defaults = dict(
        db.query(
            "SELECT name, value FROM system.merge_tree_settings "
            "WHERE name IN {names:Array(String)}",
            {"names": list(_VERTICAL_SETTINGS)},
        )
    )
    # the table's own SETTINGS win over the server's defaults
    query = str(rows[0][1])
    enabled, min_columns = (own_setting(query, n) or defaults[n] for n in _VERTICAL_SETTINGS)
    gathered = db.query(
        "SELECT count() FROM system.columns WHERE database = {database:String} "
        "AND table = {table:String} AND NOT is_in_sorting_key",
        {"database": db.name, "table": table},
    )[0][0]
    return enabled not in ("0", "false") and int(gathered) >= int(min_columns)


def regranulate(db: Database, table: str, granularity: int, *, rewrite: bool = False) -> bool:
    """Rebuild `table` with granules of `granularity` rows; False if nothing was left to do.

    Each step is decided by what the tables show, not by what an earlier step returned, so
    a run interrupted anywhere (even during the rewrites) is completed by the next one.
    """
    query = create_query(db, table)
    if query is None:
        raise LookupError(f"no table {db.table(table)} to rebuild")
    if rewrite and merges_vertically(db, table):
        raise ValueError(
            f"{db.table(table)} merges vertically (many columns outside its sorting key), and "
            "a vertical merge keeps each part's granules: OPTIMIZE cannot rewrite its old "
            "parts to the new granularity; rebuild without rewrite and let TTL drop them"
        )
    spare = table + SPARE_SUFFIX
    spare_query = create_query(db, spare)
    changed = False
    if granularity_of(query) != granularity:
        if spare_query is None:
            db.command(with_granularity(query, db.table(table), db.table(spare), granularity))
        elif granularity_of(spare_query) != granularity or partitions(db, spare):
            raise RuntimeError(
                f"{db.table(spare)} exists and is not an empty table with index_granularity "
                f"{granularity}: left over from something else, rename or drop it by hand"
            )
        db.command(f"EXCHANGE TABLES {db.table(table)} AND {db.table(spare)}")
        changed = True
    if changed or spare_query is not None:  # `spare` holds the old parts: move them over
        _move_all(db, spare, table)
        db.command(f"DROP TABLE {db.table(spare)} SYNC")
        changed = True
    if rewrite:
        for partition in partitions(db, table, coarser_than=granularity):
            db.command(f"OPTIMIZE TABLE {db.table(table)} PARTITION ID '{partition}' FINAL")
            changed = True
    if changed:
        log.info("table regranulated", extra={"table": table, "granularity": granularity})
    return changed


def _move_all(db: Database, source: str, target: str) -> None:
    for _ in range(_MOVE_ROUNDS):
        left = partitions(db, source)
        if not left:
            return
        for partition in left:
            db.command(
                f"ALTER TABLE {db.table(source)} MOVE PARTITION ID '{partition}' "
                f"TO TABLE {db.table(target)}"
            )
    raise RuntimeError(f"{db.table(source)} still receives parts: stop its writers and re-run")
