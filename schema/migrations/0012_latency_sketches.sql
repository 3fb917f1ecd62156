-- Per-tenant latency and time-to-first-token sketches for the dashboard overview's
-- p50/p95/p99. The t-digest states of llm_rollup_1m/1h are per model, service and provider,
-- and merging them is slow (~0.25 ms a state, up to ~2k centroids each): a day's quantiles
-- took 38 ms for one tenant and 57 ms for all at 100M spans. A DDSketch (quantileDD, 1 %
-- relative accuracy, a guarantee t-digest does not give) merges by adding bucket counters:
-- the same day took 8 ms from these tables. Minutes for short ranges and the edges of long
-- ones, hours (filled from the minutes on the same insert) for the rest; no TTL, like the
-- other rollups. A state is ~1 KB and a query wants a few dozen of them: granules of 128
-- rows, so that the rest of the table is not read and deserialised (with the default 8,192,
-- a tenant's day read every state of the month: 27 ms instead of 8).

CREATE TABLE IF NOT EXISTS {db}.llm_latency_sketch_1m
(
    Minute DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    DurationNs AggregateFunction(quantileDD(0.01), UInt64),
    TimeToFirstTokenMs AggregateFunction(quantileDD(0.01), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (TenantId, Minute)
SETTINGS index_granularity = 128;

CREATE TABLE IF NOT EXISTS {db}.llm_latency_sketch_1h
(
    Hour DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    DurationNs AggregateFunction(quantileDD(0.01), UInt64),
    TimeToFirstTokenMs AggregateFunction(quantileDD(0.01), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Hour)
ORDER BY (TenantId, Hour)
SETTINGS index_granularity = 128;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_latency_sketch_1h_mv
TO {db}.llm_latency_sketch_1h
AS SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    quantileDDMergeState(0.01)(DurationNs) AS DurationNs,
    quantileDDMergeState(0.01)(TimeToFirstTokenMs) AS TimeToFirstTokenMs
FROM {db}.llm_latency_sketch_1m
GROUP BY Hour, TenantId;

-- backfill the minutes from the spans still retained (the view above fills the hours from
-- them), into an empty table only; then the view that keeps the minutes up to date
INSERT INTO {db}.llm_latency_sketch_1m
SELECT
    toStartOfMinute(toDateTime(Timestamp, 'UTC')) AS Minute,
    TenantId,
    quantileDDState(0.01)(Duration) AS DurationNs,
    quantileDDStateIf(0.01)(
        assumeNotNull(LlmTimeToFirstTokenMs), isNotNull(LlmTimeToFirstTokenMs)
    ) AS TimeToFirstTokenMs
FROM {db}.otel_traces
WHERE IsLlm AND (SELECT count() FROM {db}.llm_latency_sketch_1m) = 0
GROUP BY Minute, TenantId;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_latency_sketch_1m_mv
TO {db}.llm_latency_sketch_1m
AS SELECT
    toStartOfMinute(toDateTime(Timestamp, 'UTC')) AS Minute,
    TenantId,
    quantileDDState(0.01)(Duration) AS DurationNs,
    quantileDDStateIf(0.01)(
        assumeNotNull(LlmTimeToFirstTokenMs), isNotNull(LlmTimeToFirstTokenMs)
    ) AS TimeToFirstTokenMs
FROM {db}.otel_traces
WHERE IsLlm
GROUP BY Minute, TenantId;
