"""Who a key belongs to: lets `llmtel ingest` nodes check keys without reading ClickHouse."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import PrincipalDep
from schema.models import Principal

router = APIRouter(prefix="/api/v1", tags=["auth"])


@router.get(
    "/whoami",
    response_model=Principal,
    summary="The principal (role, tenant, key id) of the presented key; 401 if unknown",
)
def whoami(principal: PrincipalDep) -> Principal:
    return principal
