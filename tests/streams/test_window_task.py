"""Embedded windows: stored batches -> closed windows and anomalies in ClickHouse."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from schema.clickhouse import Database
from schema.spans import SPAN_COLUMNS, SpanBatch
from schema.window_store import insert_anomalies, insert_windows
from streams.window_task import WindowTask
from streams.windows import WindowConfig

S = 1_000_000_000
DEFAULTS: dict[str, Any] = dict.fromkeys(SPAN_COLUMNS, "") | {
    "Duration": 100_000_000,
    "IsLlm": True,
    "StatusCode": "Ok",
    "LlmInputTokens": 10,
    "LlmOutputTokens": 5,
    "LlmCacheReadTokens": 0,
    "LlmReasoningTokens": 0,
    "LlmCostUsd": None,
    "LlmTimeToFirstTokenMs": None,
}


def spans(tenant: str, end_s: float, count: int, cost: str) -> SpanBatch:
    batch = SpanBatch()
    for _ in range(count):
        row = DEFAULTS | {
            "TenantId": tenant,
            "Timestamp": int(end_s * S) - DEFAULTS["Duration"],
            "LlmResponseModel": "gpt-4o",
            "LlmCostUsd": Decimal(cost),
        }
        for column, name in zip(batch.columns, SPAN_COLUMNS, strict=True):
            column.append(row[name])
    return batch


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def make_task(db: Database, clock: Clock, state: Path | None = None) -> WindowTask:
    config = WindowConfig(window_s=1, lateness_s=0, history=10, min_history=3)
    return WindowTask(
        config,
        lambda r: insert_windows(db, r),
        lambda r: insert_anomalies(db, r),
        state_file=state,
        clock=clock,
    )


@pytest.mark.clickhouse
def test_a_5x_cost_spike_is_one_anomaly_for_that_tenant_only(db: Database) -> None:
    clock = Clock()
    task = make_task(db, clock)
    start = clock.now // S
    for second in range(8):
        t = start + second + 0.5
        cost = "0.50" if second == 7 else "0.10"  # 5x in the last window
        task.add(spans("spiky", t, 10, cost))
        task.add(spans("steady", t, 10, "0.10"))
        clock.now = int((start + second + 1) * S)
        task.tick()
    found = db.query(
        "SELECT TenantId, Metric, Scope, Value, RollingAverage FROM {db}.anomalies FINAL"
        " WHERE Metric = 'cost_usd' ORDER BY Scope"
    )
    assert [(r[0], r[1], r[2]) for r in found] == [
        ("spiky", "cost_usd", "model"),
        ("spiky", "cost_usd", "service"),
        ("spiky", "cost_usd", "tenant"),
    ]
    assert found[2][3] == Decimal("5") and found[2][4] == Decimal("1")
    stored = db.query(
        "SELECT sum(CostUsd), sum(Requests) FROM {db}.tenant_windows FINAL"
        " WHERE TenantId = 'steady' AND Scope = 'tenant'"
    )
    assert stored == [(Decimal("8"), 80)]


@pytest.mark.clickhouse
def test_history_survives_a_restart_through_the_state_file(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    state = tmp_path / "windows-state.json"
    task = make_task(db, clock, state)
    start = clock.now // S
    for second in range(5):
        task.add(spans("t", start + second + 0.5, 10, "0.10"))
        clock.now = int((start + second + 1) * S)
        task.tick()
    task.save()
    restarted = make_task(db, clock, state)
    restarted.add(spans("t", start + 5.5, 10, "0.50"))
    clock.now = int((start + 6) * S)
    anomalies = restarted.tick()
    assert {(a.tenant, a.metric.value) for a in anomalies} == {("t", "cost_usd")}


def test_a_failing_store_keeps_closed_windows_for_the_next_tick() -> None:
    clock = Clock()
    stored: list[Any] = []
    fail = [True]

    def store(records: Any) -> None:
        if fail[0] and records:
            raise ConnectionError("clickhouse down")
        stored.extend(records)

    task = WindowTask(WindowConfig(window_s=1, lateness_s=0), store, lambda r: None, clock=clock)
    start = clock.now // S
    task.add(spans("t", start + 0.5, 3, "0.10"))
    clock.now = int((start + 1) * S)
    with pytest.raises(ConnectionError):
        task.tick()
    fail[0] = False
    task.tick()
    assert sum(r.requests for r in stored if r.scope.value == "tenant") == 3
