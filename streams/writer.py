"""Drains the in-process bus into ClickHouse: take -> process -> insert -> release.

Two stages run concurrently, each in its own thread, so normalising batch N+1 overlaps
inserting batch N (the insert spends much of its time in ClickHouse without the GIL).
Capacity goes back to the bus only after the insert succeeded; a failing insert is retried
with backoff and never dropped, and while it fails the bus fills and receivers answer 503.
A request that cannot be processed at all (a bug, not bad input: ingest validated it) is
handed to `dead_letter` so that it is set aside, not lost, and the pipeline keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from schema.messages import OtlpMessage
from schema.spans import SpanBatch
from streams import metrics
from streams.bus import InProcessBus

log = logging.getLogger(__name__)

Process = Callable[[OtlpMessage], SpanBatch]
Store = Callable[[SpanBatch], None]
DeadLetter = Callable[[OtlpMessage, BaseException], None]


@dataclass(slots=True)
class _Prepared:
    rows: SpanBatch
    spans: int  # bus capacity to release once stored


class SpanWriter:
    def __init__(
        self,
        bus: InProcessBus,
        process: Process,
        store: Store,
        dead_letter: DeadLetter,
        *,
        max_rows: int,
        max_wait_s: float,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self._bus = bus
        self._process = process
        self._store = store
        self._dead_letter = dead_letter
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._prepared: asyncio.Queue[_Prepared | None] = asyncio.Queue(maxsize=2)
        self.stored_spans = 0
        self.last_store_monotonic = 0.0

    async def run(self) -> None:
        """Run until the bus is closed and everything taken from it is stored."""
        inserter = asyncio.create_task(self._insert_loop(), name="llmtel-inserter")
        try:
            while True:
                messages = await self._bus.take(self._max_rows, self._max_wait_s)
                if not messages:
                    break
                prepared = await asyncio.to_thread(self._prepare, messages)
                await self._prepared.put(prepared)
        finally:
            await self._prepared.put(None)
            await inserter

    def _prepare(self, messages: list[OtlpMessage]) -> _Prepared:
        started = time.perf_counter()
        rows = SpanBatch()
        spans = 0
        for message in messages:
            spans += message.span_count
            try:
                rows.extend(self._process(message))
            except Exception as exc:  # a processing bug must not stall or lose the rest
                log.exception(
                    "request could not be processed; set aside as a dead letter",
                    extra={"tenant": message.tenant_id, "spans": message.span_count},
                )
                metrics.DEAD_LETTERS.inc()
                self._dead_letter(message, exc)
        metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
        return _Prepared(rows, spans)

    async def _insert_loop(self) -> None:
        while (prepared := await self._prepared.get()) is not None:
            if len(prepared.rows):
                await self._store_with_retry(prepared.rows)
            self._bus.release(prepared.spans)
            self.stored_spans += len(prepared.rows)
            self.last_store_monotonic = time.monotonic()

    async def _store_with_retry(self, rows: SpanBatch) -> None:
        delay = self._retry_initial_s
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._store, rows)
            except Exception:
                metrics.INSERT_FAILURES.inc()
                log.exception(
                    "insert failed; retrying", extra={"rows": len(rows), "retry_s": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            metrics.INSERT_SECONDS.observe(time.perf_counter() - started)
            metrics.INSERT_ROWS.inc(len(rows))
            if rows.unpriced:
                metrics.UNPRICED_SPANS.inc(rows.unpriced)
            return
