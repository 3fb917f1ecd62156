"""Persisting closed windows and anomalies into `tenant_windows` / `anomalies`.

Shared by the embedded window task and the Kafka sink. Both tables are
ReplacingMergeTree on the record's natural key, so a record written twice (a redelivery)
reads back once with FINAL.
"""

from __future__ import annotations

from collections.abc import Sequence

from schema.clickhouse import Database
from schema.windows import AnomalyRecord, WindowRecord

WINDOW_COLUMNS = (
    "TenantId", "Scope", "ScopeKey", "WindowStart", "WindowEnd", "Requests", "Errors",
    "ErrorRate", "InputTokens", "OutputTokens", "CostUsd", "Unpriced", "LatencyP95Ns",
)  # fmt: skip
ANOMALY_COLUMNS = (
    "TenantId", "Scope", "ScopeKey", "Metric", "WindowStart", "WindowEnd", "Value",
    "RollingAverage", "Factor", "History",
)  # fmt: skip


def insert_windows(db: Database, records: Sequence[WindowRecord]) -> None:
    if not records:
        return
    rows = [
        (
            r.tenant,
            r.scope.value,
            r.key,
            r.window_start_ns,
            r.window_end_ns,
            r.requests,
            r.errors,
            r.error_rate,
            r.input_tokens,
            r.output_tokens,
            r.cost_usd,
            r.unpriced,
            r.latency_p95_ns,
        )  # fmt: skip
        for r in records
    ]
    db.insert_columns("tenant_windows", [list(c) for c in zip(*rows, strict=True)], WINDOW_COLUMNS)


def insert_anomalies(db: Database, records: Sequence[AnomalyRecord]) -> None:
    if not records:
        return
    rows = [
        (
            r.tenant,
            r.scope.value,
            r.key,
            r.metric.value,
            r.window_start_ns,
            r.window_end_ns,
            r.value,
            r.average,
            r.factor,
            r.history,
        )  # fmt: skip
        for r in records
    ]
    db.insert_columns("anomalies", [list(c) for c in zip(*rows, strict=True)], ANOMALY_COLUMNS)
