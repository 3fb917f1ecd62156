-- What the dashboard overview reads on every refresh, at the grain it needs.
--
-- llm_tenant_series_1m: requests, errors and cost per tenant and minute, the overview's
-- series. llm_rollup_1m has a row per service, model and provider too: at 100M spans a
-- day's series read 345k rows from it for the admin (23 ms) and 14k from here (14 ms).
-- Fed from llm_rollup_1m on the same insert, as llm_model_counters_1m (0013).
--
-- llm_latency_sketch_all_1h: the latency and time-to-first-token sketches of every tenant
-- merged per hour, the admin overview's quantiles: one state per hour instead of one per
-- tenant and hour (a day for 10 tenants: 33 ms, here 9 ms). Fed from
-- llm_latency_sketch_1m on the same insert.
--
-- No TTL, like the tables they are fed from.

CREATE TABLE IF NOT EXISTS {db}.llm_tenant_series_1m
(
    Minute DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    TenantId LowCardinality(String),
    Requests SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Decimal(38, 12))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (TenantId, Minute)
SETTINGS index_granularity = 1024;

-- backfill first, into an empty table only (as in 0008), then the view
INSERT INTO {db}.llm_tenant_series_1m
SELECT Minute, TenantId, sum(Requests), sum(Errors), sum(CostUsd)
FROM {db}.llm_rollup_1m
WHERE (SELECT count() FROM {db}.llm_tenant_series_1m) = 0
GROUP BY Minute, TenantId;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_tenant_series_1m_mv
TO {db}.llm_tenant_series_1m
AS SELECT
    Minute,
    TenantId,
    sum(Requests) AS Requests,
    sum(Errors) AS Errors,
    sum(CostUsd) AS CostUsd
FROM {db}.llm_rollup_1m
GROUP BY Minute, TenantId;

CREATE TABLE IF NOT EXISTS {db}.llm_latency_sketch_all_1h
(
    Hour DateTime('UTC') CODEC(Delta(4), ZSTD(1)),
    DurationNs AggregateFunction(quantileDD(0.01), UInt64),
    TimeToFirstTokenMs AggregateFunction(quantileDD(0.01), Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Hour)
ORDER BY Hour
SETTINGS index_granularity = 128;

INSERT INTO {db}.llm_latency_sketch_all_1h
SELECT
    Hour,
    quantileDDMergeState(0.01)(DurationNs),
    quantileDDMergeState(0.01)(TimeToFirstTokenMs)
FROM {db}.llm_latency_sketch_1h
WHERE (SELECT count() FROM {db}.llm_latency_sketch_all_1h) = 0
GROUP BY Hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.llm_latency_sketch_all_1h_mv
TO {db}.llm_latency_sketch_all_1h
AS SELECT
    toStartOfHour(Minute) AS Hour,
    quantileDDMergeState(0.01)(DurationNs) AS DurationNs,
    quantileDDMergeState(0.01)(TimeToFirstTokenMs) AS TimeToFirstTokenMs
FROM {db}.llm_latency_sketch_1m
GROUP BY Hour;
