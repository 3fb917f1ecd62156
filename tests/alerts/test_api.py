"""/api/v1/alerts: rules, destinations (write-only secrets), deliveries; tenant confinement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from api.app import create_app
from schema.alert_store import AlertStore
from schema.alerts import AlertKind, DeliveryAttempt, DeliveryStatus
from schema.clickhouse import Database
from schema.tenants import TenantStore
from tests.alerts.conftest import ALLOWED
from tests.api.conftest import Keys, auth

SLACK = "https://hooks.slack.com/services/T000/B000/SECRETPART"


@pytest.fixture
async def client(db: Database, store: TenantStore) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(db, store, alert_allowed_urls=ALLOWED)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmtel") as http:
        yield http


async def test_every_tenant_has_the_default_cost_rule(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    response = await client.get("/api/v1/alerts/rules", headers=auth(keys.acme))
    assert response.status_code == 200
    (rule,) = response.json()
    assert (rule["rule_id"], rule["tenant"], rule["builtin"]) == ("default", "acme", True)
    assert (rule["metric"], rule["comparison"], rule["factor"]) == ("cost", "anomaly", 3.0)
    assert rule["destinations"] == [] and rule["effective_min_baseline"] == "0.01"
    everyone = await client.get("/api/v1/alerts/rules", headers=auth(keys.admin))
    assert {r["tenant"] for r in everyone.json()} == {"default", "acme", "globex"}


async def test_rule_crud_and_validation(client: httpx.AsyncClient, keys: Keys) -> None:
    h = auth(keys.acme)
    created = await client.post(
        "/api/v1/alerts/rules",
        headers=h,
        json={"name": "gpt-4o errors", "metric": "errors", "scope": "model", "key": "gpt-4o",
              "comparison": "threshold", "threshold": "10", "cooldown_s": 60},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    rule_id = created.json()["rule_id"]
    patched = await client.patch(
        f"/api/v1/alerts/rules/{rule_id}", headers=h, json={"threshold": "20", "enabled": False}
    )
    assert patched.status_code == 200
    assert (patched.json()["threshold"], patched.json()["enabled"]) == ("20", False)
    assert (await client.get(f"/api/v1/alerts/rules/{rule_id}", headers=h)).json()[
        "threshold"
    ] == "20"
    bad = await client.patch(f"/api/v1/alerts/rules/{rule_id}", headers=h, json={"threshold": None})
    assert bad.status_code == 400 and "needs a threshold" in bad.json()["detail"]
    assert (await client.delete(f"/api/v1/alerts/rules/{rule_id}", headers=h)).status_code == 204
    gone = await client.get(f"/api/v1/alerts/rules/{rule_id}", headers=h)
    assert gone.status_code == 404 and rule_id in gone.json()["detail"]

    for body, says in [
        ({"comparison": "threshold"}, "needs a threshold"),
        ({"factor": 0.5}, "greater than 1"),
        ({"metric": "bananas"}, "cost"),
        ({"key": "gpt-4o"}, "use it with scope 'model'/'service'"),
    ]:
        response = await client.post("/api/v1/alerts/rules", headers=h, json=body)
        assert response.status_code == 422 and says in response.text, (body, response.text)
    unknown = await client.post(
        "/api/v1/alerts/rules", headers=h, json={"destinations": ["dest_nope"]}
    )
    assert unknown.status_code == 400 and "dest_nope" in unknown.json()["detail"]


async def test_the_default_rule_can_be_changed_and_deleted(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    h = auth(keys.acme)
    changed = await client.patch("/api/v1/alerts/rules/default", headers=h, json={"factor": 5})
    assert changed.status_code == 200
    assert (changed.json()["factor"], changed.json()["builtin"]) == (5.0, False)
    assert (await client.delete("/api/v1/alerts/rules/default", headers=h)).status_code == 204
    assert (await client.get("/api/v1/alerts/rules", headers=h)).json() == []
    other = await client.get("/api/v1/alerts/rules", headers=auth(keys.globex))
    assert [r["rule_id"] for r in other.json()] == ["default"]


async def test_destinations_are_write_only_and_checked(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    h = auth(keys.acme)
    slack = await client.post(
        "/api/v1/alerts/destinations", headers=h,
        json={"name": "ops", "kind": "slack", "url": SLACK, "default": True},
    )  # fmt: skip
    assert slack.status_code == 201, slack.text
    hook = await client.post(
        "/api/v1/alerts/destinations", headers=h,
        json={"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "x" * 20},
    )  # fmt: skip
    assert hook.status_code == 201, hook.text
    listed = await client.get("/api/v1/alerts/destinations", headers=h)
    text = listed.text
    assert "SECRETPART" not in text and "x" * 20 not in text and ":9/hook" not in text
    by_kind = {d["kind"]: d for d in listed.json()}
    assert by_kind["slack"]["masked_url"] == "https://hooks.slack.com/***"
    assert (by_kind["webhook"]["has_secret"], by_kind["slack"]["has_secret"]) == (True, False)
    assert by_kind["slack"]["default"] is True

    for body, says in [
        ({"kind": "slack", "url": "http://hooks.example.com/x"}, "must use https"),
        ({"kind": "webhook", "url": "https://169.254.169.254/x", "secret": "y" * 20}, "metadata"),
        ({"kind": "slack", "url": "https://[fe80::1]/x"}, "link-local"),
    ]:
        response = await client.post("/api/v1/alerts/destinations", headers=h, json=body)
        assert response.status_code == 400 and says in response.json()["detail"], response.text
    no_secret = await client.post(
        "/api/v1/alerts/destinations", headers=h, json={"kind": "webhook", "url": SLACK}
    )
    assert no_secret.status_code == 422 and "needs a secret" in no_secret.text

    dest_id = by_kind["slack"]["destination_id"]
    rule = await client.post("/api/v1/alerts/rules", headers=h, json={"destinations": [dest_id]})
    assert rule.status_code == 201
    assert (
        await client.delete(f"/api/v1/alerts/destinations/{dest_id}", headers=h)
    ).status_code == 204
    assert len((await client.get("/api/v1/alerts/destinations", headers=h)).json()) == 1


async def test_a_tenant_key_is_confined_to_its_tenant(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    body = {"kind": "slack", "url": SLACK}
    other = await client.post(
        "/api/v1/alerts/destinations",
        headers=auth(keys.acme),
        params={"tenant": "globex"},
        json=body,
    )
    assert other.status_code == 403
    created = await client.post(
        "/api/v1/alerts/destinations",
        headers=auth(keys.admin),
        params={"tenant": "globex"},
        json=body,
    )
    assert created.status_code == 201 and created.json()["tenant"] == "globex"
    dest_id = created.json()["destination_id"]
    assert (await client.get("/api/v1/alerts/destinations", headers=auth(keys.acme))).json() == []
    stolen = await client.delete(f"/api/v1/alerts/destinations/{dest_id}", headers=auth(keys.acme))
    assert stolen.status_code == 404
    missing = await client.get(
        "/api/v1/alerts/rules/default", headers=auth(keys.admin), params={"tenant": "nope"}
    )
    assert missing.status_code == 404
    assert (await client.get("/api/v1/alerts/rules")).status_code == 401


async def test_deliveries_lists_attempts_of_the_callers_tenant(
    client: httpx.AsyncClient, keys: Keys, db: Database
) -> None:
    store = AlertStore(db)
    for tenant, attempt, status in [
        ("acme", 1, DeliveryStatus.RETRY), ("acme", 2, DeliveryStatus.DELIVERED),
        ("globex", 1, DeliveryStatus.FAILED),
    ]:  # fmt: skip
        store.record_attempt(
            DeliveryAttempt(
                tenant,
                "a" * 32,
                "default",
                "dest_1",
                AlertKind.FIRING,
                10**18,
                10**18 + 10**9,
                attempt,
                status,
                200 if status is DeliveryStatus.DELIVERED else 500,
                12.5,
                "" if status is DeliveryStatus.DELIVERED else "boom",
                datetime.now(UTC),
            )  # fmt: skip
        )
    response = await client.get("/api/v1/alerts/deliveries", headers=auth(keys.acme))
    assert response.status_code == 200
    rows = response.json()["deliveries"]
    assert [(r["attempt"], r["status"], r["http_status"]) for r in rows] == [
        (2, "delivered", 200), (1, "retry", 500),
    ]  # fmt: skip
    assert rows[0]["window_start"] == "2001-09-09T01:46:40.000000000Z"
    everyone = await client.get("/api/v1/alerts/deliveries", headers=auth(keys.admin))
    assert len(everyone.json()["deliveries"]) == 3
    filtered = await client.get(
        "/api/v1/alerts/deliveries", headers=auth(keys.admin), params={"tenant": "globex"}
    )
    assert [r["error"] for r in filtered.json()["deliveries"]] == ["boom"]
