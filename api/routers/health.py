"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status

from api.deps import DbDep
from api.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="ClickHouse answers and the pipeline accepts data",
    responses={503: {"description": "Not ready"}},
)
def readyz(request: Request, db: DbDep) -> Health:
    if not db.ping():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "ClickHouse does not answer")
    if not request.app.state.ready():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "llmtel is not accepting data")
    return Health(status="ok")
