-- Closed usage windows and anomalies, as the stream processors emit them
-- (llmtel.windows.v1 / llmtel.anomalies.v1, or the embedded window task).
-- ReplacingMergeTree on the natural key: a window or anomaly delivered twice is stored once.
CREATE TABLE IF NOT EXISTS {db}.tenant_windows
(
    TenantId LowCardinality(String),
    Scope LowCardinality(String),
    ScopeKey LowCardinality(String),
    WindowStart DateTime64(9, 'UTC'),
    WindowEnd DateTime64(9, 'UTC'),
    Requests UInt64,
    Errors UInt64,
    ErrorRate Float64,
    InputTokens UInt64,
    OutputTokens UInt64,
    CostUsd Decimal(38, 12),
    Unpriced UInt64,
    LatencyP95Ns UInt64,
    InsertedAt DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(InsertedAt)
PARTITION BY toYYYYMM(WindowStart)
ORDER BY (TenantId, Scope, ScopeKey, WindowStart);

CREATE TABLE IF NOT EXISTS {db}.anomalies
(
    TenantId LowCardinality(String),
    Scope LowCardinality(String),
    ScopeKey LowCardinality(String),
    Metric LowCardinality(String),
    WindowStart DateTime64(9, 'UTC'),
    WindowEnd DateTime64(9, 'UTC'),
    Value Decimal(38, 12),
    RollingAverage Decimal(38, 12),
    Factor Float64,
    History UInt32,
    DetectedAt DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(DetectedAt)
PARTITION BY toYYYYMM(WindowStart)
ORDER BY (TenantId, Metric, Scope, ScopeKey, WindowStart);
