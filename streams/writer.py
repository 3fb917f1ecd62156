"""Drains the in-process bus into ClickHouse: take -> prepare -> insert -> release.

Preparing (normalise + encode, `streams.prepare`) runs for up to `in_flight` batches at once,
in worker processes or a thread (`streams.pool`), while the previous batch is inserted; the
inserts happen one at a time, in the order the batches were taken. Batches that are already
prepared when an insert starts go into that insert (up to `insert_max_rows`): under a backlog
the engine then writes fewer, bigger parts, and merges rewrite rows fewer times, while at a
steady load each batch is inserted as soon as it is ready. Capacity goes back to the
bus only after the insert succeeded; a failing insert is retried with backoff and never
dropped, and while it fails the bus fills and receivers answer 503. A request that cannot be
prepared at all (a bug, not bad input: ingest validated it) is handed to `dead_letter`, so
that it is set aside, not lost, and the pipeline keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from schema.messages import OtlpMessage
from streams import metrics
from streams.bus import InProcessBus
from streams.prepare import PreparedBlock

log = logging.getLogger(__name__)

Prepare = Callable[[list[OtlpMessage]], Awaitable[PreparedBlock]]
Store = Callable[[PreparedBlock], None]
DeadLetter = Callable[[OtlpMessage, BaseException], None]


class PreparationFailed(Exception):
    """A request could not be turned into rows; the message says why."""


_Taken = tuple["asyncio.Future[PreparedBlock]", list[OtlpMessage]]


class SpanWriter:
    def __init__(
        self,
        bus: InProcessBus,
        prepare: Prepare,
        store: Store,
        dead_letter: DeadLetter,
        *,
        max_rows: int,
        max_wait_s: float,
        in_flight: int = 1,
        insert_max_rows: int = 0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
    ) -> None:
        self._bus = bus
        self._prepare = prepare
        self._store = store
        self._dead_letter = dead_letter
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._insert_max_rows = max(insert_max_rows, max_rows)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        # batches being prepared or waiting for their insert, in the order they were taken
        self._taken: asyncio.Queue[_Taken | None] = asyncio.Queue(maxsize=max(1, in_flight))
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
                prepared = asyncio.ensure_future(self._timed_prepare(messages))
                await self._taken.put((prepared, messages))
        finally:
            await self._taken.put(None)
            await inserter

    async def _timed_prepare(self, messages: list[OtlpMessage]) -> PreparedBlock:
        started = time.perf_counter()
        prepared = await self._prepare(messages)
        metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
        return prepared

    async def _insert_loop(self) -> None:
        pending: _Taken | None = None  # taken from the queue, not yet part of an insert
        closing = False
        while not closing:
            taken = pending if pending is not None else await self._taken.get()
            pending = None
            if taken is None:
                break
            blocks, messages = [await self._ready(taken)], list(taken[1])
            rows = blocks[0].rows
            # join the batches that are already prepared, while the insert stays in bounds
            while rows < self._insert_max_rows and not self._taken.empty():
                following = self._taken.get_nowait()
                if following is None:
                    closing = True
                    break
                ready_rows = _rows_if_ready(following[0])
                if ready_rows is None or rows + ready_rows > self._insert_max_rows:
                    pending = following
                    break
                blocks.append(await self._ready(following))
                messages.extend(following[1])
                rows += blocks[-1].rows
            prepared = joined(blocks)
            if prepared.rows:
                await self._store_with_retry(prepared)
            self._bus.release(sum(message.span_count for message in messages))
            self.stored_spans += prepared.rows
            self.last_store_monotonic = time.monotonic()

    async def _ready(self, taken: _Taken) -> PreparedBlock:
        """The prepared batch, with the requests that could not be prepared set aside."""
        future, messages = taken
        try:
            prepared = await future
        except Exception as exc:  # the preparing machinery itself failed: set all aside
            log.exception("a batch could not be prepared", extra={"requests": len(messages)})
            prepared = PreparedBlock(b"", 0, 0, [], [(i, repr(exc)) for i in range(len(messages))])
        for index, reason in prepared.failures:
            self._set_aside(messages[index], PreparationFailed(reason))
        return prepared

    def _set_aside(self, message: OtlpMessage, exc: BaseException) -> None:
        log.error(
            "request could not be processed; set aside as a dead letter",
            extra={"tenant": message.tenant_id, "spans": message.span_count, "error": str(exc)},
        )
        metrics.DEAD_LETTERS.inc()
        self._dead_letter(message, exc)

    async def _store_with_retry(self, prepared: PreparedBlock) -> None:
        delay = self._retry_initial_s
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._store, prepared)
            except Exception:
                metrics.INSERT_FAILURES.inc()
                log.exception(
                    "insert failed; retrying", extra={"rows": prepared.rows, "retry_s": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            metrics.INSERT_SECONDS.observe(time.perf_counter() - started)
            metrics.INSERT_ROWS.inc(prepared.rows)
            if prepared.unpriced:
                metrics.UNPRICED_SPANS.inc(prepared.unpriced)
            return


def _rows_if_ready(future: asyncio.Future[PreparedBlock]) -> int | None:
    """Rows of a batch whose preparation has finished (0 if it failed), None while it runs."""
    if not future.done():
        return None
    return 0 if future.exception() is not None else future.result().rows


def joined(blocks: list[PreparedBlock]) -> PreparedBlock:
    """Prepared batches as one insert: Native blocks concatenated are one Native stream,
    which the engine squashes into one part (failures are already set aside)."""
    if len(blocks) == 1:
        return blocks[0]
    return PreparedBlock(
        b"".join(block.block for block in blocks),
        sum(block.rows for block in blocks),
        sum(block.unpriced for block in blocks),
        [window for block in blocks for window in block.windows],
    )
