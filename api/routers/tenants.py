"""Tenant and API key administration (admin key only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from api.deps import AdminDep, TenantsDep
from api.models import KeyCreated, KeyOut, TenantCreate, TenantCreated, TenantOut
from schema.models import TenantSettings
from schema.tenants import ApiKeyInfo, Tenant

router = APIRouter(prefix="/api/v1", tags=["admin"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or unknown key"},
    403: {"description": "Not the admin key"},
}


def _tenant_out(tenant: Tenant) -> TenantOut:
    return TenantOut(
        tenant=tenant.tenant_id, created_at=tenant.created_at, settings=tenant.settings
    )


def _key_out(key: ApiKeyInfo) -> KeyOut:
    return KeyOut(
        key_id=key.key_id,
        tenant=key.tenant_id,
        role=key.role,
        created_at=key.created_at,
        revoked=key.revoked,
    )


@router.post(
    "/tenants",
    response_model=TenantCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create a tenant and its first API key",
    responses={**_ERRORS, 400: {"description": "Invalid name"}, 409: {"description": "Exists"}},
)
def create_tenant(body: TenantCreate, _: AdminDep, tenants: TenantsDep) -> TenantCreated:
    tenant, api_key = tenants.create_tenant(body.name, body.settings)
    return TenantCreated(tenant=tenant.tenant_id, api_key=api_key)


@router.get("/tenants", response_model=list[TenantOut], summary="List tenants", responses=_ERRORS)
def list_tenants(_: AdminDep, tenants: TenantsDep) -> list[TenantOut]:
    return [_tenant_out(t) for t in tenants.list_tenants()]


@router.get(
    "/tenants/{tenant}/settings",
    response_model=TenantSettings,
    summary="A tenant's settings",
    responses={**_ERRORS, 404: {"description": "No such tenant"}},
)
def get_settings(tenant: str, _: AdminDep, tenants: TenantsDep) -> TenantSettings:
    return tenants.get_tenant(tenant).settings


@router.put(
    "/tenants/{tenant}/settings",
    response_model=TenantSettings,
    summary="Replace a tenant's settings",
    description="Takes effect for new data within the settings cache time (seconds).",
    responses={**_ERRORS, 404: {"description": "No such tenant"}},
)
def put_settings(
    tenant: str, body: TenantSettings, _: AdminDep, tenants: TenantsDep
) -> TenantSettings:
    return tenants.update_settings(tenant, body).settings


@router.post(
    "/tenants/{tenant}/keys",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Add an API key to a tenant",
    responses={**_ERRORS, 404: {"description": "No such tenant"}},
)
def create_key(tenant: str, _: AdminDep, tenants: TenantsDep) -> KeyCreated:
    info, api_key = tenants.create_key(tenant)
    return KeyCreated(key_id=info.key_id, tenant=info.tenant_id, api_key=api_key)


@router.get(
    "/tenants/{tenant}/keys",
    response_model=list[KeyOut],
    summary="A tenant's API keys (ids, never the keys)",
    responses={**_ERRORS, 404: {"description": "No such tenant"}},
)
def list_keys(tenant: str, _: AdminDep, tenants: TenantsDep) -> list[KeyOut]:
    return [_key_out(k) for k in tenants.list_keys(tenant)]


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key",
    description="Every llmtel process refuses the key within the key cache time (seconds).",
    responses={
        **_ERRORS,
        404: {"description": "No such key"},
        409: {"description": "The last admin key"},
    },
)
def revoke_key(key_id: str, _: AdminDep, tenants: TenantsDep) -> KeyOut:
    return _key_out(tenants.revoke_key(key_id))
