"""Anomalies: windows whose metric exceeded a multiple of its rolling average."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbDep, ScopeDep
from api.queries.windows import AnomalyList, list_anomalies, time_range
from api.routers.spans import TIME_HELP
from schema.windows import Metric

router = APIRouter(prefix="/api/v1", tags=["anomalies"])


@router.get(
    "/anomalies",
    response_model=AnomalyList,
    summary="Detected anomalies, newest window first",
    description="Selected by the start of the anomalous window. Default range: the last 24 hours.",
    responses={400: {"description": "Invalid time"}},
)
def read_anomalies(
    db: DbDep,
    tenant: ScopeDep,
    metric: Annotated[Metric | None, Query(description="Only this metric.")] = None,
    start: Annotated[str | None, Query(description=f"Default: end - 24 h. {TIME_HELP}")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive; default: now. {TIME_HELP}")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Most anomalies returned.")] = 1000,
) -> AnomalyList:
    start_ns, end_ns = time_range(start, end)
    return list_anomalies(db, tenant, start_ns, end_ns, metric=metric, limit=limit)
