"""Runs `prepare_block` in worker processes, or inline in a thread.

Normalising and encoding spans is pure Python-level work that holds the GIL: in the
process that also answers OTLP requests and drives the ClickHouse engine it caps
throughput at one core and makes acknowledgements wait behind batches. Worker processes
take it off that process, which then only passes request bytes out and Native blocks back.

Workers are started with "spawn" (the parent hosts the chDB engine and threads, which a
fork would copy half-initialised). A worker that dies takes its in-flight batches with it,
not their data: the caller still holds the requests, the pool is restarted and the batch
retried; if it breaks a fresh pool again, its requests are tried one by one and only a
request that kills a worker on its own is reported as failed (for the dead-letter path).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from streams.native_prepare import prepare_block
from streams.prepare import Job, PreparedBlock
from streams.pricing import Pricer

log = logging.getLogger(__name__)

PARENT_CHECK_S = 0.5

# per worker process, set by `_start_worker`
_worker_pricer: Pricer | None = None
_worker_types: tuple[str, ...] = ()
_worker_window_ns = 0


def _start_worker(column_types: tuple[str, ...], window_ns: int) -> None:
    global _worker_pricer, _worker_types, _worker_window_ns
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the parent
    # decides when workers stop (it drains first, then shuts the pool down).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # as in the main process: many short-lived objects per span, few cycles among them
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    _worker_pricer = Pricer()
    _worker_types = column_types
    _worker_window_ns = window_ns
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """End this worker when the parent is gone: a parent killed with SIGKILL cannot shut
    the pool down, and an orphaned worker would otherwise wait for work forever."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _prepare_in_worker(jobs: list[Job]) -> PreparedBlock:
    assert _worker_pricer is not None, "worker not initialised"
    return prepare_block(jobs, _worker_types, _worker_window_ns, _worker_pricer)


def merge(blocks: Sequence[PreparedBlock], offsets: Sequence[int]) -> PreparedBlock:
    """One block of several (Native blocks concatenate); failure indexes shifted by `offsets`."""
    merged = PreparedBlock(b"".join(b.block for b in blocks), 0, 0, [], [])
    for block, offset in zip(blocks, offsets, strict=True):
        merged.rows += block.rows
        merged.unpriced += block.unpriced
        merged.windows.extend(block.windows)
        merged.failures.extend((offset + i, reason) for i, reason in block.failures)
    return merged


class PreparePool:
    def __init__(self, workers: int, column_types: Sequence[str], window_ns: int) -> None:
        """`workers` processes, or 0 to prepare in a thread of this process.

        `column_types`: of SPAN_COLUMNS in the span table; `window_ns`: the window length.
        """
        self.workers = workers
        self._types = tuple(column_types)
        self._window_ns = window_ns
        self._pricer = Pricer() if workers == 0 else None
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
        if workers:
            self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._types, self._window_ns),
        )

    def warm_up(self) -> None:
        """Start every worker now (spawn and imports take a while), not on the first batch."""
        if self._executor is not None:
            futures = [self._executor.submit(_prepare_in_worker, []) for _ in range(self.workers)]
            for future in futures:
                future.result()

    async def prepare(self, jobs: list[Job]) -> PreparedBlock:
        if self._pricer is not None:
            return await asyncio.to_thread(
                prepare_block, jobs, self._types, self._window_ns, self._pricer
            )
        try:
            return await self._submit(jobs)
        except BrokenProcessPool:
            log.error("a prepare worker died; restarting the pool and retrying the batch")
        try:
            return await self._submit(jobs)
        except BrokenProcessPool:
            log.error("the batch broke a fresh worker pool; retrying its requests one by one")
        parts = [await self._prepare_alone(job) for job in jobs]
        return merge(parts, range(len(jobs)))

    async def _prepare_alone(self, job: Job) -> PreparedBlock:
        try:
            return await self._submit([job])
        except BrokenProcessPool:
            reason = "the worker process died while preparing this request"
            return PreparedBlock(b"", 0, 0, [], [(0, reason)])

    async def _submit(self, jobs: list[Job]) -> PreparedBlock:
        with self._lock:
            executor, generation = self._executor, self._generation
        assert executor is not None, "pool is closed"
        try:
            return await asyncio.wrap_future(executor.submit(_prepare_in_worker, jobs))
        except BrokenProcessPool:
            self._restart(generation)
            raise

    def _restart(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._executor is None:
                return  # another batch already restarted it
            broken, self._executor = self._executor, self._new_executor()
            self._generation += 1
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
