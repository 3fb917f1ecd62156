-- Per-minute latency histograms per tenant and model: what the Prometheus histograms
-- llmtel_llm_request_duration_seconds and llmtel_llm_time_to_first_token_seconds are read
-- from (t-digest states in llm_rollup_1m cannot give bucket counts). Each span adds 1 to
-- the one bucket its value falls in (value <= upper bound); the bounds, in seconds, are
-- api/promql/catalogue.py DURATION_BUCKETS and TTFT_BUCKETS, the last one +Inf. Model is
-- the response model, else the request model, as in llm_rollup_1m. No TTL, like the rollup.
CREATE TABLE IF NOT EXISTS {db}.llm_latency_1m
(
    Minute DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    Model LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    DurationSumS SimpleAggregateFunction(sum, Float64),
    DurationBuckets AggregateFunction(sumForEach, Array(UInt64)),
    TtftCount SimpleAggregateFunction(sum, UInt64),
    TtftSumS SimpleAggregateFunction(sum, Float64),
    TtftBuckets AggregateFunction(sumForEach, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (TenantId, Minute, Model);

-- backfill from the spans stored before this migration (those within span retention)
INSERT INTO {db}.llm_latency_1m
SELECT
    toStartOfMinute(toDateTime(Timestamp, 'UTC')) AS Minute,
    TenantId,
    if(LlmResponseModel != '', LlmResponseModel, LlmRequestModel) AS Model,
    toUInt64(count()) AS Requests,
    sum(Duration / 1e9) AS DurationSumS,
    sumForEachState(arrayMap(
        i -> toUInt64(i = arrayFirstIndex(
            b -> Duration / 1e9 <= b, [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, inf])),
        range(1, 13))) AS DurationBuckets,
    toUInt64(countIf(isNotNull(LlmTimeToFirstTokenMs))) AS TtftCount,
    sum(ifNull(LlmTimeToFirstTokenMs, 0) / 1000) AS TtftSumS,
    sumForEachState(arrayMap(
        i -> toUInt64(isNotNull(LlmTimeToFirstTokenMs) AND i = arrayFirstIndex(
            b -> ifNull(LlmTimeToFirstTokenMs, 0) / 1000 <= b, [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, inf])),
        range(1, 10))) AS TtftBuckets
FROM {db}.otel_traces
WHERE IsLlm
GROUP BY Minute, TenantId, Model;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_latency_1m_mv
TO {db}.llm_latency_1m
AS SELECT
    toStartOfMinute(toDateTime(Timestamp, 'UTC')) AS Minute,
    TenantId,
    if(LlmResponseModel != '', LlmResponseModel, LlmRequestModel) AS Model,
    toUInt64(count()) AS Requests,
    sum(Duration / 1e9) AS DurationSumS,
    sumForEachState(arrayMap(
        i -> toUInt64(i = arrayFirstIndex(
            b -> Duration / 1e9 <= b, [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, inf])),
        range(1, 13))) AS DurationBuckets,
    toUInt64(countIf(isNotNull(LlmTimeToFirstTokenMs))) AS TtftCount,
    sum(ifNull(LlmTimeToFirstTokenMs, 0) / 1000) AS TtftSumS,
    sumForEachState(arrayMap(
        i -> toUInt64(isNotNull(LlmTimeToFirstTokenMs) AND i = arrayFirstIndex(
            b -> ifNull(LlmTimeToFirstTokenMs, 0) / 1000 <= b, [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, inf])),
        range(1, 10))) AS TtftBuckets
FROM {db}.otel_traces
WHERE IsLlm
GROUP BY Minute, TenantId, Model;
