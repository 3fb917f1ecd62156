"""One trace by id."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import DbDep, ScopeDep
from api.models import Trace
from api.params import trace_id as parse_trace_id
from api.queries.spans import get_trace

router = APIRouter(prefix="/api/v1", tags=["traces"])


@router.get(
    "/traces/{trace_id}",
    response_model=Trace,
    summary="Every span of a trace",
    description="A trace of another tenant answers 404, exactly like a missing one.",
    responses={400: {"description": "Malformed trace id"}, 404: {"description": "Not found"}},
)
def read_trace(trace_id: str, db: DbDep, tenant: ScopeDep) -> Trace:
    return get_trace(db, parse_trace_id(trace_id), tenant)
