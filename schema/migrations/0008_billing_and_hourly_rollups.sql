-- Per-day LLM usage per tenant, model, provider and cost source: what invoices read. The
-- minute rollup cannot say where a cost came from (the span's own cost attribute, the
-- tenant's price override, genai-prices, or nothing: unpriced), and an invoice must. Days are
-- fine enough for invoices (calendar months, UTC) and for the unit prices in force, which
-- change by day. Sums are exact; no TTL, like llm_rollup_1m.
CREATE TABLE IF NOT EXISTS {db}.llm_billing_1d
(
    Day Date,
    TenantId LowCardinality(String),
    Model LowCardinality(String),
    Provider LowCardinality(String),
    CostSource LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CacheReadTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(38, 12)),
    UnpricedRequests SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Day)
ORDER BY (TenantId, Day, Model, Provider, CostSource);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_billing_1d_mv
TO {db}.llm_billing_1d
AS SELECT
    toDate(toDateTime(Timestamp, 'UTC')) AS Day,
    TenantId,
    if(LlmResponseModel != '', LlmResponseModel, LlmRequestModel) AS Model,
    LlmProvider AS Provider,
    if(LlmCostUsd IS NULL, '', LlmCostSource) AS CostSource,
    toUInt64(count()) AS Requests,
    sum(LlmInputTokens) AS InputTokens,
    sum(LlmOutputTokens) AS OutputTokens,
    sum(LlmCacheReadTokens) AS CacheReadTokens,
    sum(LlmReasoningTokens) AS ReasoningTokens,
    sum(ifNull(LlmCostUsd, toDecimal128(0, 12))) AS CostUsd,
    toUInt64(countIf(LlmCostUsd IS NULL)) AS UnpricedRequests
FROM {db}.otel_traces
WHERE IsLlm
GROUP BY Day, TenantId, Model, Provider, CostSource;

-- Backfill (start-up migrates before any writer runs). Each backfill inserts only into an
-- empty range, so that re-running a half-applied migration does not count anything twice:
-- the days still held as spans, with their cost source ...
INSERT INTO {db}.llm_billing_1d
SELECT
    toDate(toDateTime(Timestamp, 'UTC')) AS Day,
    TenantId,
    if(LlmResponseModel != '', LlmResponseModel, LlmRequestModel) AS Model,
    LlmProvider AS Provider,
    if(LlmCostUsd IS NULL, '', LlmCostSource) AS CostSource,
    toUInt64(count()),
    sum(LlmInputTokens),
    sum(LlmOutputTokens),
    sum(LlmCacheReadTokens),
    sum(LlmReasoningTokens),
    sum(ifNull(LlmCostUsd, toDecimal128(0, 12))),
    toUInt64(countIf(LlmCostUsd IS NULL))
FROM {db}.otel_traces
WHERE IsLlm AND (SELECT count() FROM {db}.llm_billing_1d) = 0
GROUP BY Day, TenantId, Model, Provider, CostSource;

-- ... and the older days whose spans retention already dropped, from the minute rollup, with
-- the cost source 'unknown' (priced costs, but nobody can tell any more by what).
INSERT INTO {db}.llm_billing_1d
SELECT
    toDate(Minute) AS Day,
    TenantId,
    Model,
    Provider,
    if(sum(Requests) = sum(UnpricedRequests), '', 'unknown') AS CostSource,
    sum(Requests),
    sum(InputTokens),
    sum(OutputTokens),
    sum(CacheReadTokens),
    sum(ReasoningTokens),
    sum(CostUsd),
    sum(UnpricedRequests)
FROM {db}.llm_rollup_1m
WHERE toDate(Minute) < (
    SELECT if(count() = 0, toDate('2149-06-06'), min(toDate(toDateTime(Timestamp, 'UTC'))))
    FROM {db}.otel_traces
    WHERE IsLlm
) AND (
    SELECT count() FROM {db}.llm_billing_1d WHERE Day < (
        SELECT if(count() = 0, toDate('2149-06-06'), min(toDate(toDateTime(Timestamp, 'UTC'))))
        FROM {db}.otel_traces
        WHERE IsLlm
    )
) = 0
GROUP BY Day, TenantId, Model, Provider;

-- Per-hour LLM usage per tenant and model, with mergeable latency states: what dashboards
-- read for whole hours (the minute rollup only for the partial hours at a range's edges), so
-- a day's quantiles merge 24 states per tenant and model instead of 1,440 per service too.
-- Fed from llm_rollup_1m (a view on a view's target fires on the same insert).
CREATE TABLE IF NOT EXISTS {db}.llm_rollup_1h
(
    Hour DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    Model LowCardinality(String),
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
PARTITION BY toYYYYMM(Hour)
ORDER BY (TenantId, Hour, Model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_rollup_1h_mv
TO {db}.llm_rollup_1h
AS SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    Model,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CacheReadTokens) AS CacheReadTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(CostUsd) AS CostUsd,
    sum(UnpricedRequests) AS UnpricedRequests,
    quantileTDigestMergeState(DurationNs) AS DurationNs,
    quantileTDigestMergeState(TimeToFirstTokenMs) AS TimeToFirstTokenMs
FROM {db}.llm_rollup_1m
GROUP BY Hour, TenantId, Model;

-- Backfill from the minute rollup, into an empty table only (as above).
INSERT INTO {db}.llm_rollup_1h
SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    Model,
    sum(Requests),
    sum(Errors),
    sum(InputTokens),
    sum(OutputTokens),
    sum(CacheReadTokens),
    sum(ReasoningTokens),
    sum(CostUsd),
    sum(UnpricedRequests),
    quantileTDigestMergeState(DurationNs),
    quantileTDigestMergeState(TimeToFirstTokenMs)
FROM {db}.llm_rollup_1m
WHERE (SELECT count() FROM {db}.llm_rollup_1h) = 0
GROUP BY Hour, TenantId, Model;
