"""GET /api/v1/anomalies: metric and time filters, exact values, tenant confinement, FINAL."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from api.params import format_ns
from schema.clickhouse import Database
from schema.window_store import insert_anomalies
from schema.windows import AnomalyRecord, Metric, Scope
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, HOUR, NS

pytestmark = pytest.mark.clickhouse

MINUTE = 60 * NS
RANGE = {"start": str(BASE_NS), "end": str(BASE_NS + HOUR)}


def anomaly(
    tenant: str,
    minute: int,
    metric: Metric = Metric.COST_USD,
    *,
    key: str = "",
    value: str = "3.5",
    average: str = "0.5",
) -> AnomalyRecord:
    start = BASE_NS + minute * MINUTE
    return AnomalyRecord(
        tenant=tenant,
        scope=Scope.MODEL if key else Scope.TENANT,
        key=key,
        metric=metric,
        window_start_ns=start,
        window_end_ns=start + MINUTE,
        value=Decimal(value),
        average=Decimal(average),
        factor=3.0,
        history=30,
    )


async def anomalies(client: httpx.AsyncClient, api_key: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/anomalies", params=params, headers=auth(api_key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def found(body: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """(tenant, metric, key, minute) of each anomaly, in response order."""
    return [
        (a["tenant"], a["metric"], a["key"], (a["window_start_unix_nano"] - BASE_NS) // MINUTE)
        for a in body["anomalies"]
    ]


@pytest.fixture
def detected(db: Database) -> None:
    insert_anomalies(db, [
        anomaly("acme", 3, value="12.000000000001", average="0.000000000003"),
        anomaly("acme", 5, Metric.REQUESTS, value="400", average="25.5"),
        anomaly("acme", 5, Metric.COST_USD, key="gpt-4o", value="2", average="0.25"),
        anomaly("acme", 7, Metric.ERROR_RATE, value="0.75", average="0.05"),
        anomaly("acme", 120, value="1", average="0.1"),  # after the range
        anomaly("globex", 4, Metric.OUTPUT_TOKENS, value="90000", average="1000"),
    ])  # fmt: skip


async def test_newest_first_with_exact_values(
    client: httpx.AsyncClient, keys: Keys, detected: None
) -> None:
    body = await anomalies(client, keys.acme, **RANGE)
    assert body["tenant"] == "acme" and body["metric"] is None and body["truncated"] is False
    assert found(body) == [
        ("acme", "error_rate", "", 7),
        ("acme", "cost_usd", "gpt-4o", 5),
        ("acme", "requests", "", 5),
        ("acme", "cost_usd", "", 3),
    ]
    rate, model_cost, requests, cost = body["anomalies"]
    detected_at = cost.pop("detected_at")
    assert cost == {
        "tenant": "acme",
        "scope": "tenant",
        "key": "",
        "metric": "cost_usd",
        "window_start": format_ns(BASE_NS + 3 * MINUTE),
        "window_start_unix_nano": BASE_NS + 3 * MINUTE,
        "window_end": format_ns(BASE_NS + 4 * MINUTE),
        "window_end_unix_nano": BASE_NS + 4 * MINUTE,
        "value": "12.000000000001",
        "average": "0.000000000003",
        "factor": 3.0,
        "history": 30,
    }
    assert detected_at.endswith("Z") and detected_at[:4].isdigit()
    assert model_cost["scope"] == "model"
    assert (model_cost["value"], model_cost["average"]) == ("2.000000000000", "0.250000000000")
    assert (requests["value"], requests["average"]) == ("400", "25.5")
    assert (rate["value"], rate["average"]) == ("0.75", "0.05")


async def test_metric_filter(client: httpx.AsyncClient, keys: Keys, detected: None) -> None:
    body = await anomalies(client, keys.acme, metric="cost_usd", **RANGE)
    assert body["metric"] == "cost_usd"
    assert found(body) == [("acme", "cost_usd", "gpt-4o", 5), ("acme", "cost_usd", "", 3)]
    none = await anomalies(client, keys.acme, metric="latency_p95_ns", **RANGE)
    assert none["anomalies"] == []
    bad = await client.get(
        "/api/v1/anomalies", params={"metric": "colour"}, headers=auth(keys.acme)
    )
    assert bad.status_code == 422


async def test_tenant_confinement_and_admin_filter(
    client: httpx.AsyncClient, keys: Keys, detected: None
) -> None:
    assert found(await anomalies(client, keys.globex, **RANGE)) == [
        ("globex", "output_tokens", "", 4)
    ]
    forbidden = await client.get(
        "/api/v1/anomalies", params={"tenant": "acme"}, headers=auth(keys.globex)
    )
    assert forbidden.status_code == 403
    assert (await anomalies(client, keys.default, **RANGE))["anomalies"] == []

    everyone = await anomalies(client, keys.admin, **RANGE)
    assert everyone["tenant"] is None
    assert len(everyone["anomalies"]) == 5
    assert {a["tenant"] for a in everyone["anomalies"]} == {"acme", "globex"}
    only = await anomalies(client, keys.admin, tenant="globex", **RANGE)
    assert only["tenant"] == "globex" and len(only["anomalies"]) == 1

    assert (await client.get("/api/v1/anomalies")).status_code == 401


async def test_duplicates_are_collapsed_by_final(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    insert_anomalies(db, [anomaly("acme", 9, value="4", average="1")])
    time.sleep(0.01)  # a later version (DetectedAt) wins
    insert_anomalies(db, [anomaly("acme", 9, value="5", average="1")])
    body = await anomalies(client, keys.acme, **RANGE)
    assert [a["value"] for a in body["anomalies"]] == ["5.000000000000"]


async def test_default_range_and_limit(db: Database, client: httpx.AsyncClient, keys: Keys) -> None:
    now = time.time_ns() // MINUTE * MINUTE
    recent = [anomaly("acme", (now - BASE_NS) // MINUTE - m) for m in (1, 2, 3)]
    old = anomaly("acme", (now - 3 * 24 * HOUR - BASE_NS) // MINUTE)
    insert_anomalies(db, [*recent, old])
    body = await anomalies(client, keys.acme)
    assert [a["window_start_unix_nano"] for a in body["anomalies"]] == [
        now - m * MINUTE for m in (1, 2, 3)
    ]
    limited = await anomalies(client, keys.acme, limit=2)
    assert len(limited["anomalies"]) == 2 and limited["truncated"] is True
    bad = await client.get(
        "/api/v1/anomalies",
        params={"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"},
        headers=auth(keys.acme),
    )
    assert bad.status_code == 400 and "before end" in bad.json()["detail"]
