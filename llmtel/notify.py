"""Wiring of the alert notifier: embedded task, `llmtel notify`, `llmtel sink --with-notify`.

The notifier keeps its ledger, rules and delivery log in ClickHouse. With a ClickHouse
server every role connects, so `llmtel notify` is its own process. With the embedded
engine (chDB: one process per data directory) it must live in the process that holds the
data: inside `llmtel up`, or inside the sink (`llmtel sink --with-notify`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import start_http_server

from llmtel.serving import run_until_signal
from llmtel.settings import Settings
from schema.alert_store import AlertStore
from schema.alert_urls import parse_prefixes
from schema.clickhouse import Database
from schema.tenants import TenantStore
from schema.windows import AnomalyRecord, WindowRecord
from streams.notify.delivery import Deliverer, RetryPolicy
from streams.notify.embedded import EmbeddedNotifyFeed
from streams.notify.evaluate import RuleEvaluator
from streams.notify.kafka import KafkaNotifyDriver
from streams.notify.notifier import Notifier

log = logging.getLogger("llmtel")


def allowed_urls(settings: Settings) -> tuple[str, ...]:
    return parse_prefixes(settings.alert_allowed_urls)


def build_notifier(settings: Settings, db: Database, tenants: TenantStore) -> Notifier:
    store = AlertStore(db, cache_ttl_s=settings.key_cache_ttl_s)
    policy = RetryPolicy(
        max_attempts=settings.alert_max_attempts,
        initial_s=settings.alert_retry_initial_s,
        max_s=settings.alert_retry_max_s,
        timeout_s=settings.alert_timeout_s,
    )
    link = settings.alert_link_url or f"http://localhost:{settings.api_port}"
    deliverer = Deliverer(policy, allowed_urls(settings), link, store.record_attempt)
    window = settings.window_config()
    evaluator = RuleEvaluator(window.history, window.min_history, window.min_rate_requests)
    return Notifier(
        store,
        tenants,
        deliverer,
        evaluator,
        workers=settings.alert_workers,
        max_age_s=settings.alert_max_age_s,
    )


def lookback_s(settings: Settings) -> float:
    """How far back a (re)started notifier replays windows: the rolling history and more."""
    window = settings.window_config()
    return (window.history + 2) * window.window_s + window.lateness_s


class EmbeddedAlerts:
    """The notifier as a task of `llmtel up`, fed by the window task."""

    def __init__(self, settings: Settings, db: Database, tenants: TenantStore) -> None:
        self._settings = settings
        self._store = AlertStore(db)
        self.notifier = build_notifier(settings, db, tenants)
        self._stop = asyncio.Event()
        self._feed: EmbeddedNotifyFeed | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.notifier.start()
        self._feed = EmbeddedNotifyFeed(self.notifier, asyncio.get_running_loop())
        since = time.time_ns() - int(lookback_s(self._settings) * 1e9)
        try:
            await self._feed.warm_up(await asyncio.to_thread(self._store.recent_windows, since))
        except Exception:
            log.exception("alert history warm-up failed; starting with empty history")
        self._task = asyncio.create_task(self._feed.run(self._stop), name="llmtel-notify")

    def feed(self, windows: list[WindowRecord], anomalies: list[AnomalyRecord]) -> None:
        """WindowTask's `on_closed`: called from its worker thread."""
        if self._feed is not None:
            self._feed.feed(windows, anomalies)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.notifier.stop()


async def run_kafka_notifier(
    settings: Settings, db: Database, tenants: TenantStore, stop: asyncio.Event
) -> None:
    """Consume windows and anomalies and notify until `stop`."""
    notifier = build_notifier(settings, db, tenants)
    await notifier.start()
    driver = KafkaNotifyDriver(
        notifier,
        settings.kafka_bootstrap,
        settings.notify_consumer_group,
        lookback_s=lookback_s(settings),
    )
    try:
        await driver.run(stop)
    finally:
        await notifier.stop()


async def serve_notify(settings: Settings, stop: asyncio.Event) -> None:
    if settings.embedded_engine:
        raise SystemExit(
            "llmtel notify needs a ClickHouse server (LLMTEL_CLICKHOUSE_URL=http(s)://...); "
            "with the embedded engine run the notifier in the sink: llmtel sink --with-notify"
        )
    db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
    start_http_server(settings.metrics_port, addr=settings.host)
    log.info("llmtel notify is up", extra={"kafka": settings.kafka_bootstrap})
    try:
        await run_kafka_notifier(settings, db, TenantStore(db, settings.key_cache_ttl_s), stop)
    finally:
        db.close()


def run_notify(settings: Settings) -> int:
    return run_until_signal(settings, lambda stop: serve_notify(settings, stop))
