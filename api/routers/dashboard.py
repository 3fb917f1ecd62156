"""The dashboard overview: requests, latency, errors, cost, tokens, top lists, budgets."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbDep, PrincipalDep, ScopeDep, TenantsDep
from api.models import Overview
from api.params import InvalidParameter, parse_time
from api.queries.budget import budget_usage
from api.queries.dashboard import overview, overview_range
from api.routers.spans import TIME_HELP
from api.routers.usage import DEFAULT_WINDOW_NS

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])


@router.get(
    "/overview",
    response_model=Overview,
    summary="Requests per minute, latency and TTFT quantiles, errors, cost, tokens, top lists",
    description="Read from the per-minute rollup: bounds round to whole minutes. Default "
    "range: the last 24 hours. `top_tenants` only for the admin key. `budgets`: month-to-date "
    "use of the monthly budget (current month, UTC) of the tenants shown.",
    responses={400: {"description": "Invalid time, step or top"}},
)
def read_overview(
    db: DbDep,
    tenants: TenantsDep,
    principal: PrincipalDep,
    tenant: ScopeDep,
    start: Annotated[str | None, Query(description=f"Default: end - 24 h. {TIME_HELP}")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive; default: now. {TIME_HELP}")] = None,
    step: Annotated[
        int | None,
        Query(
            description="Series bucket in seconds, a multiple of 60 (default: 60 up to a "
            "day, else range / 1440)."
        ),
    ] = None,  # fmt: skip
    top: Annotated[int, Query(ge=1, le=100, description="Length of the top lists.")] = 10,
) -> Overview:
    now_ns = time.time_ns()
    end_ns = now_ns if end is None else parse_time(end, "end")
    start_ns = end_ns - DEFAULT_WINDOW_NS if start is None else parse_time(start, "start")
    if start_ns >= end_ns:
        raise InvalidParameter("start must be before end")
    return overview(
        db,
        tenant,
        overview_range(start_ns, end_ns, step),
        top=top,
        with_tenants=principal.is_admin,
        budgets=lambda: budget_usage(db, tenants, tenant, now_ns),
    )
