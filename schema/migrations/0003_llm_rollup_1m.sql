-- Per-minute LLM usage per tenant, service, model and provider: what usage and billing read
-- (never raw spans). Model is the response model, else the request model. Sums are exact
-- (UInt64 tokens, Decimal(38, 12) dollars, summed over priced spans only); unpriced spans
-- are counted. Latency distributions are mergeable t-digest states. Kept without TTL: it is
-- small, and billing history outlives span retention.
CREATE TABLE IF NOT EXISTS {db}.llm_rollup_1m
(
    Minute DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    ServiceName LowCardinality(String),
    Model LowCardinality(String),
    Provider LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CacheReadTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(38, 12)),
    UnpricedRequests SimpleAggregateFunction(sum, UInt64),
    DurationNs AggregateFunction(quantileTDigest, UInt64),
    TimeToFirstTokenMs AggregateFunction(quantileTDigest, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (TenantId, Minute, ServiceName, Model, Provider);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_rollup_1m_mv
TO {db}.llm_rollup_1m
AS SELECT
    toStartOfMinute(toDateTime(Timestamp, 'UTC')) AS Minute,
    TenantId,
    ServiceName,
    if(LlmResponseModel != '', LlmResponseModel, LlmRequestModel) AS Model,
    LlmProvider AS Provider,
    toUInt64(count()) AS Requests,
    toUInt64(countIf(StatusCode = 'Error')) AS Errors,
    sum(LlmInputTokens) AS InputTokens,
    sum(LlmOutputTokens) AS OutputTokens,
    sum(LlmCacheReadTokens) AS CacheReadTokens,
    sum(LlmReasoningTokens) AS ReasoningTokens,
    sum(ifNull(LlmCostUsd, toDecimal128(0, 12))) AS CostUsd,
    toUInt64(countIf(LlmCostUsd IS NULL)) AS UnpricedRequests,
    quantileTDigestState(Duration) AS DurationNs,
    quantileTDigestStateIf(
        assumeNotNull(LlmTimeToFirstTokenMs), isNotNull(LlmTimeToFirstTokenMs)
    ) AS TimeToFirstTokenMs
FROM {db}.otel_traces
WHERE IsLlm
GROUP BY Minute, TenantId, ServiceName, Model, Provider;
