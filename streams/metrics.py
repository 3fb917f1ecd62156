"""Pipeline health metrics of the processing side (prometheus-client default registry)."""

from prometheus_client import Counter, Gauge, Histogram

BUS_SPANS = Gauge("llmtel_bus_spans", "Spans accepted and not yet stored (bus depth).")
BUS_REFUSALS = Counter(
    "llmtel_bus_refusals_total", "Requests refused with 503/UNAVAILABLE because the bus was full."
)
INSERT_ROWS = Counter("llmtel_insert_rows_total", "Span rows inserted into ClickHouse.")
INSERT_SECONDS = Histogram(
    "llmtel_insert_duration_seconds",
    "Time of one ClickHouse batch insert.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INSERT_FAILURES = Counter(
    "llmtel_insert_failures_total", "Failed ClickHouse insert attempts (each is retried)."
)
UNPRICED_SPANS = Counter(
    "llmtel_spans_unpriced_total", "LLM spans stored with cost NULL because the model is unknown."
)
DEAD_LETTERS = Counter(
    "llmtel_dead_letters_total", "Accepted requests that could not be processed and were set aside."
)
PROCESS_SECONDS = Histogram(
    "llmtel_process_duration_seconds",
    "Time to normalise one batch of requests into rows.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LATE_SPANS = Counter(
    "llmtel_late_spans_total",
    "LLM spans that arrived after their window closed (stored, but not in any window).",
)
WINDOWS_EMITTED = Counter("llmtel_windows_emitted_total", "Closed usage windows emitted.")
ANOMALIES_EMITTED = Counter("llmtel_anomalies_emitted_total", "Anomalies detected.")
