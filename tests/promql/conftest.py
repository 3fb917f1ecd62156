"""An API over a fresh database with LLM spans of two tenants in known minutes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from api.app import create_app
from api.promql.config import MetricsConfig
from schema.clickhouse import Database
from schema.tenants import TenantStore
from tests.api import conftest as api_fixtures
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, MS, NS, insert_spans, llm_span

store = api_fixtures.store  # the API tests' fixtures: tenant store, admin and tenant keys
keys = api_fixtures.keys

M = BASE_NS // NS  # a whole minute (on the hour, two hours ago), unix seconds


def at(second: float) -> int:
    """Unix ns of `second` seconds after minute M."""
    return int((M + second) * NS)


def spans_fixture(db: Database) -> None:
    """acme: 2 gpt-4o spans in minute M (one an error), 4 more in minute M+2, 1 claude;
    globex: 1 gpt-4o span. Durations chosen for known histogram buckets."""
    rows = [
        llm_span(TenantId="acme", Timestamp=at(1), Duration=50 * MS, cost="0.001"),
        llm_span(
            TenantId="acme", Timestamp=at(2), Duration=300 * MS, cost="0.002", StatusCode="Error"
        ),
        *[
            llm_span(TenantId="acme", Timestamp=at(121 + i), Duration=d * MS, cost="0.010")
            for i, d in enumerate((300, 700, 700, 2000))
        ],
        llm_span(TenantId="acme", Timestamp=at(125), model="claude-3", cost="0.5"),
        llm_span(TenantId="globex", Timestamp=at(3), cost="7", LlmTimeToFirstTokenMs=80.0),
    ]
    insert_spans(db, rows)


def make_client(db: Database, store: TenantStore, config: MetricsConfig) -> httpx.AsyncClient:
    app = create_app(db, store)
    app.state.metrics_config = config
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://llmtel")


@pytest.fixture
async def api(db: Database, store: TenantStore) -> AsyncIterator[httpx.AsyncClient]:
    spans_fixture(db)
    async with make_client(db, store, MetricsConfig(top_models=10, sample_interval_s=15)) as c:
        yield c


__all__ = ["M", "Keys", "at", "auth"]
