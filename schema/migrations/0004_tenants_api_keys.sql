-- Tenants and API keys. Rows are never updated in place: a change is a new row with a higher
-- version, and readers use FINAL. Only SHA-256 hashes of keys are stored.
CREATE TABLE IF NOT EXISTS {db}.tenants
(
    tenant_id String,
    name String,
    settings String,
    created_at DateTime64(3, 'UTC'),
    deleted UInt8 DEFAULT 0,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY tenant_id;

CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_hash String,
    key_id String,
    tenant_id String,
    role LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    revoked UInt8 DEFAULT 0,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_hash;
