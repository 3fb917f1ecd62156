"""Typed dependencies: the collaborators `create_app` was given, and who is asking.

Authentication is `Authorization: Bearer <api key>`. In no-auth mode every request is an
admin-like principal of tenant `default` (it sees and manages every tenant): only for a
local, single-user setup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from schema.clickhouse import Database
from schema.models import DEFAULT_TENANT, Principal, Role
from schema.tenants import TenantStore

NO_AUTH_PRINCIPAL = Principal(role=Role.ADMIN, tenant_id=DEFAULT_TENANT, key_id="no-auth")

_bearer = HTTPBearer(auto_error=False, description="An llmtel API key (admin or tenant).")


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_tenants(request: Request) -> TenantStore:
    tenants: TenantStore = request.app.state.tenants
    return tenants


# Dependencies that do no I/O are coroutines: FastAPI runs a plain `def` one in its thread
# pool, a hop per dependency per request.
DbDep = Annotated[Database, Depends(get_db)]
TenantsDep = Annotated[TenantStore, Depends(get_tenants)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def current_principal(
    request: Request,
    tenants: TenantsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if request.app.state.no_auth:
        return NO_AUTH_PRINCIPAL
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send 'Authorization: Bearer <api key>'")
    principal = await tenants.authenticate(credentials.credentials)
    if principal is None:
        raise _unauthorized("unknown or revoked API key")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


async def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this endpoint needs the admin key")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


async def tenant_scope(
    principal: PrincipalDep,
    tenant: Annotated[
        str | None,
        Query(description="Admin only: restrict to this tenant (default: all tenants)."),
    ] = None,
) -> str | None:
    """The tenant a read is restricted to; None means every tenant (admin principals only)."""
    if principal.is_admin:
        return tenant or None
    if tenant is not None and tenant != principal.tenant_id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a tenant key reads only its own tenant ({principal.tenant_id!r}); drop 'tenant='",
        )
    return principal.tenant_id


ScopeDep = Annotated[str | None, Depends(tenant_scope)]
