from collections.abc import Callable
from typing import Any

WindowSums = tuple[str, int, str, str, int, int, int, int, int | None, int, list[int]]

class Normalizer:
    """OTLP trace requests -> a Native block of span rows; see streams/native_prepare.py."""

    def __init__(
        self,
        slot_of: dict[str, tuple[int, int]],
        ttft_factor: dict[str, float],
        kind_names: list[str],
        status_names: list[str],
        service_key: str,
        message_event_prefix: str,
        message_event_keys: list[str],
        names: list[str],
        types: list[str],
        window_ns: int,
        is_content: Callable[[str], bool],
        decode_kv: Callable[[bytes], tuple[str, str]],
        count: Callable[[str], int],
        ms: Callable[[str, str], float | None],
        parse_cost: Callable[[str], int | None],
        service_name_entry: Callable[[bytes], tuple[str, str]],
    ) -> None: ...
    def prepare(
        self, jobs: list[tuple[str, int, bytes, Callable[[str], str | None], Any]]
    ) -> tuple[bytes, int, int, list[WindowSums], list[tuple[int, str]]]: ...

def encode_block_for_test(
    names: list[str], types: list[str], columns: list[list[Any]], rows: int
) -> bytes: ...
