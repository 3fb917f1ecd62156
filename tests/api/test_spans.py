"""Span listing: filters, tenant scoping and cursor paging without gaps or repeats."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.params import format_ns
from schema.clickhouse import Database
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, MS, NS, insert_spans, llm_span, span

pytestmark = pytest.mark.clickhouse


async def get_spans(client: httpx.AsyncClient, key: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/spans", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def mixed(db: Database) -> None:
    insert_spans(db, [
        llm_span(TenantId="acme", Timestamp=BASE_NS + 1 * NS, cost="0.5", Duration=900 * MS,
                 ServiceName="chat"),
        llm_span(TenantId="acme", Timestamp=BASE_NS + 2 * NS, cost="0.01", Duration=50 * MS,
                 ServiceName="chat", model="claude-x", provider="anthropic",
                 StatusCode="Error"),
        llm_span(TenantId="acme", Timestamp=BASE_NS + 3 * NS, cost=None, ServiceName="batch",
                 StatusCode="Ok"),
        span(TenantId="acme", Timestamp=BASE_NS + 4 * NS, ServiceName="web"),
        llm_span(TenantId="globex", Timestamp=BASE_NS + 5 * NS, cost="9", ServiceName="chat"),
    ])  # fmt: skip


async def test_newest_first_and_tenant_scoped(
    client: httpx.AsyncClient, keys: Keys, mixed: None
) -> None:
    acme = await get_spans(client, keys.acme)
    assert [s["service"] for s in acme["spans"]] == ["web", "batch", "chat", "chat"]
    assert {s["tenant"] for s in acme["spans"]} == {"acme"}
    assert acme["next_cursor"] is None
    globex = await get_spans(client, keys.globex)
    assert [s["llm"]["cost_usd"] for s in globex["spans"]] == ["9.000000000000"]
    everyone = await get_spans(client, keys.admin)
    assert len(everyone["spans"]) == 5
    only_globex = await get_spans(client, keys.admin, tenant="globex")
    assert len(only_globex["spans"]) == 1
    forbidden = await client.get(
        "/api/v1/spans", params={"tenant": "globex"}, headers=auth(keys.acme)
    )
    assert forbidden.status_code == 403
    own = await get_spans(client, keys.acme, tenant="acme")
    assert len(own["spans"]) == 4


@pytest.mark.parametrize(
    ("params", "services"),
    [
        ({"service": "chat"}, ["chat", "chat"]),
        ({"model": "claude-x"}, ["chat"]),
        ({"model": "gpt-4o"}, ["batch", "chat"]),
        ({"status": "error"}, ["chat"]),
        ({"status": "ok"}, ["batch"]),
        ({"status": "unset"}, ["web", "chat"]),
        ({"min_cost": "0.02"}, ["chat"]),
        ({"min_cost": "0"}, ["chat", "chat"]),
        ({"min_duration_ms": "100"}, ["chat"]),
        ({"start": str(BASE_NS + 2 * NS), "end": str(BASE_NS + 4 * NS)}, ["batch", "chat"]),
        ({"start": format_ns(BASE_NS + 3 * NS)}, ["web", "batch"]),
        ({"end": format_ns(BASE_NS + 2 * NS).replace("Z", "+00:00")}, ["chat"]),
        ({"service": "chat", "status": "error", "model": "claude-x"}, ["chat"]),
        ({"service": "nothing"}, []),
    ],
)
async def test_filters(
    client: httpx.AsyncClient,
    keys: Keys,
    mixed: None,
    params: dict[str, str],
    services: list[str],
) -> None:
    body = await get_spans(client, keys.acme, **params)
    assert [s["service"] for s in body["spans"]] == services


async def test_llm_fields_are_typed(client: httpx.AsyncClient, keys: Keys, mixed: None) -> None:
    spans = (await get_spans(client, keys.acme))["spans"]
    web, batch = spans[0], spans[1]
    assert web["llm"] is None
    assert batch["llm"] == {
        "provider": "openai",
        "operation": "chat",
        "request_model": "gpt-4o",
        "response_model": "gpt-4o",
        "model": "gpt-4o",
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_read_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": None,
        "cost_source": "",
        "time_to_first_token_ms": None,
    }
    assert spans[3]["llm"]["cost_usd"] == "0.500000000000"
    assert spans[3]["start_time"] == format_ns(BASE_NS + NS)


async def test_cursor_pages_have_no_gaps_or_repeats_with_equal_timestamps(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    same_instant = BASE_NS + 7 * NS
    rows = [span(TenantId="acme", Timestamp=same_instant) for _ in range(23)]
    rows += [span(TenantId="acme", Timestamp=BASE_NS + i * NS) for i in range(10)]
    insert_spans(db, rows[:15])
    insert_spans(db, rows[15:])
    expected = sorted(rows, key=lambda r: (-r["Timestamp"], r["SpanId"], r["TraceId"]))

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = await get_spans(client, keys.acme, **params)
        seen += [s["span_id"] for s in body["spans"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [r["SpanId"] for r in expected]
    assert len(set(seen)) == 33
    assert pages == 5

    # a cursor also pages a filtered listing
    window = {"start": str(same_instant), "end": str(same_instant + 1)}
    first = await get_spans(client, keys.acme, limit=20, **window)
    rest = await get_spans(client, keys.acme, limit=20, cursor=first["next_cursor"], **window)
    at_instant = [r["SpanId"] for r in expected if r["Timestamp"] == same_instant]
    assert [s["span_id"] for s in first["spans"] + rest["spans"]] == at_instant
    assert len(at_instant) == 24 and rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"cursor": "not-a-cursor"}, 400, "cursor is invalid"),
        ({"cursor": "WzEsMl0"}, 400, "cursor is invalid"),  # [1,2]
        ({"start": "yesterday"}, 400, "is not a time"),
        ({"end": "2024-13-01T00:00:00Z"}, 400, "is not a valid time"),
        ({"limit": "0"}, 422, None),
        ({"limit": "1001"}, 422, None),
        ({"status": "broken"}, 422, None),
        ({"min_cost": "-1"}, 422, None),
    ],
)
async def test_bad_parameters_are_explained(
    client: httpx.AsyncClient, keys: Keys, params: dict[str, str], status: int, detail: str | None
) -> None:
    response = await client.get("/api/v1/spans", params=params, headers=auth(keys.acme))
    assert response.status_code == status
    if detail:
        assert detail in response.json()["detail"]


async def test_limit_bounds_the_page(db: Database, client: httpx.AsyncClient, keys: Keys) -> None:
    insert_spans(db, [span(TenantId="acme") for _ in range(120)])
    default = await get_spans(client, keys.acme)
    assert len(default["spans"]) == 100 and default["next_cursor"]
    biggest = await get_spans(client, keys.acme, limit=1000)
    assert len(biggest["spans"]) == 120 and biggest["next_cursor"] is None
