"""Embedded driver: the window task's closed windows and anomalies -> the notifier.

`WindowTask.tick` runs in a worker thread and calls `feed`, which only hands the records
to the event loop; `run` passes them on in order. `warm_up` replays recently stored
windows at start so that the rolling history survives a restart (notifications already
sent are in the ledger and are not repeated).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from schema.windows import AnomalyRecord, WindowRecord
from streams.notify.notifier import Notifier

Item = tuple[list[WindowRecord], list[AnomalyRecord]]


class EmbeddedNotifyFeed:
    def __init__(self, notifier: Notifier, loop: asyncio.AbstractEventLoop) -> None:
        self._notifier = notifier
        self._loop = loop
        self._queue: asyncio.Queue[Item] = asyncio.Queue()

    def feed(self, windows: Sequence[WindowRecord], anomalies: Sequence[AnomalyRecord]) -> None:
        """Thread-safe; never blocks the caller."""
        if windows or anomalies:
            item = (list(windows), list(anomalies))
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def warm_up(self, windows: Sequence[WindowRecord]) -> None:
        await self._notifier.on_windows(sorted(windows, key=lambda w: w.window_start_ns))

    async def run(self, stop: asyncio.Event) -> None:
        """Pass fed records on until `stop`, then pass on what is left."""
        while not stop.is_set() or not self._queue.empty():
            if self._queue.empty():
                getter = asyncio.ensure_future(self._queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if not getter.done():
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    continue
                windows, anomalies = getter.result()
            else:
                windows, anomalies = self._queue.get_nowait()
            await self._notifier.on_windows(windows)
            await self._notifier.on_anomalies(anomalies)
