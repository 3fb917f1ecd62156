-- Exactly-once storage for the Kafka sink (streams/sink.py explains the design).
--
-- 1. Insert deduplication on the span table and on the targets of its materialized views:
--    a block inserted again under the same `insert_deduplication_token` is dropped, and with
--    `deduplicate_blocks_in_dependent_materialized_views = 1` the views' blocks (whose tokens
--    derive from the source block's) are dropped too, so a redelivered batch is counted
--    neither in otel_traces nor in llm_rollup_1m / otel_traces_trace_id_ts. The window is a
--    count of recent blocks per table; only inserts consume it, and a redelivered batch is
--    re-inserted within seconds of the restart or rebalance that redelivers it.
--    Side effect: an insert WITHOUT a token is deduplicated by its content, so inserting a
--    byte-identical block twice stores it once (identical spans, e.g. an OTLP client resend).
ALTER TABLE {db}.otel_traces MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.llm_rollup_1m MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.otel_traces_trace_id_ts MODIFY SETTING non_replicated_deduplication_window = 10000;

-- 2. The exact extent of every batch the sink stores, written BEFORE the batch is inserted.
--    One row per (topic, partition) the batch takes messages from, so that "which batch
--    starts at this partition's committed offset?" is a primary-key lookup; every row
--    carries the whole batch (`Ranges`, JSON: [[topic, partition, start, end, first_offset,
--    first_timestamp_ms], ...]) so that the batch can be rebuilt from any of its partitions.
--    Start/end are consumer positions (the end is what is committed after the batch);
--    first_offset/first_timestamp_ms identify the batch's first record, which tells a live
--    row from a stale one (a topic deleted and created again under the same name).
--    BatchId is the insert_deduplication_token the batch was inserted with.
CREATE TABLE IF NOT EXISTS {db}.sink_batches
(
    GroupId LowCardinality(String),
    Topic LowCardinality(String),
    Partition UInt32,
    StartOffset UInt64,
    EndOffset UInt64,
    BatchId String,
    Ranges String,
    RecordedAt DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
PARTITION BY toDate(RecordedAt)
ORDER BY (GroupId, Topic, Partition, StartOffset)
TTL toDateTime(RecordedAt) + toIntervalDay(7);
