-- Trace id -> time range, as the collector's exporter keeps it (plus TenantId): a trace
-- lookup reads the range here first, then only the day partitions of otel_traces it spans.
-- Seconds precision: readers widen the range by one second.
CREATE TABLE IF NOT EXISTS {db}.otel_traces_trace_id_ts
(
    TraceId String CODEC(ZSTD(1)),
    TenantId LowCardinality(String) CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
)
ENGINE = AggregatingMergeTree
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId, TenantId)
TTL toDateTime(Start) + toIntervalDay({ttl_days})
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.otel_traces_trace_id_ts_mv
TO {db}.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    TenantId,
    min(toDateTime(Timestamp)) AS Start,
    max(toDateTime(Timestamp)) AS End
FROM {db}.otel_traces
WHERE TraceId != ''
GROUP BY TraceId, TenantId;
