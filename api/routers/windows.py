"""Closed usage windows per tenant or per model, as the stream processors emitted them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbDep, ScopeDep
from api.queries.windows import WindowSeries, time_range, window_series
from api.routers.spans import TIME_HELP
from schema.windows import Metric, Scope

router = APIRouter(prefix="/api/v1", tags=["windows"])


@router.get(
    "/windows",
    response_model=WindowSeries,
    summary="Closed usage windows (requests, errors, tokens, exact cost, p95 latency)",
    description="One row per closed tumbling window of a tenant (scope=tenant) or of one of "
    "its models (scope=model), selected by window start. Default range: the last 24 hours.",
    responses={400: {"description": "Invalid time, or key without scope=model"}},
)
def read_windows(
    db: DbDep,
    tenant: ScopeDep,
    metric: Annotated[
        Metric | None, Query(description="Also give this metric of each window as `value`.")
    ] = None,
    scope: Annotated[
        Scope, Query(description="Whole tenant, per model or per service.")
    ] = Scope.TENANT,
    key: Annotated[
        str | None, Query(description="Only this model or service (scope=model|service).")
    ] = None,
    start: Annotated[str | None, Query(description=f"Default: end - 24 h. {TIME_HELP}")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive; default: now. {TIME_HELP}")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most windows returned.")] = 10_000,
) -> WindowSeries:
    start_ns, end_ns = time_range(start, end)
    return window_series(
        db, tenant, start_ns, end_ns, scope=scope, key=key, metric=metric, limit=limit
    )
