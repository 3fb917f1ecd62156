"""Usage from the rollup: grouping, exact cost strings, scoping, default window."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from api.params import format_day, format_seconds
from schema.clickhouse import Database
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, HOUR, MS, NS, insert_spans, llm_span, span

pytestmark = pytest.mark.clickhouse

DAY = 24 * HOUR
WINDOW = {"start": str(BASE_NS - 2 * DAY), "end": str(BASE_NS + HOUR)}


async def usage(client: httpx.AsyncClient, key: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/usage", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def llm_traffic(db: Database) -> None:
    yesterday = BASE_NS - DAY
    insert_spans(db, [
        # acme, today, hour 0: 3 gpt-4o (one error) + 1 unpriced house model, service chat
        *[llm_span(TenantId="acme", Timestamp=BASE_NS + i * NS, cost="0.1",
                   ServiceName="chat", Duration=(i + 1) * 100 * MS) for i in range(2)],
        llm_span(TenantId="acme", Timestamp=BASE_NS + 3 * NS, cost="0.2", ServiceName="chat",
                 StatusCode="Error", LlmCacheReadTokens=40, LlmReasoningTokens=5),
        llm_span(TenantId="acme", Timestamp=BASE_NS + 4 * NS, cost=None, model="house",
                 provider="in-house", ServiceName="chat"),
        # acme, today, 30 min later: claude on service batch
        llm_span(TenantId="acme", Timestamp=BASE_NS + HOUR // 2, cost="0.000000000003",
                 model="claude-x", provider="anthropic", ServiceName="batch",
                 LlmTimeToFirstTokenMs=250.0),
        # acme, yesterday
        llm_span(TenantId="acme", Timestamp=yesterday, cost="1.000000000001",
                 ServiceName="chat"),
        # not LLM: never counted
        span(TenantId="acme", Timestamp=BASE_NS),
        # globex
        llm_span(TenantId="globex", Timestamp=BASE_NS, cost="5", model="house-model-x",
                 provider="in-house", ServiceName="billing", input_tokens=7, output_tokens=3),
    ])  # fmt: skip


async def test_totals_are_exact_and_tenant_scoped(
    client: httpx.AsyncClient, keys: Keys, llm_traffic: None
) -> None:
    body = await usage(client, keys.acme, **WINDOW)
    totals = body["totals"]
    assert totals["requests"] == 6
    assert totals["errors"] == 1
    assert totals["input_tokens"] == 600 and totals["output_tokens"] == 120
    assert totals["cache_read_tokens"] == 40 and totals["reasoning_tokens"] == 5
    assert totals["cost_usd"] == "1.400000000004"
    assert Decimal(totals["cost_usd"]) == Decimal("0.1") * 2 + Decimal("0.2") + Decimal(
        "0.000000000003"
    ) + Decimal("1.000000000001")
    assert totals["unpriced_requests"] == 1
    assert totals["duration_p50_ms"] is not None and totals["duration_p50_ms"] > 0
    assert totals["time_to_first_token_p50_ms"] == 250.0
    assert body["tenant"] == "acme" and body["group_by"] == []
    assert body["rows"] == [{**totals, "tenant": None, "model": None, "service": None,
                             "provider": None, "day": None, "hour": None}]  # fmt: skip

    globex = (await usage(client, keys.globex, **WINDOW))["totals"]
    assert (globex["requests"], globex["input_tokens"], globex["cost_usd"]) == (
        1,
        7,
        "5.000000000000",
    )
    everyone = (await usage(client, keys.admin, **WINDOW))["totals"]
    assert everyone["requests"] == 7 and everyone["cost_usd"] == "6.400000000004"
    only_globex = (await usage(client, keys.admin, tenant="globex", **WINDOW))["totals"]
    assert only_globex["requests"] == 1
    forbidden = await client.get(
        "/api/v1/usage", params={"tenant": "globex"}, headers=auth(keys.acme)
    )
    assert forbidden.status_code == 403


def by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], tuple[int, str]]:
    return {tuple(r[k] for k in keys): (r["requests"], r["cost_usd"]) for r in rows}


async def test_group_by_combinations(
    client: httpx.AsyncClient, keys: Keys, llm_traffic: None
) -> None:
    rows = (await usage(client, keys.acme, group_by="model", **WINDOW))["rows"]
    assert by(rows, "model") == {
        ("claude-x",): (1, "0.000000000003"),
        ("gpt-4o",): (4, "1.400000000001"),
        ("house",): (1, "0.000000000000"),
    }
    assert {r["unpriced_requests"] for r in rows if r["model"] == "house"} == {1}

    rows = (await usage(client, keys.acme, group_by="service,provider", **WINDOW))["rows"]
    assert by(rows, "service", "provider") == {
        ("batch", "anthropic"): (1, "0.000000000003"),
        ("chat", "in-house"): (1, "0.000000000000"),
        ("chat", "openai"): (4, "1.400000000001"),
    }

    today, yesterday = format_day(BASE_NS // NS), format_day((BASE_NS - DAY) // NS)
    rows = (await usage(client, keys.acme, group_by="day", **WINDOW))["rows"]
    assert by(rows, "day") == {(yesterday,): (1, "1.000000000001"),
                               (today,): (5, "0.400000000003")}  # fmt: skip

    rows = (await usage(client, keys.acme, group_by="day,model", **WINDOW))["rows"]
    assert by(rows, "day", "model")[(today, "gpt-4o")] == (3, "0.400000000000")
    assert [r["day"] for r in rows] == sorted(r["day"] for r in rows)

    hour0 = format_seconds(BASE_NS // NS)
    rows = (await usage(client, keys.acme, group_by="hour", **WINDOW))["rows"]
    assert by(rows, "hour")[(hour0,)] == (5, "0.400000000003")
    assert all(r["model"] is None for r in rows)

    rows = (await usage(client, keys.admin, group_by="tenant,model", **WINDOW))["rows"]
    assert by(rows, "tenant", "model")[("globex", "house-model-x")] == (1, "5.000000000000")

    empty = await usage(client, keys.acme, group_by="model", start=str(BASE_NS + 2 * HOUR),
                        end=str(BASE_NS + 3 * HOUR))  # fmt: skip
    assert empty["rows"] == []
    assert empty["totals"]["requests"] == 0 and empty["totals"]["cost_usd"] == "0.000000000000"
    assert empty["totals"]["duration_p50_ms"] is None


async def test_usage_reads_the_rollup_not_raw_spans(
    db: Database, client: httpx.AsyncClient, keys: Keys, llm_traffic: None
) -> None:
    before = await usage(client, keys.acme, group_by="model,service", **WINDOW)
    db.command("TRUNCATE TABLE {db}.otel_traces")
    after = await usage(client, keys.acme, group_by="model,service", **WINDOW)
    assert after == before


async def test_bounds_round_to_minutes_and_default_to_the_last_day(
    db: Database, client: httpx.AsyncClient, keys: Keys
) -> None:
    now = time.time_ns()
    insert_spans(db, [llm_span(TenantId="acme", Timestamp=now - 60 * NS, cost="0.25"),
                      llm_span(TenantId="acme", Timestamp=now - 2 * DAY, cost="7")])  # fmt: skip
    body = await usage(client, keys.acme)
    assert body["totals"]["requests"] == 1 and body["totals"]["cost_usd"] == "0.250000000000"
    assert body["end"].endswith(":00Z") and body["start"].endswith(":00Z")

    minute = BASE_NS + 17 * 60 * NS
    insert_spans(db, [llm_span(TenantId="globex", Timestamp=minute + 30 * NS)])
    inside = await usage(client, keys.globex, start=str(minute + 45 * NS),
                         end=str(minute + 46 * NS))  # fmt: skip
    assert inside["totals"]["requests"] == 1  # the whole minute is counted
    assert inside["start"] == format_seconds(minute // NS)
    assert inside["end"] == format_seconds(minute // NS + 60)


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"group_by": "model,colour"}, "cannot group by colour"),
        ({"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"}, "before end"),
        ({"start": "soon"}, "is not a time"),
    ],
)
async def test_bad_parameters_are_explained(
    client: httpx.AsyncClient, keys: Keys, params: dict[str, str], detail: str
) -> None:
    response = await client.get("/api/v1/usage", params=params, headers=auth(keys.acme))
    assert response.status_code == 400
    assert detail in response.json()["detail"]
