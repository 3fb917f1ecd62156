"""The span row contract: column names and order of `otel_traces`, and the columnar batch.

Column names follow the OpenTelemetry Collector's ClickHouse exporter so that Grafana's
ClickHouse datasource reads llmtel traces without configuration; the `Llm*` and `TenantId`
columns are llmtel's own. Batches are columnar (one list per column) because that is the
cheapest shape both to build in Python and to insert through clickhouse-connect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SPANS_TABLE = "otel_traces"

# Order matters: normalisers append to these lists positionally.
SPAN_COLUMNS: tuple[str, ...] = (
    "Timestamp",  # span start, ns since epoch
    "TraceId",  # lowercase hex, 32 chars
    "SpanId",  # lowercase hex, 16 chars
    "ParentSpanId",  # lowercase hex or ""
    "TraceState",
    "SpanName",
    "SpanKind",  # e.g. "Client", as the collector's exporter writes it
    "ServiceName",
    "ResourceAttributes",  # dict[str, str]
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",  # dict[str, str], content fields already privacy-filtered
    "Duration",  # ns, UInt64
    "StatusCode",  # "Unset" | "Ok" | "Error"
    "StatusMessage",
    "Events.Timestamp",  # list[int ns]
    "Events.Name",  # list[str]
    "Events.Attributes",  # list[dict[str, str]]
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
    "TenantId",
    "IsLlm",  # bool: the span carries LLM semantics (model, tokens or gen_ai operation)
    "LlmProvider",
    "LlmOperation",
    "LlmRequestModel",
    "LlmResponseModel",
    "LlmInputTokens",  # UInt64, includes cache-read tokens (as OpenAI/GenAI semconv report them)
    "LlmOutputTokens",  # UInt64, includes reasoning tokens
    "LlmCacheReadTokens",
    "LlmReasoningTokens",
    "LlmCostUsd",  # Decimal | None (None: unknown model, never a guess)
    "LlmCostSource",  # "attribute" | "override" | "genai-prices" | "" (unpriced / not LLM)
    "LlmTimeToFirstTokenMs",  # float | None
)

COLUMN_INDEX: dict[str, int] = {name: i for i, name in enumerate(SPAN_COLUMNS)}


@dataclass(slots=True)
class SpanBatch:
    """Spans ready to insert, one list per column in `SPAN_COLUMNS` order."""

    columns: list[list[Any]] = field(default_factory=lambda: [[] for _ in SPAN_COLUMNS])
    unpriced: int = 0  # LLM spans whose model has no known price

    def __len__(self) -> int:
        return len(self.columns[0])

    def extend(self, other: SpanBatch) -> None:
        for mine, theirs in zip(self.columns, other.columns, strict=True):
            mine.extend(theirs)
        self.unpriced += other.unpriced

    def column(self, name: str) -> list[Any]:
        return self.columns[COLUMN_INDEX[name]]
