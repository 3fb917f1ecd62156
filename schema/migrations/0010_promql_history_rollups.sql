-- Hourly and daily copies of the two minute tables PromQL reads (llm_rollup_1m,
-- llm_latency_1m), with exactly the label columns of its series, so that a query reads the
-- minutes its steps need and takes everything before them from a few coarse rows (a series'
-- counter value is the sum of ALL its earlier increments): days before the query's day,
-- hours before its hour, minutes after (api/promql/rollup_sql.py). llm_rollup_1h has no
-- ServiceName (llmtel_llm_requests_total's service label) and no histogram buckets. Fed from
-- the minute tables on the same insert; no TTL, like them.

CREATE TABLE IF NOT EXISTS {db}.llm_counters_1h
(
    Hour DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    ServiceName LowCardinality(String),
    Model LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CacheReadTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(38, 12))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Hour)
ORDER BY (TenantId, Hour, ServiceName, Model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_counters_1h_mv
TO {db}.llm_counters_1h
AS SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    ServiceName,
    Model,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CacheReadTokens) AS CacheReadTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(CostUsd) AS CostUsd
FROM {db}.llm_rollup_1m
GROUP BY Hour, TenantId, ServiceName, Model;

-- backfill from the minute table, into an empty table only (as in 0008)
INSERT INTO {db}.llm_counters_1h
SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    ServiceName,
    Model,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CacheReadTokens) AS CacheReadTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(CostUsd) AS CostUsd
FROM {db}.llm_rollup_1m
WHERE (SELECT count() FROM {db}.llm_counters_1h) = 0
GROUP BY Hour, TenantId, ServiceName, Model;

CREATE TABLE IF NOT EXISTS {db}.llm_counters_1d
(
    Day DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    ServiceName LowCardinality(String),
    Model LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CacheReadTokens SimpleAggregateFunction(sum, UInt64),
    ReasoningTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(38, 12))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Day)
ORDER BY (TenantId, Day, ServiceName, Model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_counters_1d_mv
TO {db}.llm_counters_1d
AS SELECT
    toStartOfDay(Minute) AS Day,
    TenantId,
    ServiceName,
    Model,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CacheReadTokens) AS CacheReadTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(CostUsd) AS CostUsd
FROM {db}.llm_rollup_1m
GROUP BY Day, TenantId, ServiceName, Model;

-- backfill from the minute table, into an empty table only (as in 0008)
INSERT INTO {db}.llm_counters_1d
SELECT
    toStartOfDay(Minute) AS Day,
    TenantId,
    ServiceName,
    Model,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(InputTokens) AS InputTokens,
    sum(OutputTokens) AS OutputTokens,
    sum(CacheReadTokens) AS CacheReadTokens,
    sum(ReasoningTokens) AS ReasoningTokens,
    sum(CostUsd) AS CostUsd
FROM {db}.llm_rollup_1m
WHERE (SELECT count() FROM {db}.llm_counters_1d) = 0
GROUP BY Day, TenantId, ServiceName, Model;

CREATE TABLE IF NOT EXISTS {db}.llm_latency_1h
(
    Hour DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
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
PARTITION BY toYYYYMM(Hour)
ORDER BY (TenantId, Hour, Model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_latency_1h_mv
TO {db}.llm_latency_1h
AS SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    Model,
    sum(Requests) AS Requests,
    sum(DurationSumS) AS DurationSumS,
    sumForEachMergeState(DurationBuckets) AS DurationBuckets,
    sum(TtftCount) AS TtftCount,
    sum(TtftSumS) AS TtftSumS,
    sumForEachMergeState(TtftBuckets) AS TtftBuckets
FROM {db}.llm_latency_1m
GROUP BY Hour, TenantId, Model;

-- backfill from the minute table, into an empty table only (as in 0008)
INSERT INTO {db}.llm_latency_1h
SELECT
    toStartOfHour(Minute) AS Hour,
    TenantId,
    Model,
    sum(Requests) AS Requests,
    sum(DurationSumS) AS DurationSumS,
    sumForEachMergeState(DurationBuckets) AS DurationBuckets,
    sum(TtftCount) AS TtftCount,
    sum(TtftSumS) AS TtftSumS,
    sumForEachMergeState(TtftBuckets) AS TtftBuckets
FROM {db}.llm_latency_1m
WHERE (SELECT count() FROM {db}.llm_latency_1h) = 0
GROUP BY Hour, TenantId, Model;

CREATE TABLE IF NOT EXISTS {db}.llm_latency_1d
(
    Day DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
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
PARTITION BY toYYYYMM(Day)
ORDER BY (TenantId, Day, Model);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_latency_1d_mv
TO {db}.llm_latency_1d
AS SELECT
    toStartOfDay(Minute) AS Day,
    TenantId,
    Model,
    sum(Requests) AS Requests,
    sum(DurationSumS) AS DurationSumS,
    sumForEachMergeState(DurationBuckets) AS DurationBuckets,
    sum(TtftCount) AS TtftCount,
    sum(TtftSumS) AS TtftSumS,
    sumForEachMergeState(TtftBuckets) AS TtftBuckets
FROM {db}.llm_latency_1m
GROUP BY Day, TenantId, Model;

-- backfill from the minute table, into an empty table only (as in 0008)
INSERT INTO {db}.llm_latency_1d
SELECT
    toStartOfDay(Minute) AS Day,
    TenantId,
    Model,
    sum(Requests) AS Requests,
    sum(DurationSumS) AS DurationSumS,
    sumForEachMergeState(DurationBuckets) AS DurationBuckets,
    sum(TtftCount) AS TtftCount,
    sum(TtftSumS) AS TtftSumS,
    sumForEachMergeState(TtftBuckets) AS TtftBuckets
FROM {db}.llm_latency_1m
WHERE (SELECT count() FROM {db}.llm_latency_1d) = 0
GROUP BY Day, TenantId, Model;
