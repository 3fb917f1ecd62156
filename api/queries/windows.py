"""Closed usage windows (`tenant_windows`) and the anomalies found in them (`anomalies`).

Both tables are ReplacingMergeTree on the record's natural key and are read with FINAL, so
a window or anomaly delivered twice is returned once (its latest version). Money and
anomaly values are exact decimal strings, never floats.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from api.models import DECIMAL_STRING
from api.params import NS_PER_S, InvalidParameter, format_cost, format_ns, parse_time
from schema.clickhouse import Database
from schema.windows import Metric, Scope, decimal_text

DEFAULT_RANGE_NS = 24 * 3600 * NS_PER_S
TIME_FIELD = "RFC 3339, nanoseconds, UTC."
VALUE_STRING = (
    "Exact decimal string: USD with 12 places for cost_usd, a plain number otherwise "
    '(e.g. "0.002500000000", "1500", "0.25").'
)

# -- response bodies ----------------------------------------------------------------------


class Window(BaseModel):
    tenant: str
    scope: Scope
    key: str = Field(description='The model for scope "model"; "" for scope "tenant".')
    window_start: str = Field(description=f"Inclusive. {TIME_FIELD}")
    window_start_unix_nano: int
    window_end: str = Field(description=f"Exclusive. {TIME_FIELD}")
    window_end_unix_nano: int
    requests: int
    errors: int
    error_rate: float = Field(description="errors / requests; 0 without requests.")
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description=f"{DECIMAL_STRING} Sum over priced requests.")
    unpriced_requests: int = Field(description="LLM requests whose model has no known price.")
    latency_p95_ms: float | None = Field(description="null when the window had no requests.")
    value: str | None = Field(
        description=f"The requested `metric` in this window. {VALUE_STRING} "
        "null when no metric was asked for."
    )


class WindowSeries(BaseModel):
    start: str = Field(description=f"Windows starting at or after this. {TIME_FIELD}")
    end: str = Field(description=f"... and before this. {TIME_FIELD}")
    tenant: str | None = Field(description="The tenant reported on; null: all tenants.")
    scope: Scope
    key: str | None = Field(description="The model asked for; null: every key.")
    metric: Metric | None
    windows: list[Window] = Field(description="By tenant, key, then window start.")
    truncated: bool = Field(description="More windows matched than `limit`; narrow the range.")


class Anomaly(BaseModel):
    tenant: str
    scope: Scope
    key: str = Field(description='The model for scope "model"; "" for scope "tenant".')
    metric: Metric
    window_start: str = Field(description=f"Inclusive. {TIME_FIELD}")
    window_start_unix_nano: int
    window_end: str = Field(description=f"Exclusive. {TIME_FIELD}")
    window_end_unix_nano: int
    value: str = Field(description=f"The metric in this window. {VALUE_STRING}")
    average: str = Field(description=f"Its rolling average over `history` windows. {VALUE_STRING}")
    factor: float = Field(description="The rule fired because value > factor x average.")
    history: int = Field(description="How many earlier windows the average is over.")
    detected_at: str = Field(description="When the anomaly was stored (RFC 3339, UTC).")


class AnomalyList(BaseModel):
    start: str = Field(description=f"Anomalies of windows starting at or after this. {TIME_FIELD}")
    end: str = Field(description=f"... and before this. {TIME_FIELD}")
    tenant: str | None = Field(description="The tenant reported on; null: all tenants.")
    metric: Metric | None
    anomalies: list[Anomaly] = Field(description="Newest window first.")
    truncated: bool = Field(description="More anomalies matched than `limit`.")


# -- parameters ---------------------------------------------------------------------------


def time_range(start: str | None, end: str | None) -> tuple[int, int]:
    """[start, end) in ns from query values; default: the 24 hours before `end` (now)."""
    end_ns = time.time_ns() if end is None else parse_time(end, "end")
    start_ns = end_ns - DEFAULT_RANGE_NS if start is None else parse_time(start, "start")
    if start_ns >= end_ns:
        raise InvalidParameter("start must be before end")
    return start_ns, end_ns


def metric_text(value: Decimal, metric: Metric) -> str:
    """A metric's value as an exact string: cost with all 12 places, others plain."""
    if metric is Metric.COST_USD:
        return format_cost(value)
    if value == value.to_integral_value():
        return str(value.to_integral_value())
    return decimal_text(value.normalize())


def _range_filter(
    tenant: str | None, start_ns: int, end_ns: int
) -> tuple[list[str], dict[str, Any]]:
    where = [
        "WindowStart >= fromUnixTimestamp64Nano({start:Int64})",
        "WindowStart < fromUnixTimestamp64Nano({end:Int64})",
    ]
    params: dict[str, Any] = {"start": start_ns, "end": end_ns}
    if tenant is not None:
        where.append("TenantId = {tenant:String}")
        params["tenant"] = tenant
    return where, params


# -- windows ------------------------------------------------------------------------------

_WINDOW_SELECT = """
SELECT TenantId, Scope, ScopeKey,
    toUnixTimestamp64Nano(WindowStart), toUnixTimestamp64Nano(WindowEnd),
    Requests, Errors, ErrorRate, InputTokens, OutputTokens, CostUsd, Unpriced, LatencyP95Ns
FROM {db}.tenant_windows FINAL
"""


def _window(row: tuple[Any, ...], metric: Metric | None) -> Window:
    (tenant, scope, key, start_ns, end_ns, requests, errors, error_rate, input_tokens,
     output_tokens, cost, unpriced, p95_ns) = row  # fmt: skip
    cost = Decimal(cost)
    figures: dict[Metric, Decimal] = {
        Metric.COST_USD: cost,
        Metric.INPUT_TOKENS: Decimal(input_tokens),
        Metric.OUTPUT_TOKENS: Decimal(output_tokens),
        Metric.REQUESTS: Decimal(requests),
        Metric.ERRORS: Decimal(errors),
        Metric.ERROR_RATE: Decimal(repr(float(error_rate))),
        Metric.LATENCY_P95_NS: Decimal(p95_ns),
    }
    return Window(
        tenant=tenant,
        scope=Scope(scope),
        key=key,
        window_start=format_ns(start_ns),
        window_start_unix_nano=start_ns,
        window_end=format_ns(end_ns),
        window_end_unix_nano=end_ns,
        requests=requests,
        errors=errors,
        error_rate=error_rate,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=format_cost(cost),
        unpriced_requests=unpriced,
        latency_p95_ms=p95_ns / 1_000_000 if requests else None,
        value=None if metric is None else metric_text(figures[metric], metric),
    )


def window_series(
    db: Database,
    tenant: str | None,
    start_ns: int,
    end_ns: int,
    *,
    scope: Scope,
    key: str | None,
    metric: Metric | None,
    limit: int,
) -> WindowSeries:
    """Closed windows of `scope` starting in [start_ns, end_ns) for `tenant` (None: all)."""
    if key is not None and scope is Scope.TENANT:
        raise InvalidParameter("key names a model or a service: use it with scope=model|service")
    where, params = _range_filter(tenant, start_ns, end_ns)
    where.append("Scope = {scope:String}")
    params["scope"] = scope.value
    if key is not None:
        where.append("ScopeKey = {key:String}")
        params["key"] = key
    params["limit"] = limit + 1
    rows = db.query(
        f"{_WINDOW_SELECT} WHERE {' AND '.join(where)} "
        "ORDER BY TenantId, ScopeKey, WindowStart LIMIT {limit:UInt32}",
        params,
    )
    return WindowSeries(
        start=format_ns(start_ns),
        end=format_ns(end_ns),
        tenant=tenant,
        scope=scope,
        key=key,
        metric=metric,
        windows=[_window(row, metric) for row in rows[:limit]],
        truncated=len(rows) > limit,
    )


# -- anomalies ----------------------------------------------------------------------------

_ANOMALY_SELECT = """
SELECT TenantId, Scope, ScopeKey, Metric,
    toUnixTimestamp64Nano(WindowStart), toUnixTimestamp64Nano(WindowEnd),
    Value, RollingAverage, Factor, History, toUnixTimestamp64Milli(DetectedAt)
FROM {db}.anomalies FINAL
"""


def _anomaly(row: tuple[Any, ...]) -> Anomaly:
    (tenant, scope, key, metric_name, start_ns, end_ns, value, average, factor, history,
     detected_ms) = row  # fmt: skip
    metric = Metric(metric_name)
    return Anomaly(
        tenant=tenant,
        scope=Scope(scope),
        key=key,
        metric=metric,
        window_start=format_ns(start_ns),
        window_start_unix_nano=start_ns,
        window_end=format_ns(end_ns),
        window_end_unix_nano=end_ns,
        value=metric_text(Decimal(value), metric),
        average=metric_text(Decimal(average), metric),
        factor=factor,
        history=history,
        detected_at=format_ns(detected_ms * 1_000_000),
    )


def list_anomalies(
    db: Database,
    tenant: str | None,
    start_ns: int,
    end_ns: int,
    *,
    metric: Metric | None,
    limit: int,
) -> AnomalyList:
    """Anomalies of windows starting in [start_ns, end_ns) for `tenant` (None: all)."""
    where, params = _range_filter(tenant, start_ns, end_ns)
    if metric is not None:
        where.append("Metric = {metric:String}")
        params["metric"] = metric.value
    params["limit"] = limit + 1
    rows = db.query(
        f"{_ANOMALY_SELECT} WHERE {' AND '.join(where)} "
        "ORDER BY WindowStart DESC, TenantId, Metric, Scope, ScopeKey LIMIT {limit:UInt32}",
        params,
    )
    return AnomalyList(
        start=format_ns(start_ns),
        end=format_ns(end_ns),
        tenant=tenant,
        metric=metric,
        anomalies=[_anomaly(row) for row in rows[:limit]],
        truncated=len(rows) > limit,
    )
