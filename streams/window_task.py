"""Embedded mode's driver of the pure window and anomaly logic.

The writer hands every stored batch to `add`; a ticker calls `tick` with the wall clock so
windows close even without traffic. Closed windows and anomalies are persisted (the same
tables the distributed sink fills) and anomalies are passed to `on_anomaly`. State is kept
in memory and saved to a JSON file on shutdown, so a restart keeps the rolling history.
All methods are called from worker threads; one lock serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from schema.spans import SpanBatch
from schema.windows import AnomalyRecord, WindowRecord
from streams import metrics
from streams.anomaly import AnomalyDetector, report
from streams.windows import (
    WindowAggregator,
    WindowConfig,
    WindowPartial,
    WindowStateError,
    partial_windows,
)

log = logging.getLogger(__name__)

StoreWindows = Callable[[Sequence[WindowRecord]], None]
StoreAnomalies = Callable[[Sequence[AnomalyRecord]], None]
OnClosed = Callable[[list[WindowRecord], list[AnomalyRecord]], None]


class WindowTask:
    def __init__(
        self,
        config: WindowConfig,
        store_windows: StoreWindows,
        store_anomalies: StoreAnomalies,
        state_file: Path | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._store_windows = store_windows
        self._store_anomalies = store_anomalies
        self._state_file = state_file
        self._clock = clock
        self._lock = threading.Lock()
        self.aggregator, self.detector = self._load()
        # closed but not yet persisted: kept across a failing store, retried next tick
        self._pending_windows: list[WindowRecord] = []
        self._pending_anomalies: list[AnomalyRecord] = []
        # called with what each tick persisted (the alert notifier); must not block
        self.on_closed: OnClosed | None = None

    def _load(self) -> tuple[WindowAggregator, AnomalyDetector]:
        if self._state_file and self._state_file.exists():
            try:
                saved = orjson.loads(self._state_file.read_bytes())
                return (
                    WindowAggregator.from_state(saved["windows"], self._config),
                    AnomalyDetector.from_state(saved["anomalies"], self._config),
                )
            except (WindowStateError, KeyError, ValueError):
                log.exception("window state unreadable; starting with empty history")
        return WindowAggregator(self._config), AnomalyDetector(self._config)

    def save(self) -> None:
        if not self._state_file:
            return
        with self._lock:
            state = {"windows": self.aggregator.state(), "anomalies": self.detector.state()}
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(state))
        tmp.replace(self._state_file)

    def add(self, batch: SpanBatch) -> None:
        self.add_partials(partial_windows(batch, self._config.window_ns))

    def add_partials(self, partials: Sequence[WindowPartial]) -> None:
        """Add a batch already summed by `partial_windows` (in a worker process)."""
        with self._lock:
            result = self.aggregator.add_partials(partials)
        if result.late:
            metrics.LATE_SPANS.inc(result.late)

    def tick(self) -> list[AnomalyRecord]:
        """Close due windows, judge them, persist both; return the anomalies found."""
        with self._lock:
            closed = self.aggregator.advance(self._clock())
            anomalies = self.detector.observe_all(closed)
            self._pending_windows.extend(closed)
            self._pending_anomalies.extend(anomalies)
            windows, found = self._pending_windows, self._pending_anomalies
            self._store_windows(windows)
            self._pending_windows = []
            self._store_anomalies(found)
            self._pending_anomalies = []
        report(len(closed), anomalies)
        if self.on_closed is not None and (windows or found):
            try:
                self.on_closed(windows, found)
            except Exception:
                log.exception("handing closed windows to the notifier failed")
        return anomalies

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a failing store is logged and retried on the next tick."""
        interval = min(1.0, max(0.1, self._config.window_s / 4))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("closing windows failed; will retry")
        await asyncio.to_thread(self.save)
