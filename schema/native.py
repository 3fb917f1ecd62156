"""ClickHouse Native-format blocks, encoded without a connection.

Encoding the insert block is most of an insert's Python cost (attribute maps become
LowCardinality dictionaries, Decimals become 128-bit integers). Doing it apart from the
insert lets a worker process encode while the process that owns the engine only hands
bytes over (`Database.insert_native`). The encoder is clickhouse-connect's own Rust codec
(package clickhouse-connect-core), the same one the client uses with `native_codec="rust"`,
so the bytes are what `Database.insert_columns` would send (checked by the tests against
clickhouse-connect's Python encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _ch_core


def encode_native(
    column_names: Sequence[str],
    column_types: Sequence[str],
    columns: Sequence[Sequence[Any]],
) -> bytes:
    """One Native block of `columns` (one sequence per column, equal lengths)."""
    rows = len(columns[0]) if columns else 0
    if any(len(column) != rows for column in columns):
        raise ValueError("columns of a Native block must have equal lengths")
    block: bytes = _ch_core.encode_native_block(
        list(column_names), list(column_types), list(columns), rows, None
    )
    return block
