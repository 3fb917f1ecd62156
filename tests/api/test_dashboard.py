"""The dashboard overview: figures from the rollup, zero-filled series, scoping, budgets."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from api.params import format_seconds
from schema.clickhouse import Database
from schema.models import TenantSettings
from schema.tenants import TenantStore
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, HOUR, MS, NS, insert_spans, llm_span, span

pytestmark = pytest.mark.clickhouse

MINUTE = 60 * NS
# ten minutes from BASE_NS (a whole hour two hours ago)
WINDOW = {"start": str(BASE_NS), "end": str(BASE_NS + 10 * MINUTE)}
BASE_S = BASE_NS // NS


async def overview(client: httpx.AsyncClient, key: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/dashboard/overview", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def traffic(db: Database) -> None:
    insert_spans(db, [
        # acme, minute 0: 10 gpt-4o calls of 100..1000 ms, the last two errors, TTFT 50..500 ms
        *[llm_span(TenantId="acme", Timestamp=BASE_NS + i * NS, cost="0.01",
                   Duration=(i + 1) * 100 * MS, LlmTimeToFirstTokenMs=(i + 1) * 50.0,
                   StatusCode="Error" if i >= 8 else "Ok", LlmCacheReadTokens=10,
                   LlmReasoningTokens=2)
          for i in range(10)],
        # acme, minute 3: two claude calls, more expensive in total, one unpriced house call
        *[llm_span(TenantId="acme", Timestamp=BASE_NS + 3 * MINUTE + i * NS, cost="0.5",
                   model="claude-x", provider="anthropic", Duration=200 * MS)
          for i in range(2)],
        llm_span(TenantId="acme", Timestamp=BASE_NS + 3 * MINUTE, cost=None, model="house"),
        # acme outside the window, and a non-LLM span inside: not counted
        llm_span(TenantId="acme", Timestamp=BASE_NS + 10 * MINUTE, cost="9"),
        llm_span(TenantId="acme", Timestamp=BASE_NS - 1, cost="9"),
        span(TenantId="acme", Timestamp=BASE_NS),
        # globex: fewer requests, higher cost
        llm_span(TenantId="globex", Timestamp=BASE_NS + 5 * MINUTE, cost="3", model="big"),
    ])  # fmt: skip


async def test_tenant_overview_figures(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    body = await overview(client, keys.acme, **WINDOW)
    assert body["tenant"] == "acme" and body["step_seconds"] == 60
    assert (body["start"], body["end"]) == (format_seconds(BASE_S), format_seconds(BASE_S + 600))
    assert (body["requests"], body["errors"], body["unpriced_requests"]) == (13, 2, 1)
    assert body["error_rate"] == pytest.approx(2 / 13)
    assert body["cost_usd"] == "1.100000000000"
    assert body["tokens"] == {"input": 1300, "output": 260, "cache_read": 100, "reasoning": 20}
    latency = body["latency"]
    # 100..1000 ms, 2 x 200 ms and the house call's 10 ms: the median is 400 ms
    assert latency["p50_ms"] == pytest.approx(400, rel=0.1)
    # the p99 is the 900 or the 1000 ms call, within the sketch's 1 % relative accuracy
    assert 900 * 0.99 <= latency["p99_ms"] <= 1000 * 1.01
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    ttft = body["time_to_first_token"]
    assert ttft["p50_ms"] == pytest.approx(275, rel=0.1)  # only the 10 calls that have one
    assert 450 * 0.99 <= ttft["p99_ms"] <= 500 * 1.01  # one of the two slowest, within 1 %
    assert body["top_tenants"] is None  # admin only
    assert body["budgets"] == []
    assert [(m["model"], m["requests"], m["cost_usd"]) for m in body["top_models"]] == [
        ("claude-x", 2, "1.000000000000"),
        ("gpt-4o", 10, "0.100000000000"),
        ("house", 1, "0.000000000000"),
    ]
    assert body["top_models"][1]["errors"] == 2


async def test_series_has_every_bucket(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    body = await overview(client, keys.acme, **WINDOW)
    series = body["series"]
    assert [p["time"] for p in series] == [format_seconds(BASE_S + 60 * i) for i in range(10)]
    assert [p["requests"] for p in series] == [10, 0, 0, 3, 0, 0, 0, 0, 0, 0]
    assert [p["errors"] for p in series][:4] == [2, 0, 0, 0]
    assert series[3]["cost_usd"] == "1.000000000000" and series[1]["cost_usd"] == "0.000000000000"
    assert series[0]["cost_usd"] == "0.100000000000"  # every place, as format_cost writes
    assert sum(Decimal(p["cost_usd"]) for p in series) == Decimal(body["cost_usd"])
    assert series[0]["requests_per_minute"] == 10.0
    five = await overview(client, keys.acme, step="300", **WINDOW)
    assert [(p["requests"], p["requests_per_minute"]) for p in five["series"]] == [
        (13, 2.6),
        (0, 0.0),
    ]


async def test_admin_sees_top_tenants_and_may_filter(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    body = await overview(client, keys.admin, **WINDOW)
    assert body["tenant"] is None and body["requests"] == 14
    assert body["top_tenants"] == [
        {"tenant": "globex", "requests": 1, "cost_usd": "3.000000000000"},
        {"tenant": "acme", "requests": 13, "cost_usd": "1.100000000000"},
    ]
    assert (await overview(client, keys.admin, top="1", **WINDOW))["top_models"][0]["model"] == (
        "big"
    )
    only = await overview(client, keys.admin, tenant="globex", **WINDOW)
    assert (only["tenant"], only["requests"], only["top_tenants"]) == (
        "globex",
        1,
        [{"tenant": "globex", "requests": 1, "cost_usd": "3.000000000000"}],
    )


async def test_tenant_keys_are_confined(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    response = await client.get(
        "/api/v1/dashboard/overview", params={"tenant": "globex", **WINDOW}, headers=auth(keys.acme)
    )
    assert response.status_code == 403
    globex = await overview(client, keys.globex, **WINDOW)
    assert (globex["requests"], globex["cost_usd"]) == (1, "3.000000000000")
    assert [m["model"] for m in globex["top_models"]] == ["big"]
    empty = await overview(client, keys.default, **WINDOW)
    assert (empty["requests"], empty["error_rate"], empty["latency"]["p50_ms"]) == (0, None, None)
    assert empty["top_models"] == [] and len(empty["series"]) == 10
    assert (await client.get("/api/v1/dashboard/overview")).status_code == 401


async def test_default_range_is_the_last_24_hours(
    client: httpx.AsyncClient, keys: Keys, traffic: None
) -> None:
    before_s = time.time_ns() // NS
    body = await overview(client, keys.acme)
    # BASE_NS is two hours ago: every acme call of the fixture is within the last 24 h
    assert body["requests"] == 15 and body["step_seconds"] == 60
    series = body["series"]
    assert series[0]["time"] == body["start"] <= format_seconds(before_s - 24 * 3600)
    assert series[-1]["time"] >= format_seconds(before_s // 60 * 60)
    assert len(series) in (1440, 1441)  # a start within a minute adds a partial bucket
    assert sum(p["requests"] for p in series) == 15


async def test_budget_use_is_shown_to_the_tenant_and_the_admin(
    db: Database, client: httpx.AsyncClient, store: TenantStore, keys: Keys
) -> None:
    store.update_settings("acme", TenantSettings(monthly_budget_usd=Decimal("4")))
    now = time.time_ns()
    insert_spans(db, [llm_span(TenantId="acme", Timestamp=now - NS, cost="1"),
                      llm_span(TenantId="globex", Timestamp=now - NS, cost="1")])  # fmt: skip
    mine = (await overview(client, keys.acme))["budgets"]
    month = format_seconds(now // NS)[:7]
    assert mine == [
        {"tenant": "acme", "month": month, "budget_usd": "4", "spent_usd": "1.000000000000",
         "used_ratio": 0.25}
    ]  # fmt: skip
    assert (await overview(client, keys.globex))["budgets"] == []  # no budget set
    assert (await overview(client, keys.admin))["budgets"] == mine


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"step": "90"}, "step=90 is not a whole number of minutes"),
        ({"step": "0"}, "step=0 is not a whole number of minutes"),
        ({"start": str(BASE_NS - 30 * 24 * HOUR), "step": "60"}, "more than 11000 buckets"),
        ({"start": str(BASE_NS), "end": str(BASE_NS)}, "start must be before end"),
        ({"start": "yesterday"}, "start='yesterday' is not a time"),
    ],
)
async def test_bad_parameters_are_a_400(
    client: httpx.AsyncClient, keys: Keys, params: dict[str, str], message: str
) -> None:
    response = await client.get(
        "/api/v1/dashboard/overview", params=params, headers=auth(keys.acme)
    )
    assert response.status_code == 400
    assert message in response.json()["detail"]


async def test_whole_hours_and_partial_edges_add_up(
    client: httpx.AsyncClient, db: Database, keys: Keys
) -> None:
    """A range of whole hours plus partial edge hours: hourly and minute rollups combined."""
    start, end = BASE_NS - 30 * MINUTE, BASE_NS + 70 * MINUTE  # [h-1 +30m, h+1 +10m)
    inside = [BASE_NS - 30 * MINUTE, BASE_NS - MINUTE, BASE_NS, BASE_NS + 59 * MINUTE,
              BASE_NS + 60 * MINUTE, BASE_NS + 69 * MINUTE]  # fmt: skip
    outside = [BASE_NS - 31 * MINUTE, BASE_NS + 70 * MINUTE]
    insert_spans(db, [
        *[llm_span(TenantId="acme", Timestamp=ts, cost=f"0.00{i + 1}", Duration=(i + 1) * 1000 * MS)
          for i, ts in enumerate(inside)],
        *[llm_span(TenantId="acme", Timestamp=ts, cost="9", Duration=60_000 * MS)
          for ts in outside],
    ])  # fmt: skip
    body = await overview(client, keys.acme, start=str(start), end=str(end))
    assert body["requests"] == len(inside)
    assert body["cost_usd"] == "0.021000000000"  # 0.001 + ... + 0.006
    assert body["latency"]["p99_ms"] <= 6000  # the 60 s calls outside stay outside
    assert body["latency"]["p50_ms"] == pytest.approx(3500, rel=0.15)
    assert [(m["model"], m["requests"]) for m in body["top_models"]] == [("gpt-4o", 6)]
    admin = await overview(client, keys.admin, start=str(start), end=str(end))
    assert admin["top_tenants"] == [{"tenant": "acme", "requests": 6, "cost_usd": "0.021000000000"}]
    assert sum(p["requests"] for p in body["series"]) == len(inside)


async def test_admin_quantiles_over_whole_hours_merge_every_tenant(
    client: httpx.AsyncClient, db: Database, keys: Keys
) -> None:
    """From 6 h on the admin's quantiles come from the sketches merged across tenants
    (llm_latency_sketch_all_1h): they must describe every tenant's calls together."""
    insert_spans(db, [
        *[llm_span(TenantId="acme", Timestamp=BASE_NS + i * NS, Duration=100 * MS,
                   LlmTimeToFirstTokenMs=20.0) for i in range(300)],
        *[llm_span(TenantId="globex", Timestamp=BASE_NS - HOUR + i * NS, Duration=2000 * MS,
                   LlmTimeToFirstTokenMs=400.0) for i in range(100)],
    ])  # fmt: skip
    admin = await overview(client, keys.admin)  # the last 24 h
    assert admin["quantiles_start"].endswith(":00:00Z") and admin["requests"] == 400
    assert admin["latency"]["p50_ms"] == pytest.approx(100, rel=0.02)
    assert admin["latency"]["p95_ms"] == pytest.approx(2000, rel=0.02)
    assert admin["time_to_first_token"]["p95_ms"] == pytest.approx(400, rel=0.02)
    globex = await overview(client, keys.admin, tenant="globex")
    assert globex["latency"]["p50_ms"] == pytest.approx(2000, rel=0.02)
    # a short range still merges per-tenant minute states, to the same answer
    short = await overview(
        client, keys.admin, start=str(BASE_NS - HOUR), end=str(BASE_NS + 10 * MINUTE)
    )
    assert short["quantiles_start"] == short["start"] and short["requests"] == 400
    assert short["latency"]["p95_ms"] == pytest.approx(2000, rel=0.02)
