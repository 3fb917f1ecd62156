-- One row per span. The first columns, their types and codecs are those of the OpenTelemetry
-- Collector's ClickHouse exporter (exporter/clickhouseexporter), so Grafana's ClickHouse
-- datasource reads llmtel traces as it reads the collector's; TenantId and Llm* are llmtel's.
-- Column order and meaning: schema/spans.py (SPAN_COLUMNS).
CREATE TABLE IF NOT EXISTS {db}.otel_traces
(
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    TenantId LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    IsLlm Bool DEFAULT false CODEC(ZSTD(1)),
    LlmProvider LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    LlmOperation LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    LlmRequestModel LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    LlmResponseModel LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    LlmInputTokens UInt64 DEFAULT 0 CODEC(T64, ZSTD(1)),
    LlmOutputTokens UInt64 DEFAULT 0 CODEC(T64, ZSTD(1)),
    LlmCacheReadTokens UInt64 DEFAULT 0 CODEC(T64, ZSTD(1)),
    LlmReasoningTokens UInt64 DEFAULT 0 CODEC(T64, ZSTD(1)),
    LlmCostUsd Nullable(Decimal(38, 12)) DEFAULT NULL CODEC(ZSTD(1)),
    LlmCostSource LowCardinality(String) DEFAULT '' CODEC(ZSTD(1)),
    LlmTimeToFirstTokenMs Nullable(Float64) DEFAULT NULL CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (TenantId, ServiceName, SpanName, toDateTime(Timestamp))
TTL toDateTime(Timestamp) + toIntervalDay({ttl_days})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;
