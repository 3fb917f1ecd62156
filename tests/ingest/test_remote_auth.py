"""`llmtel ingest` checks keys through the API's /whoami, with a short cache."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from ingest.remote_auth import RemoteAuthenticator
from schema.clickhouse import Database
from schema.messages import HandoffUnavailable
from schema.models import Role
from schema.tenants import TenantStore


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.clickhouse
async def test_keys_are_checked_by_the_api_and_revocation_applies_after_the_ttl(
    db: Database,
) -> None:
    tenants = TenantStore(db, cache_ttl_s=0.01)
    tenants.bootstrap("llmtel_admin_key_for_remote_auth")
    _, key = tenants.create_tenant("acme")
    transport = httpx.ASGITransport(app=create_app(db, tenants))
    clock = Clock()
    auth = RemoteAuthenticator("http://api", cache_ttl_s=2, clock=clock, transport=transport)

    principal = await auth.authenticate(key)
    assert principal is not None
    assert (principal.role, principal.tenant_id) == (Role.TENANT, "acme")
    assert await auth.authenticate("llmtel_unknown") is None

    (listed,) = tenants.list_keys("acme")
    tenants.revoke_key(listed.key_id)
    clock.now = 1.0  # still cached
    assert await auth.authenticate(key) is not None
    clock.now = 2.5  # past the TTL: the API is asked again
    assert await auth.authenticate(key) is None
    await auth.aclose()


async def test_an_unreachable_api_is_unavailable_not_unauthenticated() -> None:
    auth = RemoteAuthenticator("http://127.0.0.1:9", cache_ttl_s=1)
    with pytest.raises(HandoffUnavailable):
        await auth.authenticate("llmtel_anything")
    await auth.aclose()
