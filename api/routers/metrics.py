"""`/metrics`: llmtel's own pipeline health, plus per-tenant LLM series by key.

Without a key: the pipeline health metrics only (what a plain scrape of a node needs).
With the admin key: also every tenant's LLM series and budget ratios; with a tenant key:
that tenant's. An unknown key is a 401, never a silently smaller answer.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from api import exposition
from api.deps import NO_AUTH_PRINCIPAL, DbDep, TenantsDep
from api.queries.budget import budget_usage
from api.routers.prometheus import metrics_config
from schema.models import Principal

router = APIRouter(tags=["metrics"])
_bearer = HTTPBearer(auto_error=False, description="Optional: an llmtel API key.")


async def optional_principal(
    request: Request,
    tenants: TenantsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """Who scrapes: None without a key; 401 for a key that is unknown or revoked."""
    if request.app.state.no_auth:
        return NO_AUTH_PRINCIPAL
    if credentials is None:
        return None
    principal = await tenants.authenticate(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown or revoked API key (scrape without a key for pipeline health only)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


@router.get(
    "/metrics",
    summary="Prometheus metrics: pipeline health; per-tenant LLM series with a key",
    response_class=Response,
)
async def metrics(
    request: Request,
    db: DbDep,
    tenants: TenantsDep,
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Response:
    body = generate_latest(REGISTRY)
    if principal is not None:
        tenant = None if principal.is_admin else principal.tenant_id
        config = metrics_config(request)
        now_ns = time.time_ns()

        def llm() -> bytes:
            families = exposition.llm_families(db, now_ns / 1e9, config.top_models, tenant)
            usage = budget_usage(db, tenants, tenant, now_ns)
            families.append(exposition.budget_family((u.tenant, u.used_ratio) for u in usage))
            return exposition.render(families)

        body += await run_in_threadpool(llm)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
