"""GET /api/v1/windows: scope and key filters, exact cost, tenant confinement, FINAL."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from api.params import format_ns
from schema.clickhouse import Database
from schema.window_store import insert_windows
from schema.windows import Scope, WindowRecord
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, HOUR, MS, NS

pytestmark = pytest.mark.clickhouse

MINUTE = 60 * NS
RANGE = {"start": str(BASE_NS), "end": str(BASE_NS + HOUR)}


def window(
    tenant: str,
    minute: int,
    *,
    key: str = "",
    requests: int = 10,
    errors: int = 0,
    cost: str = "0.5",
    **fields: Any,
) -> WindowRecord:
    start = BASE_NS + minute * MINUTE
    values: dict[str, Any] = {
        "tenant": tenant,
        "scope": Scope.MODEL if key else Scope.TENANT,
        "key": key,
        "window_start_ns": start,
        "window_end_ns": start + MINUTE,
        "requests": requests,
        "errors": errors,
        "input_tokens": 100 * requests,
        "output_tokens": 20 * requests,
        "cost_usd": Decimal(cost),
        "unpriced": 0,
        "latency_p95_ns": 250 * MS if requests else 0,
    }
    values.update(fields)
    return WindowRecord(**values)


async def windows(client: httpx.AsyncClient, api_key: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/windows", params=params, headers=auth(api_key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def starts(body: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(tenant, key, minute) of each window, in response order."""
    return [
        (w["tenant"], w["key"], (w["window_start_unix_nano"] - BASE_NS) // MINUTE)
        for w in body["windows"]
    ]


@pytest.fixture
def traffic(db: Database) -> None:
    insert_windows(db, [
        window("acme", 0, cost="0.000000000003"),
        window("acme", 1, requests=4, errors=1, cost="1.25", unpriced=2),
        window("acme", 2, requests=0, cost="0", latency_p95_ns=0),  # a quiet window is real
        window("acme", 0, key="gpt-4o", cost="0.000000000001"),
        window("acme", 1, key="gpt-4o", requests=3, cost="1"),
        window("acme", 1, key="claude-x", requests=1, cost="0.25"),
        window("acme", 90, cost="9"),  # after the range
        window("globex", 0, requests=7, cost="5"),
        window("globex", 0, key="house", requests=7, cost="5"),
    ])  # fmt: skip


async def test_tenant_windows_with_exact_figures(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    body = await windows(client, keys.acme, **RANGE)
    assert body["tenant"] == "acme" and body["scope"] == "tenant" and body["key"] is None
    assert body["start"] == format_ns(BASE_NS) and body["truncated"] is False
    assert starts(body) == [("acme", "", 0), ("acme", "", 1), ("acme", "", 2)]
    first, second, quiet = body["windows"]
    assert first == {
        "tenant": "acme",
        "scope": "tenant",
        "key": "",
        "window_start": format_ns(BASE_NS),
        "window_start_unix_nano": BASE_NS,
        "window_end": format_ns(BASE_NS + MINUTE),
        "window_end_unix_nano": BASE_NS + MINUTE,
        "requests": 10,
        "errors": 0,
        "error_rate": 0.0,
        "input_tokens": 1000,
        "output_tokens": 200,
        "cost_usd": "0.000000000003",
        "unpriced_requests": 0,
        "latency_p95_ms": 250.0,
        "value": None,
    }
    assert (second["error_rate"], second["cost_usd"], second["unpriced_requests"]) == (
        0.25,
        "1.250000000000",
        2,
    )
    assert quiet["requests"] == 0 and quiet["latency_p95_ms"] is None
    assert quiet["cost_usd"] == "0.000000000000"


async def test_model_scope_and_key(client: httpx.AsyncClient, keys: Keys, traffic: None) -> None:
    body = await windows(client, keys.acme, scope="model", **RANGE)
    assert starts(body) == [
        ("acme", "claude-x", 1), ("acme", "gpt-4o", 0), ("acme", "gpt-4o", 1),
    ]  # fmt: skip
    only = await windows(client, keys.acme, scope="model", key="gpt-4o", **RANGE)
    assert only["key"] == "gpt-4o"
    assert [w["cost_usd"] for w in only["windows"]] == ["0.000000000001", "1.000000000000"]
    assert (await windows(client, keys.acme, scope="model", key="nope", **RANGE))["windows"] == []

    response = await client.get(
        "/api/v1/windows", params={"key": "gpt-4o"}, headers=auth(keys.acme)
    )
    assert response.status_code == 400
    assert "scope=model" in response.json()["detail"]


@pytest.mark.parametrize(
    ("metric", "values"),
    [
        ("cost_usd", ["0.000000000003", "1.250000000000", "0.000000000000"]),
        ("requests", ["10", "4", "0"]),
        ("input_tokens", ["1000", "400", "0"]),
        ("error_rate", ["0", "0.25", "0"]),
        ("latency_p95_ns", ["250000000", "250000000", "0"]),
    ],
)
async def test_metric_value_is_an_exact_string(
    client: httpx.AsyncClient, keys: Keys, traffic: None, metric: str, values: list[str]
) -> None:
    body = await windows(client, keys.acme, metric=metric, **RANGE)
    assert body["metric"] == metric
    assert [w["value"] for w in body["windows"]] == values


async def test_tenant_confinement_and_admin_filter(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    globex = await windows(client, keys.globex, **RANGE)
    assert starts(globex) == [("globex", "", 0)]
    forbidden = await client.get(
        "/api/v1/windows", params={"tenant": "globex", **RANGE}, headers=auth(keys.acme)
    )
    assert forbidden.status_code == 403
    own = await windows(client, keys.acme, tenant="acme", **RANGE)
    assert {w["tenant"] for w in own["windows"]} == {"acme"}

    everyone = await windows(client, keys.admin, **RANGE)
    assert everyone["tenant"] is None
    assert {w["tenant"] for w in everyone["windows"]} == {"acme", "globex"}
    only = await windows(client, keys.admin, tenant="globex", scope="model", **RANGE)
    assert starts(only) == [("globex", "house", 0)]

    assert (await client.get("/api/v1/windows")).status_code == 401


async def test_duplicates_are_collapsed_by_final(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    insert_windows(db, [window("acme", 5, requests=1, cost="0.1")])
    time.sleep(0.01)  # a later version (InsertedAt) wins
    insert_windows(db, [window("acme", 5, requests=2, cost="0.2")])
    insert_windows(db, [window("acme", 6)])
    body = await windows(client, keys.acme, **RANGE)
    assert [(w["requests"], w["cost_usd"]) for w in body["windows"]] == [
        (2, "0.200000000000"),
        (10, "0.500000000000"),
    ]


async def test_default_range_is_the_last_day_and_limit_truncates(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    now = time.time_ns() // MINUTE * MINUTE
    insert_windows(db, [
        window("acme", (now - BASE_NS) // MINUTE - 2),
        window("acme", (now - BASE_NS) // MINUTE - 3),
        window("acme", (now - 2 * 24 * HOUR - BASE_NS) // MINUTE),
    ])  # fmt: skip
    body = await windows(client, keys.acme)
    assert [w["window_start_unix_nano"] for w in body["windows"]] == [
        now - 3 * MINUTE,
        now - 2 * MINUTE,
    ]
    limited = await windows(client, keys.acme, limit=1)
    assert len(limited["windows"]) == 1 and limited["truncated"] is True


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"metric": "colour"}, 422, None),
        ({"scope": "region"}, 422, None),
        ({"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, 400, "before end"),
        ({"end": "soon"}, 400, "is not a time"),
        ({"limit": "0"}, 422, None),
    ],
)
async def test_bad_parameters_are_explained(
    client: httpx.AsyncClient, keys: Keys, params: dict[str, str], status: int, detail: str | None
) -> None:
    response = await client.get("/api/v1/windows", params=params, headers=auth(keys.acme))
    assert response.status_code == status
    if detail:
        assert detail in response.json()["detail"]
