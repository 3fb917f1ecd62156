"""Span rows for tests, built directly in the `SPAN_COLUMNS` contract (no normaliser)."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from schema.clickhouse import Database
from schema.spans import SPAN_COLUMNS, SPANS_TABLE

NS = 1_000_000_000
MS = 1_000_000
HOUR = 3600 * NS
# two hours ago, on the hour: recent enough for any retention TTL and for default windows
BASE_NS = time.time_ns() // HOUR * HOUR - 2 * HOUR
_counter = itertools.count(1)


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def span(**fields: Any) -> dict[str, Any]:
    """A plain (non-LLM) span; keyword arguments override columns by name."""
    row: dict[str, Any] = {
        "Timestamp": BASE_NS + next(_counter) * MS,
        "TraceId": trace_id(),
        "SpanId": span_id(),
        "ParentSpanId": "",
        "TraceState": "",
        "SpanName": "GET /",
        "SpanKind": "Server",
        "ServiceName": "web",
        "ResourceAttributes": {"service.name": "web"},
        "ScopeName": "tests",
        "ScopeVersion": "1.0",
        "SpanAttributes": {},
        "Duration": 10 * MS,
        "StatusCode": "Unset",
        "StatusMessage": "",
        "Events.Timestamp": [],
        "Events.Name": [],
        "Events.Attributes": [],
        "Links.TraceId": [],
        "Links.SpanId": [],
        "Links.TraceState": [],
        "Links.Attributes": [],
        "TenantId": "default",
        "IsLlm": False,
        "LlmProvider": "",
        "LlmOperation": "",
        "LlmRequestModel": "",
        "LlmResponseModel": "",
        "LlmInputTokens": 0,
        "LlmOutputTokens": 0,
        "LlmCacheReadTokens": 0,
        "LlmReasoningTokens": 0,
        "LlmCostUsd": None,
        "LlmCostSource": "",
        "LlmTimeToFirstTokenMs": None,
    }
    unknown = set(fields) - set(row)
    if unknown:
        raise KeyError(f"not span columns: {sorted(unknown)}")
    row.update(fields)
    return row


def llm_span(
    *,
    model: str = "gpt-4o",
    provider: str = "openai",
    input_tokens: int = 100,
    output_tokens: int = 20,
    cost: str | Decimal | None = "0.001",
    **fields: Any,
) -> dict[str, Any]:
    """An LLM client span; `cost=None` makes it unpriced."""
    llm: dict[str, Any] = {
        "SpanName": f"chat {model}",
        "SpanKind": "Client",
        "ServiceName": "chat-app",
        "SpanAttributes": {"gen_ai.request.model": model, "gen_ai.provider.name": provider},
        "IsLlm": True,
        "LlmProvider": provider,
        "LlmOperation": "chat",
        "LlmRequestModel": model,
        "LlmResponseModel": model,
        "LlmInputTokens": input_tokens,
        "LlmOutputTokens": output_tokens,
        "LlmCostUsd": None if cost is None else Decimal(cost),
        "LlmCostSource": "" if cost is None else "genai-prices",
    }
    llm.update(fields)
    return span(**llm)


def columns(rows: Iterable[dict[str, Any]]) -> list[list[Any]]:
    batch: list[list[Any]] = [[] for _ in SPAN_COLUMNS]
    for row in rows:
        for i, name in enumerate(SPAN_COLUMNS):
            batch[i].append(row[name])
    return batch


def insert_spans(db: Database, rows: Iterable[dict[str, Any]]) -> None:
    db.insert_columns(SPANS_TABLE, columns(rows), SPAN_COLUMNS)
