"""Preparing in worker processes gives the same block as inline, survives a dead worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.workload import typical_request
from schema.models import TenantSettings
from streams.native_prepare import prepare_block
from streams.pool import PreparePool, merge
from streams.prepare import Job, PreparedBlock
from streams.pricing import Pricer
from streams.windows import WindowConfig

# the span table's types in SPAN_COLUMNS order (what `Database.column_types` reads)
from tests.schema.test_native import span_column_types

NOW = time.time_ns()
WINDOW_NS = WindowConfig().window_ns


def jobs(count: int, spans: int = 64) -> list[Job]:
    return [
        Job(f"tenant{i % 2}", NOW, typical_request(spans, seed=i), TenantSettings())
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def pool() -> Iterator[PreparePool]:
    workers = PreparePool(1, span_column_types(), WINDOW_NS)
    workers.warm_up()
    yield workers
    workers.close()


def inline(batch: list[Job]) -> PreparedBlock:
    return prepare_block(batch, span_column_types(), WINDOW_NS, Pricer())


async def test_a_worker_prepares_what_inline_preparing_gives(pool: PreparePool) -> None:
    batch = jobs(4)
    prepared = await pool.prepare(batch)
    expected = inline(batch)
    assert prepared.rows == expected.rows == 4 * 64
    assert prepared.block == expected.block
    assert prepared.windows == expected.windows
    assert not prepared.failures


async def test_a_request_that_cannot_be_prepared_is_reported_and_the_rest_kept(
    pool: PreparePool,
) -> None:
    batch = jobs(3)
    batch.insert(1, Job("t", NOW, b"\xff\xff not protobuf", TenantSettings()))
    prepared = await pool.prepare(batch)
    assert prepared.rows == 3 * 64
    assert [index for index, _ in prepared.failures] == [1]
    assert "DecodeError" in prepared.failures[0][1]


async def test_a_killed_worker_is_replaced_and_the_batch_prepared(pool: PreparePool) -> None:
    pids = list(pool._executor._processes) if pool._executor else []  # type: ignore[union-attr]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        while True:  # reaped by the pool's manager thread once it notices
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
    batch = jobs(3)
    prepared = await pool.prepare(batch)
    assert prepared.rows == 3 * 64 and not prepared.failures
    assert prepared.block == inline(batch).block


def test_the_window_sums_cover_every_llm_span_of_the_batch() -> None:
    prepared = inline(jobs(2))
    assert sum(p.requests for p in prepared.windows) == prepared.rows  # typical: all LLM
    assert {p.tenant for p in prepared.windows} == {"tenant0", "tenant1"}
    assert sum(len(p.durations) for p in prepared.windows) == prepared.rows


def test_merge_concatenates_blocks_and_shifts_failure_indexes() -> None:
    first, second = inline(jobs(1)), inline(jobs(2))
    second.failures = [(1, "boom")]
    merged = merge([first, second], [0, 1])
    assert merged.block == first.block + second.block
    assert merged.rows == first.rows + second.rows
    assert merged.windows == first.windows + second.windows
    assert merged.failures == [(2, "boom")]


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed with SIGKILL cannot shut its pool down: the workers notice and exit."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import time\n"
        "from streams.pool import PreparePool\n"
        "from tests.schema.test_native import SPAN_TYPES\n"
        "if __name__ == '__main__':  # spawned workers import this module again\n"
        "    pool = PreparePool(1, SPAN_TYPES, 60_000_000_000)\n"
        "    pool.warm_up()\n"
        "    print(*pool._executor._processes, flush=True)\n"
        "    time.sleep(600)\n"
    )
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script)], cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert parent.stdout is not None
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers and all(alive(pid) for pid in workers)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited, only not been reaped
        return stat.read().rpartition(")")[2].split()[0] != "Z"
