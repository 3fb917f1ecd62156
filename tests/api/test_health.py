"""Liveness, readiness and the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from schema.clickhouse import Database
from schema.tenants import TenantStore
from tests.conftest import connect_database

pytestmark = pytest.mark.clickhouse


async def test_health_ready_and_docs(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/api/v1/tenants",
        "/api/v1/tenants/{tenant}/settings",
        "/api/v1/tenants/{tenant}/keys",
        "/api/v1/keys/{key_id}",
        "/api/v1/traces/{trace_id}",
        "/api/v1/spans",
        "/api/v1/usage",
    ):
        assert path in spec["paths"], path
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


async def test_not_ready_while_the_pipeline_refuses_data(db: Database) -> None:
    accepting = False
    app = create_app(db, TenantStore(db), ready=lambda: accepting)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://llmtel"
    ) as http:
        refused = await http.get("/readyz")
        assert refused.status_code == 503
        assert "not accepting" in refused.json()["detail"]
        assert (await http.get("/healthz")).status_code == 200
        accepting = True
        assert (await http.get("/readyz")).status_code == 200


async def test_not_ready_when_clickhouse_does_not_answer(db: Database, clickhouse_url: str) -> None:
    handle = connect_database(clickhouse_url, db.name)
    app = create_app(handle, TenantStore(handle))
    handle.close()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://llmtel"
    ) as http:
        down = await http.get("/readyz")
    assert down.status_code == 503
    assert "ClickHouse" in down.json()["detail"]
