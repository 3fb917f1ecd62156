"""Spans: one trace by id (through the trace-id -> time-range table), and filtered pages."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from api.models import LlmFields, Span, SpanEvent, SpanLink, SpanPage, Trace
from api.params import NS_PER_S, decode_cursor, encode_cursor, format_cost, format_ns
from schema.clickhouse import Database

Status = Literal["ok", "error", "unset"]
STATUS_CODES: dict[str, str] = {"ok": "Ok", "error": "Error", "unset": "Unset"}

# the model a span is counted under, as in llm_rollup_1m
MODEL_EXPR = "if(LlmResponseModel != '', LlmResponseModel, LlmRequestModel)"

_SPAN_SELECT = """
SELECT
    toUnixTimestamp64Nano(Timestamp) AS ts, TraceId, SpanId, ParentSpanId, TraceState,
    SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion,
    SpanAttributes, Duration, StatusCode, StatusMessage,
    arrayMap(t -> toUnixTimestamp64Nano(t), Events.Timestamp), Events.Name, Events.Attributes,
    Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes,
    TenantId, IsLlm, LlmProvider, LlmOperation, LlmRequestModel, LlmResponseModel,
    LlmInputTokens, LlmOutputTokens, LlmCacheReadTokens, LlmReasoningTokens,
    LlmCostUsd, LlmCostSource, LlmTimeToFirstTokenMs
FROM {db}.otel_traces
"""


class TraceNotFound(LookupError):
    """No such trace in the caller's scope (a foreign tenant's trace looks the same)."""

    def __init__(self, trace_id: str) -> None:
        super().__init__(f"trace {trace_id} not found")


def span_from_row(row: tuple[Any, ...]) -> Span:
    (ts, trace_id, span_id, parent, state, name, kind, service, resource, scope_name,
     scope_version, attributes, duration, status_code, status_message, event_times,
     event_names, event_attrs, link_traces, link_spans, link_states, link_attrs, tenant,
     is_llm, provider, operation, request_model, response_model, input_tokens, output_tokens,
     cache_read, reasoning, cost, cost_source, ttft) = row  # fmt: skip
    llm = None
    if is_llm:
        llm = LlmFields(
            provider=provider,
            operation=operation,
            request_model=request_model,
            response_model=response_model,
            model=response_model or request_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read,
            reasoning_tokens=reasoning,
            cost_usd=None if cost is None else format_cost(Decimal(cost)),
            cost_source=cost_source,
            time_to_first_token_ms=ttft,
        )
    return Span(
        tenant=tenant,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        trace_state=state,
        name=name,
        kind=kind,
        service=service,
        start_time=format_ns(ts),
        start_time_unix_nano=ts,
        duration_ns=duration,
        duration_ms=duration / 1_000_000,
        status_code=status_code,
        status_message=status_message,
        scope_name=scope_name,
        scope_version=scope_version,
        resource_attributes=dict(resource),
        attributes=dict(attributes),
        events=[
            SpanEvent(time=format_ns(t), time_unix_nano=t, name=n, attributes=dict(a))
            for t, n, a in zip(event_times, event_names, event_attrs, strict=True)
        ],
        links=[
            SpanLink(trace_id=t, span_id=s, trace_state=st, attributes=dict(a))
            for t, s, st, a in zip(link_traces, link_spans, link_states, link_attrs, strict=True)
        ],
        llm=llm,
    )


def get_trace(db: Database, trace_id: str, tenant: str | None) -> Trace:
    """Every span of `trace_id` visible in `tenant` (None: any tenant), or TraceNotFound.

    First the time range and tenants from otel_traces_trace_id_ts, then otel_traces
    restricted to both: the range picks the day partitions, and the tenants (the sort key's
    first column, also for the admin) let the primary key narrow the granules whose
    TraceId bloom filters are read to the trace's tenants' share of the day.
    """
    scope = "" if tenant is None else " AND TenantId = {tenant:String}"
    params: dict[str, Any] = {"trace_id": trace_id}
    if tenant is not None:
        params["tenant"] = tenant
    found = db.query(
        "SELECT toUnixTimestamp(min(Start)), toUnixTimestamp(max(End)), count(), "
        "groupUniqArray(TenantId) "
        "FROM {db}.otel_traces_trace_id_ts "
        "WHERE TraceId = {trace_id:String}" + scope,
        params,
    )
    if not found or not found[0][2]:
        raise TraceNotFound(trace_id)
    start_s, end_s = int(found[0][0]), int(found[0][1])
    params["lo"] = start_s * NS_PER_S
    params["hi"] = (end_s + 1) * NS_PER_S  # the range is in whole seconds
    params["tenants"] = list(found[0][3])
    rows = db.query(
        _SPAN_SELECT + "WHERE TraceId = {trace_id:String}"
        " AND Timestamp >= fromUnixTimestamp64Nano({lo:Int64})"
        " AND Timestamp < fromUnixTimestamp64Nano({hi:Int64})"
        " AND TenantId IN {tenants:Array(String)}" + scope + " ORDER BY Timestamp, SpanId",
        params,
    )
    if not rows:
        raise TraceNotFound(trace_id)  # the range outlived the spans (TTL)
    return Trace(trace_id=trace_id, spans=[span_from_row(row) for row in rows])


@dataclass(frozen=True, slots=True)
class SpanFilter:
    tenant: str | None  # None: all tenants (admin)
    service: str | None = None
    model: str | None = None
    status: Status | None = None
    start_ns: int | None = None  # inclusive
    end_ns: int | None = None  # exclusive
    min_cost: Decimal | None = None
    min_duration_ms: float | None = None
    limit: int = 100
    cursor: str | None = None


def list_spans(db: Database, f: SpanFilter) -> SpanPage:
    """A page of spans, newest first (Timestamp DESC, then SpanId, TraceId ascending).

    The cursor is the last row's sort key, so pages neither repeat nor skip rows, also
    when many spans share a timestamp.
    """
    where: list[str] = []
    params: dict[str, Any] = {"limit": f.limit + 1}
    if f.tenant is not None:
        where.append("TenantId = {tenant:String}")
        params["tenant"] = f.tenant
    if f.service is not None:
        where.append("ServiceName = {service:String}")
        params["service"] = f.service
    if f.model is not None:
        where.append(f"IsLlm AND {MODEL_EXPR} = {{model:String}}")
        params["model"] = f.model
    if f.status is not None:
        where.append("StatusCode = {status:String}")
        params["status"] = STATUS_CODES[f.status]
    if f.start_ns is not None:
        where.append("Timestamp >= fromUnixTimestamp64Nano({start:Int64})")
        params["start"] = f.start_ns
    if f.end_ns is not None:
        where.append("Timestamp < fromUnixTimestamp64Nano({end:Int64})")
        params["end"] = f.end_ns
    if f.min_cost is not None:
        where.append("LlmCostUsd >= {min_cost:Decimal(38, 12)}")
        params["min_cost"] = f.min_cost
    if f.min_duration_ms is not None:
        where.append("Duration >= {min_duration:UInt64}")
        params["min_duration"] = int(f.min_duration_ms * 1_000_000)
    if f.cursor is not None:
        ts, span_id, trace_id = decode_cursor(f.cursor)
        where.append(
            "(Timestamp < fromUnixTimestamp64Nano({c_ts:Int64}) OR "
            "(Timestamp = fromUnixTimestamp64Nano({c_ts:Int64}) AND "
            "(SpanId, TraceId) > ({c_span:String}, {c_trace:String})))"
        )
        params.update(c_ts=ts, c_span=span_id, c_trace=trace_id)
    sql = _SPAN_SELECT
    if where:
        sql += "WHERE " + " AND ".join(where)
    sql += " ORDER BY Timestamp DESC, SpanId ASC, TraceId ASC LIMIT {limit:UInt32}"
    rows = db.query(sql, params)
    spans = [span_from_row(row) for row in rows[: f.limit]]
    next_cursor = None
    if len(rows) > f.limit:
        last = spans[-1]
        next_cursor = encode_cursor(last.start_time_unix_nano, last.span_id, last.trace_id)
    return SpanPage(spans=spans, next_cursor=next_cursor)
