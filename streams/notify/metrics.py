"""Notifier health on /metrics (prometheus-client default registry)."""

from prometheus_client import Counter, Gauge, Histogram

ALERTS = Counter(
    "llmtel_alerts_total", "Alerts claimed for delivery (one per alert and destination).", ["kind"]
)
SUPPRESSED = Counter(
    "llmtel_alerts_suppressed_total",
    "Alerts not sent: duplicate (already in the ledger), cooldown, stale (window too old), "
    "no_destination (the tenant has none), superseded (a higher budget level was sent).",
    ["reason"],
)
DELIVERIES = Counter(
    "llmtel_alert_deliveries_total",
    "Finished deliveries by outcome (delivered, failed).",
    ["outcome"],
)
ATTEMPTS = Counter(
    "llmtel_alert_delivery_attempts_total",
    "HTTP attempts by status (delivered, retry, failed).",
    ["status"],
)
RETRIES = Counter("llmtel_alert_retries_total", "Delivery attempts that were retried.")
QUEUE_DEPTH = Gauge("llmtel_alert_queue_depth", "Claimed deliveries waiting for a worker.")
ATTEMPT_SECONDS = Histogram(
    "llmtel_alert_delivery_duration_seconds",
    "Time of one delivery attempt (request to answer).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INVALID_RECORDS = Counter(
    "llmtel_notifier_invalid_records_total",
    "Window or anomaly messages the notifier could not decode (skipped).",
)
