"""The compiled `Block` writer emits exactly the bytes of clickhouse-connect's Rust codec.

`encode_block_for_test` converts Python columns by type name and writes them with the
`Block` the OTLP decoder uses; `_ch_core.encode_native_block` is what `schema.native` sends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import _ch_core
import pytest
from llmtel_native._llmtel_native import encode_block_for_test

from schema.clickhouse import Database
from schema.spans import SPAN_COLUMNS, SPANS_TABLE
from tests.schema.test_native import span_column_types, typical_batch

LC = "LowCardinality(String)"
MAP = "Map(LowCardinality(String), String)"
WORDS = ["", "a", "gen_ai.system", "é", "日本語", "🙂", "x" * 127, "y" * 128, "z" * 300]
NASTY_FLOATS = [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, float("inf"), float("-inf"), float("nan")]


def assert_same_bytes(types: list[str], columns: list[list[Any]]) -> None:
    names = [f"c{i}.é" for i in range(len(types))]
    rows = len(columns[0])
    ours = encode_block_for_test(names, types, columns, rows)
    theirs = _ch_core.encode_native_block(names, types, columns, rows, None)
    assert ours == theirs


def text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(WORDS)
    return "".join(rng.choice("abcé日🙂.") for _ in range(rng.randint(0, 12)))


def attributes(rng: random.Random, keys: int = 40) -> dict[str, str]:
    return {f"key.{rng.randrange(keys)}": text(rng) for _ in range(rng.randint(0, 12))}


def decimal(rng: random.Random) -> Decimal | None:
    if rng.random() < 0.3:
        return None
    digits = rng.choice([3, 12, 20, 30, 38])
    return Decimal(f"{rng.randint(-(10**digits) + 1, 10**digits - 1)}E-12")


def float_or_none(rng: random.Random) -> float | None:
    if rng.random() < 0.3:
        return None
    return rng.choice([*NASTY_FLOATS, rng.uniform(-1e6, 1e6)])


# One generator of random values per column type.
RANDOM: dict[str, Callable[[random.Random], Any]] = {
    "String": text,
    LC: text,
    "UInt64": lambda rng: rng.choice([0, 1, 127, 128, 2**63, 2**64 - 1, rng.getrandbits(64)]),
    "DateTime64(9)": lambda rng: rng.randrange(1_600_000_000 * 10**9, 1_900_000_000 * 10**9),
    "Bool": lambda rng: rng.random() < 0.5,
    "Nullable(Float64)": float_or_none,
    "Nullable(Decimal(38, 12))": decimal,
    MAP: attributes,
    "Array(DateTime64(9))": lambda rng: [rng.getrandbits(63) for _ in range(rng.randint(0, 3))],
    "Array(String)": lambda rng: [text(rng) for _ in range(rng.randint(0, 3))],
    f"Array({LC})": lambda rng: [text(rng) for _ in range(rng.randint(0, 3))],
    f"Array({MAP})": lambda rng: [attributes(rng) for _ in range(rng.randint(0, 3))],
}


@pytest.mark.parametrize("rows", [1, 2, 7, 1000])
@pytest.mark.parametrize("column_type", list(RANDOM))
def test_random_values_match(column_type: str, rows: int) -> None:
    for seed in range(3):
        rng = random.Random(f"{column_type}/{rows}/{seed}")
        make = RANDOM[column_type]
        assert_same_bytes([column_type], [[make(rng) for _ in range(rows)]])


EDGE_CASES: list[tuple[str, list[Any]]] = [
    ("String", ["", "", ""]),
    ("String", ["é日🙂", "x" * 127, "y" * 128, "z" * 20_000]),
    (LC, [""]),
    (LC, ["", "", "a", "", "a"]),
    (LC, ["b", "a", "", "b", "日本"]),
    ("UInt64", [0, 2**64 - 1]),
    ("Bool", [False, True, True]),
    ("Nullable(Float64)", [None]),
    ("Nullable(Float64)", [None, None, None]),
    ("Nullable(Float64)", NASTY_FLOATS),
    ("Nullable(Decimal(38, 12))", [None, None]),
    (
        "Nullable(Decimal(38, 12))",
        [Decimal("0"), Decimal("-1E-12"), Decimal(f"{10**38 - 1}E-12"), Decimal("-1.5"), None],
    ),
    (MAP, [{}]),
    (MAP, [{}, {}, {}]),
    (MAP, [{"": ""}, {}, {"": "x", "é": ""}]),
    (MAP, [{}, {"b": "1", "a": "2"}, {"a": "3", "b": "4"}, {}]),
    ("Array(DateTime64(9))", [[], []]),
    ("Array(DateTime64(9))", [[], [0, 1, 2**63 - 1], []]),
    ("Array(String)", [[], []]),
    ("Array(String)", [[""], [], ["a", "日"]]),
    (f"Array({LC})", [[]]),
    (f"Array({LC})", [[], [], []]),
    (f"Array({LC})", [[""], [], ["", "a", ""]]),
    (f"Array({MAP})", [[]]),
    (f"Array({MAP})", [[], []]),
    (f"Array({MAP})", [[{}], [], [{}, {}]]),
    (f"Array({MAP})", [[{}], [{"k": "v"}], [{"": ""}, {}, {"k": "w", "j": ""}]]),
]


@pytest.mark.parametrize(("column_type", "values"), EDGE_CASES)
def test_edge_cases_match(column_type: str, values: list[Any]) -> None:
    assert_same_bytes([column_type], [values])


@pytest.mark.parametrize("distinct", [255, 256, 257, 65_535, 65_536, 70_000])
def test_dictionary_index_width_follows_dictionary_size(distinct: int) -> None:
    """UInt8 indices for up to 255 keys, UInt16 up to 65,535, UInt32 beyond."""
    rng = random.Random(distinct)
    words = [f"w{i}" for i in range(distinct)]
    rng.shuffle(words)
    rows = [*words, *rng.choices(words, k=1000)]
    maps = [{word: word} for word in rows]
    arrays = [rows[i : i + 7] for i in range(0, len(rows), 7)]
    assert_same_bytes([LC], [rows])
    assert_same_bytes([MAP], [maps])
    assert_same_bytes([f"Array({LC})"], [arrays])
    assert_same_bytes([f"Array({MAP})"], [[maps[i : i + 3] for i in range(0, len(maps), 3)]])


def test_several_columns_in_one_block() -> None:
    rng = random.Random(7)
    types = list(RANDOM) * 2
    assert_same_bytes(types, [[RANDOM[t](rng) for _ in range(300)] for t in types])


def random_spans(rows: int, seed: int) -> list[list[Any]]:
    rng = random.Random(seed)
    return [[RANDOM[t](rng) for _ in range(rows)] for t in span_column_types()]


def test_span_table_block_matches() -> None:
    types = span_column_types()
    assert len(types) == len(SPAN_COLUMNS)
    columns = typical_batch().columns
    rows = len(columns[0])
    ours = encode_block_for_test(list(SPAN_COLUMNS), types, columns, rows)
    assert ours == _ch_core.encode_native_block(list(SPAN_COLUMNS), types, columns, rows, None)
    for seed in range(3):
        columns = random_spans(500, seed)
        ours = encode_block_for_test(list(SPAN_COLUMNS), types, columns, 500)
        assert ours == _ch_core.encode_native_block(list(SPAN_COLUMNS), types, columns, 500, None)


def test_malformed_input_is_refused() -> None:
    with pytest.raises(ValueError, match="no Block writer"):
        encode_block_for_test(["a"], ["Int32"], [[1]], 1)
    with pytest.raises(ValueError, match="is not 2 rows"):
        encode_block_for_test(["a"], ["UInt64"], [[1]], 2)
    with pytest.raises(ValueError, match="more than 12 decimals"):
        encode_block_for_test(["a"], ["Nullable(Decimal(38, 12))"], [[Decimal("1E-13")]], 1)


def readable(name: str, column_type: str) -> str:
    """A SELECT expression that reads the column back as the Python value we inserted."""
    if column_type == "DateTime64(9)":
        return f"toUnixTimestamp64Nano(`{name}`)"
    if column_type == "Array(DateTime64(9))":
        return f"arrayMap(x -> toUnixTimestamp64Nano(x), `{name}`)"
    return f"`{name}`"


def test_span_block_round_trips_through_the_engine(db: Database) -> None:
    types = db.column_types(SPANS_TABLE, SPAN_COLUMNS)
    batch = typical_batch()
    rows = len(batch)
    db.insert_native(
        SPANS_TABLE,
        SPAN_COLUMNS,
        encode_block_for_test(list(SPAN_COLUMNS), types, batch.columns, rows),
    )
    select = ", ".join(readable(n, t) for n, t in zip(SPAN_COLUMNS, types, strict=True))
    stored = db.query(f"SELECT {select} FROM {{db}}.otel_traces ORDER BY TenantId, SpanId")
    tenant, span = SPAN_COLUMNS.index("TenantId"), SPAN_COLUMNS.index("SpanId")
    expected = sorted(zip(*batch.columns, strict=True), key=lambda row: (row[tenant], row[span]))
    assert stored == expected


def insert_and_read(db: Database, table: str, types: list[str], columns: list[list[Any]]) -> Any:
    """Rows of `columns` written to a new table through a `Block`, read back in order."""
    names = [f"c{i}" for i in range(len(types))]
    rows = len(columns[0])
    ddl = ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True))
    db.command(f"CREATE TABLE {{db}}.{table} (n UInt64, {ddl}) ENGINE = MergeTree ORDER BY n")
    block = encode_block_for_test(
        ["n", *names], ["UInt64", *types], [list(range(rows)), *columns], rows
    )
    db.insert_native(table, ["n", *names], block)
    select = ", ".join(readable(n, t) for n, t in zip(names, types, strict=True))
    return db.query(f"SELECT {select} FROM {{db}}.{table} ORDER BY n")


def test_edge_values_round_trip_through_the_engine(empty_db: Database) -> None:
    """Random values, then all-NULL and all-empty columns, read back."""
    types = list(RANDOM)
    rng = random.Random(3)
    columns = [[RANDOM[t](rng) for _ in range(2000)] for t in types]
    stored = insert_and_read(empty_db, "random", types, columns)
    expected = list(zip(*columns, strict=True))
    assert len(stored) == len(expected)
    for got, want in zip(stored, expected, strict=True):
        assert got == want or repr(got) == repr(want)  # NaN != NaN; its repr is stable

    empty: dict[str, Any] = {
        "Nullable(Float64)": None,
        "Nullable(Decimal(38, 12))": None,
        MAP: {},
        "Array(DateTime64(9))": [],
        "Array(String)": [],
        f"Array({LC})": [],
        f"Array({MAP})": [],
    }
    blank = [[empty.get(t, RANDOM[t](rng)) for _ in range(50)] for t in types]
    blank[types.index(f"Array({MAP})")][7] = [{}, {}]
    assert insert_and_read(empty_db, "blank", types, blank) == list(zip(*blank, strict=True))


def test_big_dictionaries_round_trip_through_the_engine(empty_db: Database) -> None:
    """More than 65,535 distinct keys: UInt32 indices."""
    words = [f"w{i % 66_000}é" for i in range(70_000)]
    types = [LC, MAP, f"Array({LC})"]
    columns = [words, [{w: w} for w in words], [[w, "x"] for w in words]]
    assert insert_and_read(empty_db, "big", types, columns) == list(zip(*columns, strict=True))
