"""Embedded mode: every part of llmtel in one process, in-process bus, embedded ClickHouse.

Start order: storage (migrate, bootstrap keys) -> writer -> API -> OTLP receivers.
Stop order is the reverse for receivers, so that nothing new is accepted, then the bus is
closed and drained into ClickHouse before the API and the engine go away: every request
that got a success answer is stored before the process exits.
"""

from __future__ import annotations

import asyncio
import logging

from api.app import create_app
from ingest.grpc import create_otlp_grpc_server
from ingest.http import create_otlp_http_app
from ingest.service import IngestService
from llmtel.notify import EmbeddedAlerts, allowed_urls
from llmtel.serving import announce_keys, freeze_startup_heap, http_server, run_until_signal
from llmtel.settings import Settings
from schema.clickhouse import Database
from schema.messages import OtlpMessage
from schema.migrate import migrate
from schema.spans import SPAN_COLUMNS, SPANS_TABLE
from schema.tenants import TenantStore
from schema.window_store import insert_anomalies, insert_windows
from streams.bus import InProcessBus
from streams.deadletter import DeadLetterDirectory
from streams.pool import PreparePool
from streams.prepare import Job, PreparedBlock
from streams.unit_prices import GenaiUnitPrices
from streams.window_task import WindowTask
from streams.writer import SpanWriter

log = logging.getLogger("llmtel")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then shut down without losing accepted data."""
    if settings.embedded_engine:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
    applied = migrate(db, settings.retention_days)
    if applied:
        log.info("migrations applied", extra={"migrations": applied})
    tenants = TenantStore(db, cache_ttl_s=settings.key_cache_ttl_s)
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    announce_keys(tenants.bootstrap(admin_key))
    if settings.no_auth:
        log.warning(
            "AUTHENTICATION IS OFF (--no-auth): anyone who can reach the OTLP ports can write "
            "as tenant 'default' and read every tenant's data through the API"
        )

    window_config = settings.window_config()
    pool = PreparePool(
        settings.prepare_workers,
        db.column_types(SPANS_TABLE, SPAN_COLUMNS),
        window_config.window_ns,
    )
    await asyncio.to_thread(pool.warm_up)

    def jobs_of(messages: list[OtlpMessage]) -> list[Job]:
        return [
            Job(
                message.tenant_id,
                message.received_at_ns,
                message.request.SerializeToString() if message.payload is None else message.payload,
                tenants.get_settings(message.tenant_id),
            )
            for message in messages
        ]

    async def prepare(messages: list[OtlpMessage]) -> PreparedBlock:
        return await pool.prepare(await asyncio.to_thread(jobs_of, messages))

    windows = WindowTask(
        window_config,
        lambda records: insert_windows(db, records),
        lambda records: insert_anomalies(db, records),
        state_file=settings.data_dir / "windows-state.json",
    )
    alerts = EmbeddedAlerts(settings, db, tenants)
    await alerts.start()
    windows.on_closed = alerts.feed

    def store(prepared: PreparedBlock) -> None:
        db.insert_native(SPANS_TABLE, SPAN_COLUMNS, prepared.block)
        try:  # stored is stored: a window bug must not make the writer insert again
            windows.add_partials(prepared.windows)
        except Exception:
            log.exception("window aggregation failed for a stored batch")

    bus = InProcessBus(settings.bus_capacity_spans, settings.retry_after_s)
    writer = SpanWriter(
        bus, prepare, store, DeadLetterDirectory(settings.data_dir / "dead-letter"),
        max_rows=settings.batch_max_rows, max_wait_s=settings.batch_max_wait_s,
        in_flight=max(1, settings.prepare_workers) + 2,
        insert_max_rows=settings.insert_max_rows,
    )  # fmt: skip
    writer_task = asyncio.create_task(writer.run(), name="llmtel-writer")
    windows_stop = asyncio.Event()
    windows_task = asyncio.create_task(windows.run(windows_stop), name="llmtel-windows")

    service = IngestService(bus, None if settings.no_auth else tenants)
    api_app = create_app(
        db,
        tenants,
        no_auth=settings.no_auth,
        ready=lambda: not bus.closed,
        prices=GenaiUnitPrices(),
        alert_allowed_urls=allowed_urls(settings),
    )
    api_app.state.metrics_config = settings.metrics_config()  # /metrics and PromQL
    api = http_server(api_app, settings.host, settings.api_port)
    otlp_http = http_server(
        create_otlp_http_app(service, settings.max_request_bytes),
        settings.host,
        settings.otlp_http_port,
    )
    grpc_server = create_otlp_grpc_server(
        service, f"{settings.host}:{settings.otlp_grpc_port}", settings.max_request_bytes
    )
    freeze_startup_heap()
    api_task = asyncio.create_task(api.serve(), name="llmtel-api")
    http_task = asyncio.create_task(otlp_http.serve(), name="llmtel-otlp-http")
    await grpc_server.start()
    log.info(
        "llmtel is up (embedded)",
        extra={
            "otlp_grpc": settings.otlp_grpc_port,
            "otlp_http": settings.otlp_http_port,
            "api": settings.api_port,
            "clickhouse": settings.clickhouse_url,
        },
    )
    failed = asyncio.create_task(_first_failure(api_task, http_task, writer_task))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: refusing new data, flushing what was accepted")

    await grpc_server.stop(grace=5)
    otlp_http.should_exit = True
    await asyncio.gather(http_task, return_exceptions=True)
    bus.close()
    await writer_task
    await asyncio.to_thread(pool.close)
    log.info("flushed", extra={"stored_spans": writer.stored_spans})
    windows_stop.set()
    await windows_task
    await alerts.stop()
    api.should_exit = True
    await asyncio.gather(api_task, return_exceptions=True)
    failed.cancel()
    stopped.cancel()
    db.close()


async def _first_failure(*tasks: asyncio.Task[None]) -> None:
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if not task.cancelled() and task.exception():
            log.error("component failed", exc_info=task.exception())


def run(settings: Settings) -> int:
    return run_until_signal(settings, lambda stop: serve(settings, stop))
