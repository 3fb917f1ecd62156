"""An API over a fresh migrated database, with an admin key and two tenants."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from api.app import create_app
from schema.clickhouse import Database
from schema.tenants import TenantStore

ADMIN_KEY = "llmtel_test_admin_key_0123456789abcdef"
KEY_CACHE_TTL_S = 0.2


@dataclass(frozen=True)
class Keys:
    admin: str
    default: str
    acme: str
    globex: str


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def store(db: Database) -> TenantStore:
    return TenantStore(db, cache_ttl_s=KEY_CACHE_TTL_S)


@pytest.fixture
def keys(store: TenantStore) -> Keys:
    generated = store.bootstrap(ADMIN_KEY)
    _, acme = store.create_tenant("acme")
    _, globex = store.create_tenant("globex")
    return Keys(ADMIN_KEY, generated["tenant default"], acme, globex)


@pytest.fixture
async def client(db: Database, store: TenantStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db, store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmtel") as http:
        yield http
