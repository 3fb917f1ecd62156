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


# -- budgets, dashboard overview, invoices ------------------------------------------------


class BudgetStatus(BaseModel):
    tenant: str
    month: str = Field(description="YYYY-MM (UTC): budgets are per calendar month.")
    budget_usd: str = Field(description=DECIMAL_STRING)
    spent_usd: str = Field(description=f"{DECIMAL_STRING} Month to date.")
    used_ratio: float = Field(description="spent / budget; above 1 once exceeded.")


class TokenCounts(BaseModel):
    input: int = Field(description="Includes cache-read tokens.")
    output: int = Field(description="Includes reasoning tokens.")
    cache_read: int
    reasoning: int


class Quantiles(BaseModel):
    p50_ms: float | None = Field(description="Approximate (t-digest); null without data.")
    p95_ms: float | None
    p99_ms: float | None


class OverviewPoint(BaseModel):
    time: str = Field(description="RFC 3339 start of the bucket (UTC).")
    requests: int
    errors: int
    cost_usd: str = Field(description=DECIMAL_STRING)
    requests_per_minute: float


class TopModel(BaseModel):
    model: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description=DECIMAL_STRING)


class TopTenant(BaseModel):
    tenant: str
    requests: int
    cost_usd: str = Field(description=DECIMAL_STRING)


class Overview(BaseModel):
    start: str = Field(description="Effective start (RFC 3339), a whole minute.")
    end: str = Field(description="Effective end, exclusive (RFC 3339).")
    tenant: str | None = Field(description="The tenant shown; null: all tenants.")
    step_seconds: int = Field(description="Width of each `series` bucket.")
    quantiles_start: str = Field(
        description="Start of the range the latency and TTFT quantiles cover: the range "
        "itself, or from 6 h on, the enclosing whole hours."
    )
    quantiles_end: str = Field(description="End (exclusive) of the quantiles' range.")
    requests: int
    errors: int
    error_rate: float | None = Field(description="errors / requests; null without requests.")
    cost_usd: str = Field(description=f"{DECIMAL_STRING} Sum over priced requests.")
    unpriced_requests: int
    tokens: TokenCounts
    latency: Quantiles
    time_to_first_token: Quantiles
    series: list[OverviewPoint] = Field(description="Every bucket of the range, zeros included.")
    top_models: list[TopModel] = Field(description="By cost, then requests.")
    top_tenants: list[TopTenant] | None = Field(
        description="By cost (admin key only; null for a tenant key)."
    )
    budgets: list[BudgetStatus] = Field(
        description="Month-to-date budget use of the tenants shown that have a budget."
    )


class UnitPricesOut(BaseModel):
    input_usd_per_mtok: str | None
    cache_read_usd_per_mtok: str | None = Field(description="null: charged as input.")
    output_usd_per_mtok: str | None
    reasoning_usd_per_mtok: str | None = Field(description="null: charged as output.")
    tiered: bool = Field(description="Larger requests pay other prices; the base tier is shown.")
    time_of_day: bool = Field(description="The price also changes within a day.")


class InvoiceLine(BaseModel):
    model: str
    provider: str
    cost_source: str = Field(
        description='"genai-prices", "override" (the tenant\'s prices), "attribute" (the '
        'application reported the cost), "" (unpriced) or "unknown" (priced before llmtel '
        "recorded cost sources)."
    )
    period_start: str = Field(description="First day (YYYY-MM-DD) of this line.")
    period_end: str = Field(description="Last day, inclusive.")
    requests: int
    unpriced_requests: int = Field(description="Requests with no known price (cost 0 here).")
    input_tokens: int = Field(description="Includes cache-read tokens.")
    cache_read_tokens: int
    output_tokens: int = Field(description="Includes reasoning tokens.")
    reasoning_tokens: int
    unit_prices: UnitPricesOut | None = Field(
        description="USD per million tokens applied; null when no price list applies."
    )
    price_note: str
    subtotal_usd: str = Field(description=f"{DECIMAL_STRING} Exact sum of the spans' costs.")


class ModelSubtotal(BaseModel):
    model: str
    requests: int
    unpriced_requests: int
    subtotal_usd: str = Field(description=DECIMAL_STRING)


class Invoice(BaseModel):
    tenant: str
    month: str = Field(description="YYYY-MM (UTC).")
    currency: str = "USD"
    lines: list[InvoiceLine] = Field(
        description="Per model, provider and cost source; split where the unit prices changed."
    )
    models: list[ModelSubtotal]
    requests: int
    unpriced_requests: int
    total_usd: str = Field(description=f"{DECIMAL_STRING} Exact sum of every span's cost.")
