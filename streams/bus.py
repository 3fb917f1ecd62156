"""The in-process bus of embedded mode: a bounded hand-off from receivers to the writer.

Capacity is counted in spans, not requests, and a span's capacity is only released once
the writer has stored it, so memory stays bounded and a slow store pushes back to the
OTLP edge (503 / UNAVAILABLE) instead of buffering without limit.
"""

from __future__ import annotations

import asyncio
from collections import deque

from schema.messages import BusFull, HandoffUnavailable, OtlpMessage
from streams import metrics


class InProcessBus:
    def __init__(self, capacity_spans: int, retry_after_s: float = 1.0) -> None:
        self._capacity = capacity_spans
        self._retry_after_s = retry_after_s
        self._queue: deque[OtlpMessage] = deque()
        self._queued_spans = 0
        self._in_flight_spans = 0  # queued + taken but not yet released
        self._ready = asyncio.Event()
        self._closed = False
        self._refusing = False  # a submit was refused and no capacity came back since

    @property
    def in_flight_spans(self) -> int:
        return self._in_flight_spans

    @property
    def queued_messages(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, message: OtlpMessage) -> None:
        if self._closed:
            raise HandoffUnavailable("llmtel is shutting down; retry against another instance")
        # A request larger than the whole capacity is still taken when the bus is empty,
        # otherwise it could never be accepted at all.
        if self._in_flight_spans and self._in_flight_spans + message.span_count > self._capacity:
            metrics.BUS_REFUSALS.inc()
            self._refusing = True
            raise BusFull(self._retry_after_s)
        self._queue.append(message)
        self._queued_spans += message.span_count
        self._in_flight_spans += message.span_count
        metrics.BUS_SPANS.set(self._in_flight_spans)
        self._ready.set()

    async def take(self, max_spans: int, max_wait_s: float) -> list[OtlpMessage]:
        """Up to `max_spans` spans' worth of messages, waiting at most `max_wait_s` to fill.

        Returns an empty list only once the bus is closed and drained.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_s
        while not self._queue:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        while self._queued_spans < max_spans and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), remaining)
            except TimeoutError:
                break
        taken: list[OtlpMessage] = []
        spans = 0
        while self._queue and (not taken or spans + self._queue[0].span_count <= max_spans):
            message = self._queue.popleft()
            spans += message.span_count
            taken.append(message)
        self._queued_spans -= spans
        return taken

    def full(self) -> float | None:
        """Retry-after while the bus is full, or has refused a request since capacity last
        came back (the next one would most likely be refused too, after being decoded)."""
        if self._closed:
            return None  # let submit say why: shutting down is not "full"
        if self._refusing or self._in_flight_spans >= self._capacity:
            return self._retry_after_s
        return None

    def release(self, spans: int) -> None:
        """Give back capacity for spans that are now stored (or dead-lettered)."""
        self._in_flight_spans -= spans
        if spans:
            self._refusing = False
        metrics.BUS_SPANS.set(self._in_flight_spans)

    def close(self) -> None:
        """Refuse new messages; `take` keeps returning what is queued, then []."""
        self._closed = True
        self._ready.set()
