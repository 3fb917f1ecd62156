"""A trace by id: every span, only for its own tenant, through the time-range lookup."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from schema.clickhouse import Database
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, HOUR, MS, insert_spans, llm_span, span, span_id, trace_id

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def trace(db: Database) -> str:
    """A three-span acme trace crossing a day boundary, next to other tenants' data."""
    tid = trace_id()
    root = span_id()
    insert_spans(db, [
        span(TenantId="acme", TraceId=tid, SpanId=root, Timestamp=BASE_NS - 24 * HOUR,
             SpanName="POST /chat", Duration=25 * HOUR),
    ])  # fmt: skip
    nested: dict[str, Any] = {  # dotted column names: not keyword-argument names
        "Events.Timestamp": [BASE_NS + 6 * MS], "Events.Name": ["retry"],
        "Events.Attributes": [{"attempt": "2"}],
        "Links.TraceId": [trace_id()], "Links.SpanId": [span_id()],
        "Links.TraceState": ["k=v"], "Links.Attributes": [{"why": "batch"}],
    }  # fmt: skip
    insert_spans(db, [
        llm_span(
            TenantId="acme", TraceId=tid, ParentSpanId=root, Timestamp=BASE_NS + 5 * MS,
            cost="0.0025", LlmTimeToFirstTokenMs=120.5, StatusCode="Error",
            StatusMessage="rate limited", **nested,
        ),
        span(TenantId="acme", TraceId=tid, ParentSpanId=root, Timestamp=BASE_NS + 9 * MS),
        span(TenantId="globex", Timestamp=BASE_NS + 5 * MS),
    ])  # fmt: skip
    return tid


async def test_own_trace_has_every_span_in_start_order(
    client: httpx.AsyncClient, keys: Keys, trace: str
) -> None:
    response = await client.get(f"/api/v1/traces/{trace}", headers=auth(keys.acme))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["trace_id"] == trace
    spans = body["spans"]
    assert [s["trace_id"] for s in spans] == [trace] * 3
    assert [s["start_time_unix_nano"] for s in spans] == sorted(
        s["start_time_unix_nano"] for s in spans
    )
    root, llm, plain = spans
    assert root["name"] == "POST /chat" and root["llm"] is None
    assert llm["parent_span_id"] == root["span_id"]
    assert llm["status_code"] == "Error" and llm["status_message"] == "rate limited"
    assert llm["llm"]["cost_usd"] == "0.002500000000"
    assert Decimal(llm["llm"]["cost_usd"]) == Decimal("0.0025")
    assert llm["llm"]["model"] == "gpt-4o" and llm["llm"]["input_tokens"] == 100
    assert llm["llm"]["time_to_first_token_ms"] == 120.5
    assert llm["events"] == [{
        "time": llm["events"][0]["time"], "time_unix_nano": BASE_NS + 6 * MS,
        "name": "retry", "attributes": {"attempt": "2"},
    }]  # fmt: skip
    assert llm["events"][0]["time"].endswith(".006000000Z")
    assert llm["links"][0]["trace_state"] == "k=v"
    assert llm["attributes"]["gen_ai.request.model"] == "gpt-4o"
    assert llm["resource_attributes"] == {"service.name": "web"}
    assert plain["duration_ms"] == 10.0


async def test_foreign_or_missing_trace_is_404_and_admin_sees_all(
    client: httpx.AsyncClient, keys: Keys, trace: str
) -> None:
    foreign = await client.get(f"/api/v1/traces/{trace}", headers=auth(keys.globex))
    assert foreign.status_code == 404
    assert foreign.json() == {"detail": f"trace {trace} not found"}
    missing = await client.get(f"/api/v1/traces/{trace_id()}", headers=auth(keys.acme))
    assert missing.status_code == 404
    admin = await client.get(f"/api/v1/traces/{trace.upper()}", headers=auth(keys.admin))
    assert admin.status_code == 200 and len(admin.json()["spans"]) == 3
    scoped = await client.get(
        f"/api/v1/traces/{trace}", params={"tenant": "globex"}, headers=auth(keys.admin)
    )
    assert scoped.status_code == 404


@pytest.mark.parametrize("bad", ["xyz", "0" * 32, "a" * 31, "g" * 32, "a" * 33])
async def test_malformed_trace_id_is_400(client: httpx.AsyncClient, keys: Keys, bad: str) -> None:
    response = await client.get(f"/api/v1/traces/{bad}", headers=auth(keys.acme))
    assert response.status_code == 400
    assert "32 hexadecimal digits" in response.json()["detail"]


async def test_trace_needs_a_key(client: httpx.AsyncClient, keys: Keys, trace: str) -> None:
    assert (await client.get(f"/api/v1/traces/{trace}")).status_code == 401


async def test_admin_sees_a_trace_shared_by_two_tenants_whole(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    """The span read is narrowed to the tenants the trace-id table names: all of them."""
    tid = trace_id()
    insert_spans(db, [
        span(TenantId="acme", TraceId=tid, Timestamp=BASE_NS - 30 * HOUR),
        span(TenantId="globex", TraceId=tid, Timestamp=BASE_NS + 7 * MS),
        span(TenantId="globex", TraceId=tid, Timestamp=BASE_NS + 8 * MS),
        span(TenantId="acme", TraceId=trace_id(), Timestamp=BASE_NS + 7 * MS),
    ])  # fmt: skip
    admin = await client.get(f"/api/v1/traces/{tid}", headers=auth(keys.admin))
    assert admin.status_code == 200, admin.text
    assert [s["tenant"] for s in admin.json()["spans"]] == ["acme", "globex", "globex"]
    acme = await client.get(f"/api/v1/traces/{tid}", headers=auth(keys.acme))
    assert [s["tenant"] for s in acme.json()["spans"]] == ["acme"]
    globex = await client.get(f"/api/v1/traces/{tid}", headers=auth(keys.globex))
    assert [s["start_time_unix_nano"] for s in globex.json()["spans"]] == [
        BASE_NS + 7 * MS,
        BASE_NS + 8 * MS,
    ]
