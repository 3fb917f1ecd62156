-- Alerting (schema/alerts.py explains the design): rules and destinations per tenant, the
-- notification ledger that makes delivery exactly-once per (alert, destination), and every
-- delivery attempt.
--
-- Rules and destinations are never updated in place: a change is a new row with a higher
-- Version, a deletion a row with Deleted = 1; readers use FINAL. Destination URLs and
-- secrets are stored as given (the notifier must sign with the secret) and never returned
-- by the API.
CREATE TABLE IF NOT EXISTS {db}.alert_rules
(
    TenantId LowCardinality(String),
    RuleId String,
    Spec String,
    CreatedAt DateTime64(3, 'UTC'),
    Deleted UInt8 DEFAULT 0,
    Version UInt64
)
ENGINE = ReplacingMergeTree(Version)
ORDER BY (TenantId, RuleId);

CREATE TABLE IF NOT EXISTS {db}.alert_destinations
(
    TenantId LowCardinality(String),
    DestinationId String,
    Name String,
    Kind LowCardinality(String),
    Url String,
    Secret String,
    IsDefault UInt8,
    CreatedAt DateTime64(3, 'UTC'),
    Deleted UInt8 DEFAULT 0,
    Version UInt64
)
ENGINE = ReplacingMergeTree(Version)
ORDER BY (TenantId, DestinationId);

-- One row per (alert, destination): claimed (Status 'sending') BEFORE the first request is
-- sent, then 'delivered', 'failed' or 'superseded'. A claim is what stops a redelivered
-- window or anomaly from notifying twice; Payload is the alert, so an orphaned claim (the
-- process died while sending) can be sent again by any notifier.
CREATE TABLE IF NOT EXISTS {db}.alert_notifications
(
    TenantId LowCardinality(String),
    AlertId String,
    DestinationId String,
    RuleId String,
    Kind LowCardinality(String),
    WindowStart DateTime64(9, 'UTC'),
    Payload String,
    Status LowCardinality(String),
    ClaimedAt DateTime64(3, 'UTC'),
    Version UInt64
)
ENGINE = ReplacingMergeTree(Version)
PARTITION BY toYYYYMM(WindowStart)
ORDER BY (TenantId, AlertId, DestinationId);

-- Every delivery attempt, successful or not.
CREATE TABLE IF NOT EXISTS {db}.alert_deliveries
(
    TenantId LowCardinality(String),
    AlertId String,
    RuleId String,
    DestinationId String,
    Kind LowCardinality(String),
    WindowStart DateTime64(9, 'UTC'),
    WindowEnd DateTime64(9, 'UTC'),
    Attempt UInt16,
    Status LowCardinality(String),
    HttpStatus UInt16,
    LatencyMs Float64,
    Error String,
    AttemptedAt DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(AttemptedAt)
ORDER BY (TenantId, AttemptedAt, AlertId)
TTL toDateTime(AttemptedAt) + toIntervalDay(90);
