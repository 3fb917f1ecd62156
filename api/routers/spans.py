"""Spans, filtered and paged."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbDep, ScopeDep
from api.models import SpanPage
from api.params import parse_time
from api.queries.spans import SpanFilter, Status, list_spans

router = APIRouter(prefix="/api/v1", tags=["spans"])

TIME_HELP = "RFC 3339 (2024-05-01T12:00:00Z; no zone means UTC) or unix nanoseconds."


@router.get(
    "/spans",
    response_model=SpanPage,
    summary="Spans, newest first, with cursor paging",
    responses={400: {"description": "Invalid filter or cursor"}},
)
def read_spans(
    db: DbDep,
    tenant: ScopeDep,
    service: Annotated[str | None, Query(description="Service name, exact.")] = None,
    model: Annotated[
        str | None, Query(description="LLM model (response model, else request model).")
    ] = None,
    status: Annotated[Status | None, Query(description="Span status.")] = None,
    start: Annotated[str | None, Query(description=f"Inclusive. {TIME_HELP}")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive. {TIME_HELP}")] = None,
    min_cost: Annotated[
        Decimal | None, Query(ge=0, description="Minimum cost in USD (priced spans only).")
    ] = None,
    min_duration_ms: Annotated[float | None, Query(ge=0, description="Minimum duration.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> SpanPage:
    return list_spans(
        db,
        SpanFilter(
            tenant=tenant,
            service=service,
            model=model,
            status=status,
            start_ns=None if start is None else parse_time(start, "start"),
            end_ns=None if end is None else parse_time(end, "end"),
            min_cost=min_cost,
            min_duration_ms=min_duration_ms,
            limit=limit,
            cursor=cursor,
        ),
    )
