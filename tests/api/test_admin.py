"""Tenant and key administration over HTTP: admin only, clear errors, revocation."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api.app import create_app
from schema.clickhouse import Database
from schema.tenants import TenantStore
from tests.api.conftest import ADMIN_KEY, KEY_CACHE_TTL_S, Keys, auth

pytestmark = pytest.mark.clickhouse

ADMIN_ROUTES = [
    ("POST", "/api/v1/tenants", {"name": "newco"}),
    ("GET", "/api/v1/tenants", None),
    ("GET", "/api/v1/tenants/acme/settings", None),
    ("PUT", "/api/v1/tenants/acme/settings", {"privacy": "off"}),
    ("POST", "/api/v1/tenants/acme/keys", None),
    ("GET", "/api/v1/tenants/acme/keys", None),
    ("DELETE", "/api/v1/keys/key_0000", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_need_the_admin_key(
    client: httpx.AsyncClient, keys: Keys, method: str, path: str, body: object
) -> None:
    missing = await client.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    unknown = await client.request(method, path, json=body, headers=auth("llmtel_unknown"))
    assert unknown.status_code == 401
    assert unknown.json() == {"detail": "unknown or revoked API key"}
    tenant = await client.request(method, path, json=body, headers=auth(keys.acme))
    assert tenant.status_code == 403
    assert tenant.json() == {"detail": "this endpoint needs the admin key"}


async def test_create_list_and_configure_tenants(client: httpx.AsyncClient, keys: Keys) -> None:
    admin = auth(keys.admin)
    created = await client.post(
        "/api/v1/tenants",
        json={"name": "initech", "settings": {"privacy": "hashed"}},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["tenant"] == "initech" and body["api_key"].startswith("llmtel_")
    usage = await client.get("/api/v1/usage", headers=auth(body["api_key"]))
    assert usage.status_code == 200 and usage.json()["tenant"] == "initech"

    listed = (await client.get("/api/v1/tenants", headers=admin)).json()
    assert [t["tenant"] for t in listed] == ["acme", "default", "globex", "initech"]
    assert {"tenant", "created_at", "settings"} <= set(listed[0])

    settings = await client.get("/api/v1/tenants/initech/settings", headers=admin)
    assert settings.json() == {
        "privacy": "hashed",
        "price_overrides": {},
        "monthly_budget_usd": None,
    }
    new = {
        "privacy": "full",
        "price_overrides": {"house": {"input_mtok": "1.5", "output_mtok": "6"}},
    }
    put = await client.put("/api/v1/tenants/initech/settings", json=new, headers=admin)
    assert put.status_code == 200, put.text
    again = (await client.get("/api/v1/tenants/initech/settings", headers=admin)).json()
    assert again["privacy"] == "full"
    assert again["price_overrides"]["house"]["input_mtok"] == "1.5"


async def test_tenant_errors_are_clear(client: httpx.AsyncClient, keys: Keys) -> None:
    admin = auth(keys.admin)
    duplicate = await client.post("/api/v1/tenants", json={"name": "acme"}, headers=admin)
    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": "tenant 'acme' already exists"}
    invalid = await client.post("/api/v1/tenants", json={"name": "Not Valid"}, headers=admin)
    assert invalid.status_code == 400
    assert "invalid tenant name" in invalid.json()["detail"]
    missing = await client.get("/api/v1/tenants/nobody/settings", headers=admin)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "tenant 'nobody' does not exist"}
    bad_settings = await client.put(
        "/api/v1/tenants/acme/settings", json={"privacy": "sometimes"}, headers=admin
    )
    assert bad_settings.status_code == 422
    assert (await client.post("/api/v1/tenants/nobody/keys", headers=admin)).status_code == 404
    assert (await client.delete("/api/v1/keys/key_nope", headers=admin)).status_code == 404


async def test_keys_are_created_listed_and_revoked(client: httpx.AsyncClient, keys: Keys) -> None:
    admin = auth(keys.admin)
    created = await client.post("/api/v1/tenants/acme/keys", headers=admin)
    assert created.status_code == 201
    new_key = created.json()
    assert new_key["tenant"] == "acme" and new_key["api_key"].startswith("llmtel_")
    assert (await client.get("/api/v1/spans", headers=auth(new_key["api_key"]))).status_code == 200

    listed = (await client.get("/api/v1/tenants/acme/keys", headers=admin)).json()
    assert len(listed) == 2
    assert all(set(k) == {"key_id", "tenant", "role", "created_at", "revoked"} for k in listed)
    assert new_key["key_id"] in {k["key_id"] for k in listed}

    revoked = await client.delete(f"/api/v1/keys/{new_key['key_id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    await asyncio.sleep(KEY_CACHE_TTL_S + 0.05)
    refused = await client.get("/api/v1/spans", headers=auth(new_key["api_key"]))
    assert refused.status_code == 401
    assert (await client.get("/api/v1/spans", headers=auth(keys.acme))).status_code == 200
    after = (await client.get("/api/v1/tenants/acme/keys", headers=admin)).json()
    assert {k["key_id"]: k["revoked"] for k in after}[new_key["key_id"]] is True


async def test_revoked_key_stops_working_within_the_cache_ttl_elsewhere(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    # the key is cached by this API; another process (its own store) revokes it
    assert (await client.get("/api/v1/usage", headers=auth(keys.globex))).status_code == 200
    other_process = TenantStore(db)
    other_process.revoke_key(other_process.list_keys("globex")[0].key_id)
    await asyncio.sleep(KEY_CACHE_TTL_S + 0.05)
    assert (await client.get("/api/v1/usage", headers=auth(keys.globex))).status_code == 401


async def test_the_last_admin_key_cannot_be_revoked(client: httpx.AsyncClient, keys: Keys) -> None:
    admin = auth(keys.admin)
    listed = (await client.get("/api/v1/tenants/default/keys", headers=admin)).json()
    (admin_key,) = [k for k in listed if k["role"] == "admin"]
    refused = await client.delete(f"/api/v1/keys/{admin_key['key_id']}", headers=admin)
    assert refused.status_code == 409
    assert "last active admin key" in refused.json()["detail"]


async def test_no_auth_mode_is_an_admin_of_tenant_default(db: Database) -> None:
    store = TenantStore(db)
    store.bootstrap(ADMIN_KEY)
    app = create_app(db, store, no_auth=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://llmtel"
    ) as http:
        created = await http.post("/api/v1/tenants", json={"name": "local"})
        assert created.status_code == 201
        assert (await http.get("/api/v1/tenants")).status_code == 200
        assert (await http.get("/api/v1/usage", params={"tenant": "local"})).status_code == 200
