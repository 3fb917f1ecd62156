"""Request and response bodies of the query and admin API (what `/docs` shows)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from schema.models import Role, TenantSettings

DECIMAL_STRING = 'Exact decimal number as a string (USD), e.g. "0.002500000000".'


# -- health -------------------------------------------------------------------------------


class Health(BaseModel):
    status: str = Field(examples=["ok"])


# -- tenants and keys ---------------------------------------------------------------------


class TenantCreate(BaseModel):
    name: str = Field(
        description="Tenant name and id: 1-63 of a-z, 0-9, '_' or '-', starting with a "
        "letter or digit.",
        examples=["acme"],
    )
    settings: TenantSettings | None = None


class TenantOut(BaseModel):
    tenant: str
    created_at: datetime
    settings: TenantSettings


class TenantCreated(BaseModel):
    tenant: str
    api_key: str = Field(description="The tenant's first API key. Shown once; store it now.")


class KeyOut(BaseModel):
    key_id: str = Field(description="Public id of the key (the key itself is never shown).")
    tenant: str
    role: Role
    created_at: datetime
    revoked: bool


class KeyCreated(BaseModel):
    key_id: str
    tenant: str
    api_key: str = Field(description="The new API key. Shown once; store it now.")


# -- spans and traces ---------------------------------------------------------------------


class LlmFields(BaseModel):
    provider: str
    operation: str
    request_model: str
    response_model: str
    model: str = Field(description="Response model, else request model.")
    input_tokens: int = Field(description="Includes cache-read tokens.")
    output_tokens: int = Field(description="Includes reasoning tokens.")
    cache_read_tokens: int
    reasoning_tokens: int
    cost_usd: str | None = Field(description=f"{DECIMAL_STRING} null: no known price.")
    cost_source: str = Field(description='"attribute", "override", "genai-prices" or "".')
    time_to_first_token_ms: float | None


class SpanEvent(BaseModel):
    time: str = Field(description="RFC 3339, nanoseconds, UTC.")
    time_unix_nano: int
    name: str
    attributes: dict[str, str]


class SpanLink(BaseModel):
    trace_id: str
    span_id: str
    trace_state: str
    attributes: dict[str, str]


class Span(BaseModel):
    tenant: str
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    name: str
    kind: str
    service: str
    start_time: str = Field(description="RFC 3339, nanoseconds, UTC.")
    start_time_unix_nano: int
    duration_ns: int
    duration_ms: float
    status_code: str = Field(description='"Unset", "Ok" or "Error".')
    status_message: str
    scope_name: str
    scope_version: str
    resource_attributes: dict[str, str]
    attributes: dict[str, str]
    events: list[SpanEvent]
    links: list[SpanLink]
    llm: LlmFields | None = Field(description="LLM call details; null for other spans.")


class SpanPage(BaseModel):
    spans: list[Span]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class Trace(BaseModel):
    trace_id: str
    spans: list[Span] = Field(description="Every span of the trace, by start time.")


# -- usage --------------------------------------------------------------------------------


class UsageFigures(BaseModel):
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    reasoning_tokens: int
    cost_usd: str = Field(description=f"{DECIMAL_STRING} Sum over priced requests.")
    unpriced_requests: int = Field(description="LLM requests whose model has no known price.")
    duration_p50_ms: float | None = Field(description="Approximate (t-digest).")
    duration_p95_ms: float | None = Field(description="Approximate (t-digest).")
    time_to_first_token_p50_ms: float | None = Field(description="Approximate (t-digest).")


class UsageRow(UsageFigures):
    tenant: str | None = None
    model: str | None = None
    service: str | None = None
    provider: str | None = None
    day: str | None = Field(None, description="YYYY-MM-DD (UTC).")
    hour: str | None = Field(None, description="RFC 3339 start of the hour (UTC).")


class UsageReport(BaseModel):
    start: str = Field(description="Effective start (RFC 3339): usage is kept per minute.")
    end: str = Field(description="Effective end, exclusive (RFC 3339).")
    tenant: str | None = Field(description="The tenant reported on; null: all tenants.")
    group_by: list[str]
    rows: list[UsageRow]
    totals: UsageFigures
