"""Distributed driver: `llmtel.windows.v1` and `llmtel.anomalies.v1` -> the notifier.

A consumer group (so several notifiers split the tenants' partitions) that never commits:
on every assignment it seeks each partition back `lookback_s` (by timestamp), so the
rolling history is rebuilt from the retained windows after a restart or rebalance. The
replayed windows produce the same alert ids as the first time, and the ledger lets each
through once; windows older than the notifier's `max_age_s` only feed the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from schema.windows import (
    ANOMALIES_TOPIC,
    WINDOWS_TOPIC,
    AnomalyRecord,
    RecordDecodeError,
    WindowRecord,
)
from streams.notify import metrics
from streams.notify.notifier import Notifier

log = logging.getLogger(__name__)


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, driver: KafkaNotifyDriver) -> None:
        self._driver = driver

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self._driver.rewind(assigned)


class KafkaNotifyDriver:
    def __init__(
        self,
        notifier: Notifier,
        bootstrap: str,
        group_id: str,
        *,
        lookback_s: float,
        windows_topic: str = WINDOWS_TOPIC,
        anomalies_topic: str = ANOMALIES_TOPIC,
        poll_ms: int = 200,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._notifier = notifier
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._lookback_ms = int(lookback_s * 1000)
        self.windows_topic = windows_topic
        self.anomalies_topic = anomalies_topic
        self._poll_ms = poll_ms
        self._config = dict(consumer_config or {})
        self._consumer: Any = None
        self.assigned = asyncio.Event()

    async def rewind(self, assigned: set[Any]) -> None:
        """Seek newly assigned partitions to `lookback_s` ago (or their end)."""
        if not assigned:
            return
        since = int(time.time() * 1000) - self._lookback_ms
        found = await self._consumer.offsets_for_times(dict.fromkeys(assigned, since))
        for tp in assigned:
            at = found.get(tp)
            if at is None:
                await self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek(tp, at.offset)
        self.assigned.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=f"llmtel-notify-{self._group_id}",
            enable_auto_commit=False,
            auto_offset_reset="latest",
            **self._config,
        )
        await self._consumer.start()
        self._consumer.subscribe([self.windows_topic, self.anomalies_topic], listener=_Seek(self))
        log.info("notifier consuming", extra={"topics": [self.windows_topic, self.anomalies_topic]})
        try:
            while not stop.is_set():
                fetched = await self._consumer.getmany(timeout_ms=self._poll_ms, max_records=500)
                windows: list[WindowRecord] = []
                anomalies: list[AnomalyRecord] = []
                for tp, records in fetched.items():
                    for record in records:
                        try:
                            if tp.topic == self.windows_topic:
                                windows.append(WindowRecord.from_json(record.value))
                            else:
                                anomalies.append(AnomalyRecord.from_json(record.value))
                        except RecordDecodeError as exc:
                            metrics.INVALID_RECORDS.inc()
                            log.warning(
                                "undecodable record skipped",
                                extra={
                                    "topic": tp.topic,
                                    "offset": record.offset,
                                    "error": str(exc),
                                },
                            )
                windows.sort(key=lambda w: w.window_start_ns)
                await self._notifier.on_windows(windows)
                await self._notifier.on_anomalies(anomalies)
        finally:
            await self._consumer.stop()
