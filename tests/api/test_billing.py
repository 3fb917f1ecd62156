"""Invoices: exact totals against independently priced spans, unit prices, CSV, confinement."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from genai_prices import Usage, calc_price

from api.app import create_app
from api.queries.billing import DayRow, invoice_lines
from schema.clickhouse import Database
from schema.migrate import migrate
from schema.models import ModelPriceOverride, TenantSettings
from schema.prices import UnitPrices
from schema.tenants import TenantStore
from streams.unit_prices import GenaiUnitPrices
from tests.api.conftest import Keys, auth
from tests.api.rows import BASE_NS, HOUR, NS, insert_spans, llm_span, span
from tests.conftest import TEST_RETENTION_DAYS

pytestmark = pytest.mark.clickhouse

MONTH = "2025-03"
HOUSE = ModelPriceOverride(input_mtok=Decimal("1.5"), output_mtok=Decimal("2.25"))
PICO = Decimal("1e-12")
DAY = 24 * HOUR


def at(*parts: int) -> int:
    """Unix ns of a UTC time; a 7th part adds nanoseconds."""
    *fields, nanos = (*parts, 0) if len(parts) < 7 else parts
    return int(datetime(*fields, tzinfo=UTC).timestamp()) * NS + nanos


def genai_cost(model: str, when_ns: int, inp: int, out: int, cache_read: int = 0) -> Decimal:
    """Priced here with genai-prices' own calc_price, independently of llmtel's Pricer."""
    result = calc_price(
        Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cache_read),
        model_ref=model,
        provider_id="openai",
        genai_request_timestamp=datetime.fromtimestamp(when_ns / NS, tz=UTC),
    )
    return Decimal(result.total_price).quantize(PICO)


def override_cost(inp: int, out: int) -> Decimal:
    return ((HOUSE.input_mtok * inp + HOUSE.output_mtok * out) / 1_000_000).quantize(PICO)


# (timestamp, input, output, cache read) of acme's gpt-4o calls in March 2025, both edges
GPT_CALLS = [
    (at(2025, 3, 1), 1_000, 100, 200),
    (at(2025, 3, 15, 12), 123_457, 9_876, 0),
    (at(2025, 3, 31, 23, 59, 59, 999_999_999), 7, 3, 5),
]


@pytest.fixture
def march(db: Database, store: TenantStore, keys: Keys) -> Decimal:
    """acme's and globex' spans around March 2025; returns acme's March total, priced here."""
    store.update_settings("acme", TenantSettings(price_overrides={"house-llm": HOUSE}))
    rows: list[dict[str, Any]] = []
    expected = Decimal(0)
    for ts, inp, out, cache_read in GPT_CALLS:
        cost = genai_cost("gpt-4o", ts, inp, out, cache_read)
        expected += cost
        rows.append(llm_span(TenantId="acme", Timestamp=ts, input_tokens=inp, output_tokens=out,
                             LlmCacheReadTokens=cache_read, cost=cost))  # fmt: skip
    for ts, inp, out in [(at(2025, 3, 2), 1_000_000, 333_333), (at(2025, 3, 9), 17, 1)]:
        cost = override_cost(inp, out)
        expected += cost
        rows.append(llm_span(TenantId="acme", Timestamp=ts, model="house-llm", provider="acme-ai",
                             input_tokens=inp, output_tokens=out, cost=cost,
                             LlmCostSource="override"))  # fmt: skip
    attribute = Decimal("0.123456789012")
    expected += attribute
    rows += [
        llm_span(TenantId="acme", Timestamp=at(2025, 3, 3), cost=attribute,
                 LlmCostSource="attribute"),
        # unpriced: counted, cost 0
        *[llm_span(TenantId="acme", Timestamp=at(2025, 3, 4, h), model="mystery-7b",
                   provider="", cost=None) for h in range(3)],
        # never on acme's March invoice: not LLM, other months, other tenant
        span(TenantId="acme", Timestamp=at(2025, 3, 5)),
        llm_span(TenantId="acme", Timestamp=at(2025, 2, 28, 23, 59, 59, 999_999_999), cost="1"),
        llm_span(TenantId="acme", Timestamp=at(2025, 4, 1), cost="2"),
        llm_span(TenantId="globex", Timestamp=at(2025, 3, 10), cost="4"),
    ]  # fmt: skip
    insert_spans(db, rows)
    return expected


@pytest.fixture
async def priced_client(db: Database, store: TenantStore) -> AsyncIterator[httpx.AsyncClient]:
    """The API as llmtel wires it, with genai-prices' unit prices for invoices."""
    app = create_app(db, store, prices=GenaiUnitPrices())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llmtel") as http:
        yield http


async def get_invoice(
    client: httpx.AsyncClient, key: str, tenant: str, month: str = MONTH
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/billing/invoices/{tenant}", params={"month": month}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def line_of(body: dict[str, Any], model: str, source: str) -> dict[str, Any]:
    found = [x for x in body["lines"] if x["model"] == model and x["cost_source"] == source]
    assert len(found) == 1, body["lines"]
    return found[0]


async def test_total_equals_independently_priced_spans(
    priced_client: httpx.AsyncClient, keys: Keys, march: Decimal
) -> None:
    body = await get_invoice(priced_client, keys.acme, "acme")
    assert body["tenant"] == "acme" and body["month"] == MONTH and body["currency"] == "USD"
    assert Decimal(body["total_usd"]) == march
    assert body["total_usd"] == format(march.quantize(PICO), "f")  # all 12 places
    assert body["requests"] == 3 + 2 + 1 + 3
    assert body["unpriced_requests"] == 3
    assert sum(Decimal(x["subtotal_usd"]) for x in body["lines"]) == march
    assert sum(Decimal(m["subtotal_usd"]) for m in body["models"]) == march
    by_model = {m["model"]: m for m in body["models"]}
    assert set(by_model) == {"gpt-4o", "house-llm", "mystery-7b"}
    assert by_model["gpt-4o"]["requests"] == 4  # three list-priced, one reported cost


async def test_genai_prices_line_shows_the_unit_prices_that_reproduce_it(
    priced_client: httpx.AsyncClient, keys: Keys, march: Decimal
) -> None:
    line = line_of(await get_invoice(priced_client, keys.acme, "acme"), "gpt-4o", "genai-prices")
    assert (line["period_start"], line["period_end"]) == ("2025-03-01", "2025-03-31")
    assert line["requests"] == 3 and line["unpriced_requests"] == 0
    assert line["input_tokens"] == sum(c[1] for c in GPT_CALLS)
    assert line["output_tokens"] == sum(c[2] for c in GPT_CALLS)
    assert line["cache_read_tokens"] == sum(c[3] for c in GPT_CALLS)
    prices = line["unit_prices"]
    assert prices["tiered"] is False and prices["reasoning_usd_per_mtok"] is None
    uncached = line["input_tokens"] - line["cache_read_tokens"]
    from_prices = (
        uncached * Decimal(prices["input_usd_per_mtok"])
        + line["cache_read_tokens"] * Decimal(prices["cache_read_usd_per_mtok"])
        + line["output_tokens"] * Decimal(prices["output_usd_per_mtok"])
    ) / 1_000_000
    # per-span rounding to 12 places is the only difference a recomputation may show
    assert abs(from_prices - Decimal(line["subtotal_usd"])) <= len(GPT_CALLS) * PICO


async def test_override_attribute_and_unpriced_lines_are_honest(
    priced_client: httpx.AsyncClient, keys: Keys, march: Decimal
) -> None:
    body = await get_invoice(priced_client, keys.acme, "acme")
    house = line_of(body, "house-llm", "override")
    assert house["unit_prices"]["input_usd_per_mtok"] == "1.5"
    assert house["unit_prices"]["output_usd_per_mtok"] == "2.25"
    assert Decimal(house["subtotal_usd"]) == override_cost(1_000_000, 333_333) + override_cost(
        17, 1
    )
    reported = line_of(body, "gpt-4o", "attribute")
    assert reported["unit_prices"] is None and "application" in reported["price_note"]
    assert reported["subtotal_usd"] == "0.123456789012"
    unpriced = line_of(body, "mystery-7b", "")
    assert unpriced["requests"] == unpriced["unpriced_requests"] == 3
    assert unpriced["subtotal_usd"] == "0.000000000000" and unpriced["unit_prices"] is None


async def test_csv_has_the_same_lines_and_total(
    priced_client: httpx.AsyncClient, keys: Keys, march: Decimal
) -> None:
    body = await get_invoice(priced_client, keys.admin, "acme")
    response = await priced_client.get(
        "/api/v1/billing/invoices/acme",
        params={"month": MONTH},
        headers={**auth(keys.admin), "accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert (
        response.headers["content-disposition"]
        == 'attachment; filename="llmtel-invoice-acme-2025-03.csv"'
    )
    table = list(csv.DictReader(io.StringIO(response.text)))
    *lines, total = table
    assert total["model"] == "TOTAL" and total["subtotal_usd"] == body["total_usd"]
    assert [(r["model"], r["cost_source"], r["subtotal_usd"]) for r in lines] == [
        (x["model"], x["cost_source"], x["subtotal_usd"]) for x in body["lines"]
    ]
    gpt = next(r for r in lines if r["cost_source"] == "genai-prices")
    assert (
        gpt["input_usd_per_mtok"]
        == line_of(body, "gpt-4o", "genai-prices")["unit_prices"]["input_usd_per_mtok"]
    )
    # JSON stays the default, and wins when the client prefers it
    for accept in ("application/json", "text/csv;q=0.5, application/json", "*/*"):
        response = await priced_client.get(
            "/api/v1/billing/invoices/acme",
            params={"month": MONTH},
            headers={**auth(keys.admin), "accept": accept},
        )
        assert response.headers["content-type"] == "application/json", accept


async def test_tenant_keys_read_only_their_own_invoice(
    priced_client: httpx.AsyncClient, keys: Keys, march: Decimal
) -> None:
    globex = await get_invoice(priced_client, keys.globex, "globex")
    assert globex["total_usd"] == "4.000000000000"
    for key, tenant in [(keys.acme, "globex"), (keys.globex, "acme"), (keys.default, "acme")]:
        response = await priced_client.get(
            f"/api/v1/billing/invoices/{tenant}", params={"month": MONTH}, headers=auth(key)
        )
        assert response.status_code == 404, (tenant, response.text)
        assert response.json() == {"detail": f"tenant {tenant!r} does not exist"}
    # admin: any tenant, and 404 for one that does not exist
    assert (await get_invoice(priced_client, keys.admin, "globex"))["total_usd"] == globex[
        "total_usd"
    ]
    response = await priced_client.get(
        "/api/v1/billing/invoices/nobody", params={"month": MONTH}, headers=auth(keys.admin)
    )
    assert response.status_code == 404
    response = await priced_client.get("/api/v1/billing/invoices/acme")
    assert response.status_code == 401


@pytest.mark.parametrize("month", ["2025-13", "2025-3", "March", "1969-12", "2025-00"])
async def test_invalid_month_is_a_400_saying_what_to_send(
    priced_client: httpx.AsyncClient, keys: Keys, month: str
) -> None:
    response = await priced_client.get(
        "/api/v1/billing/invoices/acme", params={"month": month}, headers=auth(keys.acme)
    )
    assert response.status_code == 400
    assert f"month={month!r} is not a month: use YYYY-MM" in response.json()["detail"]


async def test_empty_month_and_no_price_lookup(
    client: httpx.AsyncClient, keys: Keys, march: Decimal
) -> None:
    """Without a PriceLookup (a bare create_app) the lines stay, unit prices are not shown."""
    empty = await get_invoice(client, keys.acme, "acme", "2024-03")
    assert (empty["lines"], empty["models"], empty["total_usd"]) == ([], [], "0.000000000000")
    body = await get_invoice(client, keys.acme, "acme")
    assert Decimal(body["total_usd"]) == march
    assert line_of(body, "gpt-4o", "genai-prices")["unit_prices"] is None
    assert line_of(body, "house-llm", "override")["unit_prices"] is not None  # tenant settings


def day_row(day: int, source: str = "genai-prices", cost: str = "1") -> DayRow:
    return DayRow(date(2025, 3, day), "m", "p", source, 1, 10, 5, 0, 0, Decimal(cost), 0)


def test_a_price_change_within_the_month_splits_the_line() -> None:
    old = UnitPrices(Decimal("1"), Decimal("2"))
    new = UnitPrices(Decimal("0.5"), Decimal("2"))
    rows = [day_row(1), day_row(2), day_row(20), day_row(21), day_row(3, "attribute")]
    rows.sort(key=lambda r: (r.model, r.provider, r.source, r.day))
    lines = invoice_lines(rows, lambda r: None if r.source == "attribute" else
                          (old if r.day < date(2025, 3, 20) else new))  # fmt: skip
    assert [(x.cost_source, x.period_start, x.period_end, x.requests, x.subtotal_usd)
            for x in lines] == [
        ("attribute", "2025-03-03", "2025-03-03", 1, "1.000000000000"),
        ("genai-prices", "2025-03-01", "2025-03-02", 2, "2.000000000000"),
        ("genai-prices", "2025-03-20", "2025-03-21", 2, "2.000000000000"),
    ]  # fmt: skip
    assert [x.unit_prices.input_usd_per_mtok if x.unit_prices else None for x in lines] == [
        None,
        "1",
        "0.5",
    ]


def billing_rows(db: Database) -> list[tuple[Any, ...]]:
    return db.query(
        "SELECT Day, TenantId, Model, CostSource, sum(Requests), sum(InputTokens), "
        "sum(CostUsd), sum(UnpricedRequests) FROM {db}.llm_billing_1d "
        "GROUP BY Day, TenantId, Model, CostSource ORDER BY Day, TenantId, Model, CostSource"
    )


def test_migration_backfills_sources_and_falls_back_to_the_rollup(db: Database) -> None:
    """0008 applied to a database that already holds spans, and rollups older than them."""
    recent = BASE_NS - DAY  # within retention
    old = BASE_NS - 5 * DAY
    insert_spans(db, [
        llm_span(TenantId="acme", Timestamp=old, cost="1.000000000001"),
        llm_span(TenantId="acme", Timestamp=old + NS, cost=None, model="mystery"),
        llm_span(TenantId="acme", Timestamp=recent, cost="0.5", LlmCostSource="attribute"),
        llm_span(TenantId="acme", Timestamp=recent + NS, cost="0.25"),
        llm_span(TenantId="globex", Timestamp=recent, cost=None, model="mystery"),
    ])  # fmt: skip
    live = billing_rows(db)
    # the old day's spans are gone (as retention drops them); only the rollup remembers
    db.command(
        "ALTER TABLE {db}.otel_traces DELETE WHERE Timestamp < fromUnixTimestamp64Nano("
        "{cut:Int64})",
        {"cut": recent - DAY},
        settings={"mutations_sync": 2},
    )
    for table in ("llm_billing_1d_mv", "llm_billing_1d", "llm_rollup_1h_mv", "llm_rollup_1h"):
        db.command(f"DROP TABLE {{db}}.{table} SYNC")
    db.command(
        "ALTER TABLE {db}.schema_migrations DELETE WHERE version = '0008'",
        settings={"mutations_sync": 2},
    )
    assert "0008_billing_and_hourly_rollups" in migrate(db, TEST_RETENTION_DAYS)
    old_day, recent_day = (datetime.fromtimestamp(t // NS, tz=UTC).date() for t in (old, recent))
    assert billing_rows(db) == [
        # the old day: one line per model, priced ones under 'unknown'
        (old_day, "acme", "gpt-4o", "unknown", 1, 100, Decimal("1.000000000001"), 0),
        (old_day, "acme", "mystery", "", 1, 100, Decimal(0), 1),
        # the days still held as spans: exactly what the live view had recorded
        *[row for row in live if row[0] == recent_day],
    ]
    assert [row for row in live if row[0] == recent_day] == [
        (recent_day, "acme", "gpt-4o", "attribute", 1, 100, Decimal("0.5"), 0),
        (recent_day, "acme", "gpt-4o", "genai-prices", 1, 100, Decimal("0.25"), 0),
        (recent_day, "globex", "mystery", "", 1, 100, Decimal(0), 1),
    ]
    # and the view is back: new spans are counted once
    insert_spans(db, [llm_span(TenantId="globex", Timestamp=recent, cost=None, model="mystery")])
    assert billing_rows(db)[-1] == (recent_day, "globex", "mystery", "", 2, 200, Decimal(0), 2)


def test_re_running_a_half_applied_0008_counts_nothing_twice(db: Database) -> None:
    insert_spans(db, [llm_span(TenantId="acme", Timestamp=BASE_NS, cost="0.5")])
    hourly = "SELECT sum(Requests), sum(CostUsd) FROM {db}.llm_rollup_1h"
    before = (billing_rows(db), db.query(hourly))
    assert before[1] == [(1, Decimal("0.5"))]
    db.command(
        "ALTER TABLE {db}.schema_migrations DELETE WHERE version = '0008'",
        settings={"mutations_sync": 2},
    )
    assert "0008_billing_and_hourly_rollups" in migrate(db, TEST_RETENTION_DAYS)
    assert (billing_rows(db), db.query(hourly)) == before


def test_genai_unit_prices_flag_tiers_and_know_only_known_models() -> None:
    lookup = GenaiUnitPrices()
    sonnet = lookup.unit_prices("anthropic", "claude-sonnet-4-5", date(2025, 11, 1))
    assert sonnet is not None and sonnet.tiered
    assert (sonnet.input_mtok, sonnet.output_mtok) == (Decimal("3"), Decimal("15"))
    # an unknown provider name falls back to the model alone, as the Pricer does
    assert lookup.unit_prices("my-proxy", "gpt-4o", date(2025, 3, 1)) == lookup.unit_prices(
        "openai", "gpt-4o", date(2025, 3, 1)
    )
    assert lookup.unit_prices("openai", "no-such-model-xyz", date(2025, 3, 1)) is None
    assert lookup.unit_prices("openai", "", date(2025, 3, 1)) is None
