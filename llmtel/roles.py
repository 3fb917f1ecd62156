"""The distributed roles, each its own process: `llmtel ingest`, `sink`, `streams`, `api`.

Every role reads the same `Settings`; stopping a role (SIGINT/SIGTERM) stops accepting
first, then hands on or flushes what it holds.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import start_http_server

from api.app import create_app
from ingest.grpc import create_otlp_grpc_server
from ingest.http import create_otlp_http_app
from ingest.kafka import KafkaHandoff
from ingest.ports import Authenticator
from ingest.remote_auth import RemoteAuthenticator
from ingest.service import IngestService
from llmtel import logs
from llmtel.notify import allowed_urls, run_kafka_notifier
from llmtel.serving import announce_keys, freeze_startup_heap, http_server, run_until_signal
from llmtel.settings import Settings
from schema.clickhouse import Database
from schema.migrate import migrate
from schema.tenants import TenantStore
from streams.pricing import Pricer
from streams.sink import KafkaSink
from streams.unit_prices import GenaiUnitPrices

log = logging.getLogger("llmtel")


def _authenticator(settings: Settings) -> tuple[Authenticator | None, Database | None]:
    if settings.no_auth:
        log.warning("AUTHENTICATION IS OFF (--no-auth): all data is written as tenant 'default'")
        return None, None
    if settings.auth_url:
        return RemoteAuthenticator(settings.auth_url, settings.key_cache_ttl_s), None
    db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
    return TenantStore(db, cache_ttl_s=settings.key_cache_ttl_s), db


async def serve_ingest(settings: Settings, stop: asyncio.Event) -> None:
    """OTLP receivers -> Kafka; an OK is sent only after the broker acknowledged."""
    handoff = KafkaHandoff(
        settings.kafka_bootstrap,
        send_timeout_s=settings.kafka_send_timeout_s,
        max_request_bytes=settings.max_request_bytes,
        retry_after_s=settings.retry_after_s,
    )
    await handoff.start(wait_s=10)
    authenticator, db = _authenticator(settings)
    service = IngestService(handoff, authenticator)
    start_http_server(settings.metrics_port, addr=settings.host)
    otlp_http = http_server(
        create_otlp_http_app(service, settings.max_request_bytes),
        settings.host,
        settings.otlp_http_port,
    )
    grpc_server = create_otlp_grpc_server(
        service, f"{settings.host}:{settings.otlp_grpc_port}", settings.max_request_bytes
    )
    http_task = asyncio.create_task(otlp_http.serve(), name="llmtel-otlp-http")
    await grpc_server.start()
    log.info(
        "llmtel ingest is up",
        extra={
            "kafka": settings.kafka_bootstrap,
            "otlp_grpc": settings.otlp_grpc_port,
            "otlp_http": settings.otlp_http_port,
        },
    )
    await stop.wait()
    await grpc_server.stop(grace=5)
    otlp_http.should_exit = True
    await asyncio.gather(http_task, return_exceptions=True)
    await handoff.stop()
    if isinstance(authenticator, RemoteAuthenticator):
        await authenticator.aclose()
    if db is not None:
        db.close()


async def serve_api(settings: Settings, stop: asyncio.Event, db: Database | None = None) -> None:
    """The query and admin API (+ /metrics) over ClickHouse."""
    own_db = db is None
    if db is None:
        db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
        migrate(db, settings.retention_days)
    tenants = TenantStore(db, cache_ttl_s=settings.key_cache_ttl_s)
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    announce_keys(tenants.bootstrap(admin_key))
    app = create_app(
        db, tenants, no_auth=settings.no_auth, prices=GenaiUnitPrices(),
        alert_allowed_urls=allowed_urls(settings),
    )  # fmt: skip
    app.state.metrics_config = settings.metrics_config()  # /metrics and PromQL
    server = http_server(app, settings.host, settings.api_port)
    freeze_startup_heap()
    task = asyncio.create_task(server.serve(), name="llmtel-api")
    await stop.wait()
    server.should_exit = True
    await asyncio.gather(task, return_exceptions=True)
    if own_db:
        db.close()


async def serve_sink(
    settings: Settings, stop: asyncio.Event, *, with_api: bool = False, with_notify: bool = False
) -> None:
    """Kafka -> ClickHouse. `with_api` also serves the API from this process, which is how
    the embedded engine (one process per data directory) runs distributed; `with_notify`
    runs the alert notifier here for the same reason."""
    if settings.embedded_engine:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
    migrate(db, settings.retention_days)
    sink = KafkaSink(
        db,
        TenantStore(db, cache_ttl_s=settings.key_cache_ttl_s),
        Pricer(),
        settings.kafka_bootstrap,
        settings.kafka_consumer_group,
        max_rows=settings.batch_max_rows,
        max_wait_s=settings.batch_max_wait_s,
    )
    api_stop = asyncio.Event()
    api_task = (
        asyncio.create_task(serve_api(settings, api_stop, db), name="llmtel-api")
        if with_api
        else None
    )
    notify_stop = asyncio.Event()
    notify_task = (
        asyncio.create_task(
            run_kafka_notifier(
                settings, db, TenantStore(db, cache_ttl_s=settings.key_cache_ttl_s), notify_stop
            ),
            name="llmtel-notify",
        )
        if with_notify
        else None
    )
    if not with_api:
        start_http_server(settings.metrics_port, addr=settings.host)
    log.info("llmtel sink is up", extra={"kafka": settings.kafka_bootstrap, "api": with_api})
    try:
        await sink.run(stop)
    finally:
        api_stop.set()
        notify_stop.set()
        if notify_task is not None:
            await asyncio.gather(notify_task, return_exceptions=True)
        if api_task is not None:
            await api_task
        db.close()


def run_sink(settings: Settings, with_api: bool = False, with_notify: bool = False) -> int:
    return run_until_signal(
        settings,
        lambda stop: serve_sink(settings, stop, with_api=with_api, with_notify=with_notify),
    )


def run_ingest(settings: Settings) -> int:
    return run_until_signal(settings, lambda stop: serve_ingest(settings, stop))


def run_api(settings: Settings) -> int:
    return run_until_signal(settings, lambda stop: serve_api(settings, stop))


def run_streams(settings: Settings) -> int:
    """The faust worker: per-tenant windows and anomalies from llmtel.otlp.v1.

    Tenant price overrides reach the windows only when ClickHouse is a server (a streams
    worker cannot open the embedded engine the sink holds); otherwise list prices are used.
    """
    from streams.faust_app import StreamsConfig, create_faust_app, run_streams_worker

    logs.configure(settings.log_level, settings.log_format)
    start_http_server(settings.metrics_port, addr=settings.host)
    settings_for = None
    if not settings.embedded_engine:
        db = Database.connect(settings.clickhouse_url, settings.clickhouse_database)
        settings_for = TenantStore(db, cache_ttl_s=settings.key_cache_ttl_s).get_settings
    app = create_faust_app(
        StreamsConfig(
            bootstrap=settings.kafka_bootstrap,
            window=settings.window_config(),
            partitions=settings.kafka_topic_partitions,
            replication=settings.kafka_replication_factor,
            data_dir=settings.data_dir / "streams",
        ),
        settings_for=settings_for,
    )
    return run_streams_worker(app, loglevel=settings.log_level.lower(), override_logging=False)
