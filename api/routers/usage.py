"""LLM usage and cost, from the per-minute rollup."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import DbDep, ScopeDep
from api.models import UsageReport
from api.params import NS_PER_S, InvalidParameter, parse_time
from api.queries.usage import GROUP_KEYS, parse_group_by, usage_report
from api.routers.spans import TIME_HELP

router = APIRouter(prefix="/api/v1", tags=["usage"])

DEFAULT_WINDOW_NS = 24 * 3600 * NS_PER_S


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="Requests, errors, tokens and exact cost, optionally grouped",
    description="Read from the per-minute rollup: bounds round to whole minutes. "
    "Default window: the last 24 hours.",
    responses={400: {"description": "Invalid time or group_by"}},
)
def read_usage(
    db: DbDep,
    tenant: ScopeDep,
    start: Annotated[str | None, Query(description=f"Default: end - 24 h. {TIME_HELP}")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive; default: now. {TIME_HELP}")] = None,
    group_by: Annotated[
        str | None, Query(description=f"Comma list of: {', '.join(GROUP_KEYS)}.")
    ] = None,
) -> UsageReport:
    end_ns = time.time_ns() if end is None else parse_time(end, "end")
    start_ns = end_ns - DEFAULT_WINDOW_NS if start is None else parse_time(start, "start")
    if start_ns >= end_ns:
        raise InvalidParameter("start must be before end")
    try:
        keys = parse_group_by(group_by)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from exc
    return usage_report(db, tenant, start_ns, end_ns, keys)
