"""The one settings class: explicit argument > environment (LLMTEL_*) > default."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.promql.config import MetricsConfig
from streams.windows import WindowConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMTEL_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Where embedded state lives.")
    clickhouse_url: str = Field(
        "",
        description="chdb:///path (embedded engine) or http(s)://host:8123/db; "
        "default chdb://<data_dir>/clickhouse",
    )
    clickhouse_database: str = Field("llmtel", description="Database for chdb:// URLs.")
    retention_days: int = Field(30, ge=1, description="Span TTL in days.")

    host: str = Field("0.0.0.0", description="Bind address for all listeners.")
    otlp_grpc_port: int = 4317
    otlp_http_port: int = 4318
    api_port: int = 8000

    admin_key: SecretStr | None = Field(None, description="Admin key to install on first start.")
    no_auth: bool = Field(False, description="Accept all data as tenant 'default'. Unsafe.")
    key_cache_ttl_s: float = Field(2.0, gt=0, description="How long a key lookup is cached.")

    max_request_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Decompressed limit.")
    bus_capacity_spans: int = Field(200_000, gt=0, description="Spans accepted but not written.")
    batch_max_rows: int = Field(
        20_000, gt=0, description="Rows taken from the bus per batch (prepared together)."
    )
    batch_max_wait_s: float = Field(0.25, gt=0)
    insert_max_rows: int = Field(
        60_000,
        gt=0,
        description="Rows one insert may hold when prepared batches wait for the engine "
        "(a backlog): they are joined into one part.",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent when at capacity.")
    prepare_workers: int = Field(
        1,
        ge=0,
        description="Processes that normalise and encode spans for insert; 0: a thread of "
        "the main process.",
    )

    # distributed mode
    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers.")
    kafka_topic_partitions: int = Field(6, ge=1, description="Partitions of created topics.")
    kafka_replication_factor: int = Field(1, ge=1, description="Replication of created topics.")
    kafka_send_timeout_s: float = Field(
        5.0, gt=0, description="How long ingest waits for the broker before answering 503."
    )
    auth_url: str = Field(
        "",
        description="llmtel API that `llmtel ingest` asks to check keys; empty: read ClickHouse.",
    )
    metrics_port: int = Field(9464, description="/metrics port of ingest, streams and sink.")
    metrics_top_models: int = Field(
        10, ge=1, description="Models per tenant with their own LLM series; the rest: 'other'."
    )
    promql_sample_interval_s: float = Field(
        15.0, gt=0, le=60, description="PromQL's virtual scrape interval (= Prometheus')."
    )
    kafka_consumer_group: str = Field("llmtel-sink", description="Sink consumer group.")

    # windows and anomalies (both modes)
    window_s: float = Field(60.0, gt=0, description="Tumbling window length.")
    window_lateness_s: float = Field(5.0, ge=0, description="Allowed lateness after window end.")
    window_history: int = Field(30, ge=1, description="Closed windows in the rolling average.")
    anomaly_factor: float = Field(3.0, gt=1, description="Anomaly when value > factor x avg.")
    anomaly_min_history: int = Field(5, ge=1, description="Windows of history before alerting.")

    # alert notifications (both modes)
    alert_allowed_urls: str = Field(
        "",
        description="Comma-separated URL prefixes alerts may use without https "
        "(e.g. http://127.0.0.1); everything else must be https.",
    )
    alert_max_attempts: int = Field(5, ge=1, description="Delivery attempts before giving up.")
    alert_retry_initial_s: float = Field(1.0, ge=0, description="First retry backoff.")
    alert_retry_max_s: float = Field(60.0, ge=0, description="Longest backoff / Retry-After.")
    alert_timeout_s: float = Field(5.0, gt=0, description="Timeout of one delivery attempt.")
    alert_max_age_s: float = Field(
        900.0, gt=0, description="Windows that ended longer ago than this notify nobody."
    )
    alert_workers: int = Field(4, ge=1, description="Concurrent deliveries.")
    alert_link_url: str = Field(
        "", description="API base URL used in alert links; default http://localhost:<api_port>."
    )
    notify_consumer_group: str = Field("llmtel-notify", description="Notifier consumer group.")

    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _default_clickhouse_url(self) -> Settings:
        if not self.clickhouse_url:
            self.clickhouse_url = f"chdb://{(self.data_dir / 'clickhouse').resolve()}"
        return self

    def metrics_config(self) -> MetricsConfig:
        return MetricsConfig(self.metrics_top_models, self.promql_sample_interval_s)

    def window_config(self) -> WindowConfig:
        return WindowConfig(
            window_s=self.window_s,
            lateness_s=self.window_lateness_s,
            history=self.window_history,
            factor=self.anomaly_factor,
            min_history=self.anomaly_min_history,
        )

    @property
    def embedded_engine(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")
