"""Monthly invoices per tenant, from the per-day billing rollup `llm_billing_1d`.

Subtotals are sums of the spans' stored costs (exact Decimal(38, 12)), never costs recomputed
from unit prices: tiered prices, cost attributes and rounding per span make a recomputation
differ. The unit prices are shown so a reader can see which price list applied.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Context, Decimal
from typing import Any

from api.models import Invoice, InvoiceLine, ModelSubtotal, UnitPricesOut
from api.params import format_cost
from api.queries.months import month_name, next_month
from schema.clickhouse import Database
from schema.models import TenantSettings
from schema.prices import PriceLookup, UnitPrices, override_unit_prices

# exact sums of Decimal(38, 12) values (the default context keeps 28 digits)
_SUM = Context(prec=80)

SOURCE_GENAI_PRICES = "genai-prices"
SOURCE_OVERRIDE = "override"
SOURCE_ATTRIBUTE = "attribute"
SOURCE_UNKNOWN = "unknown"
SOURCE_NONE = ""

_NOTES = {
    SOURCE_GENAI_PRICES: "genai-prices list price",
    SOURCE_OVERRIDE: "tenant price override (as set now)",
    SOURCE_ATTRIBUTE: "cost reported by the application (span cost attribute)",
    SOURCE_UNKNOWN: "priced before llmtel recorded cost sources",
    SOURCE_NONE: "unpriced: no known price for this model",
}


@dataclass(frozen=True, slots=True)
class DayRow:
    """One day of one (model, provider, cost source) as the billing rollup holds it."""

    day: date
    model: str
    provider: str
    source: str
    requests: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    reasoning_tokens: int
    cost: Decimal
    unpriced: int


PricesFor = Callable[[DayRow], UnitPrices | None]


def read_days(db: Database, tenant: str, first_day: date) -> list[DayRow]:
    """The tenant's billing rows of the month starting on `first_day`, in line order."""
    rows = db.query(
        "SELECT Day, Model, Provider, CostSource, sum(Requests), sum(InputTokens), "
        "sum(OutputTokens), sum(CacheReadTokens), sum(ReasoningTokens), sum(CostUsd), "
        "sum(UnpricedRequests) FROM {db}.llm_billing_1d "
        "WHERE TenantId = {tenant:String} AND Day >= {start:Date} AND Day < {end:Date} "
        "GROUP BY Day, Model, Provider, CostSource "
        "ORDER BY Model, Provider, CostSource, Day",
        {"tenant": tenant, "start": first_day, "end": next_month(first_day)},
    )
    return [
        DayRow(day, str(model), str(provider), str(source), int(requests), int(inp), int(out),
               int(cache_read), int(reasoning), Decimal(cost), int(unpriced))
        for (day, model, provider, source, requests, inp, out, cache_read, reasoning, cost,
             unpriced) in rows
    ]  # fmt: skip


def price_resolver(settings: TenantSettings, lookup: PriceLookup | None) -> PricesFor:
    """Unit prices per day row: the tenant's override, genai-prices' list, or none."""

    def prices_for(row: DayRow) -> UnitPrices | None:
        if row.source == SOURCE_OVERRIDE:
            override = settings.price_overrides.get(row.model)
            return None if override is None else override_unit_prices(override)
        if row.source == SOURCE_GENAI_PRICES and lookup is not None:
            return lookup.unit_prices(row.provider, row.model, row.day)
        return None

    return prices_for


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _prices_out(prices: UnitPrices | None) -> UnitPricesOut | None:
    if prices is None:
        return None
    return UnitPricesOut(
        input_usd_per_mtok=_money(prices.input_mtok),
        cache_read_usd_per_mtok=_money(prices.cache_read_mtok),
        output_usd_per_mtok=_money(prices.output_mtok),
        reasoning_usd_per_mtok=_money(prices.reasoning_mtok),
        tiered=prices.tiered,
        time_of_day=prices.time_of_day,
    )


def _line(days: Sequence[DayRow], prices: UnitPrices | None) -> InvoiceLine:
    first = days[0]
    note = _NOTES.get(first.source, f"cost source {first.source!r}")
    if first.source == SOURCE_OVERRIDE and prices is None:
        note += "; the override has been removed since"
    return InvoiceLine(
        model=first.model,
        provider=first.provider,
        cost_source=first.source,
        period_start=first.day.isoformat(),
        period_end=days[-1].day.isoformat(),
        requests=sum(d.requests for d in days),
        unpriced_requests=sum(d.unpriced for d in days),
        input_tokens=sum(d.input_tokens for d in days),
        cache_read_tokens=sum(d.cache_read_tokens for d in days),
        output_tokens=sum(d.output_tokens for d in days),
        reasoning_tokens=sum(d.reasoning_tokens for d in days),
        unit_prices=_prices_out(prices),
        price_note=note,
        subtotal_usd=format_cost(exact_sum(d.cost for d in days)),
    )


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = _SUM.add(total, value)
    return total


def invoice_lines(days: Sequence[DayRow], prices_for: PricesFor) -> list[InvoiceLine]:
    """One line per (model, provider, source) and run of days with the same unit prices.

    `days` must be ordered by model, provider, source, day (as `read_days` returns them).
    """
    lines: list[InvoiceLine] = []
    run: list[DayRow] = []
    run_prices: UnitPrices | None = None
    for row in days:
        prices = prices_for(row)
        same_item = bool(run) and (run[-1].model, run[-1].provider, run[-1].source) == (
            row.model,
            row.provider,
            row.source,
        )
        if run and not (same_item and prices == run_prices):
            lines.append(_line(run, run_prices))
            run = []
        run.append(row)
        run_prices = prices
    if run:
        lines.append(_line(run, run_prices))
    return lines


def build_invoice(tenant: str, first_day: date, lines: Sequence[InvoiceLine]) -> Invoice:
    """Per-model subtotals and the total over `lines` (exact decimals)."""
    per_model: dict[str, list[InvoiceLine]] = {}
    for line in lines:
        per_model.setdefault(line.model, []).append(line)
    models = [
        ModelSubtotal(
            model=model,
            requests=sum(line.requests for line in group),
            unpriced_requests=sum(line.unpriced_requests for line in group),
            subtotal_usd=format_cost(exact_sum(Decimal(line.subtotal_usd) for line in group)),
        )
        for model, group in per_model.items()
    ]
    return Invoice(
        tenant=tenant,
        month=month_name(first_day),
        lines=list(lines),
        models=models,
        requests=sum(line.requests for line in lines),
        unpriced_requests=sum(line.unpriced_requests for line in lines),
        total_usd=format_cost(exact_sum(Decimal(line.subtotal_usd) for line in lines)),
    )


def invoice(
    db: Database,
    tenant: str,
    first_day: date,
    settings: TenantSettings,
    lookup: PriceLookup | None,
) -> Invoice:
    """The invoice of `tenant` for the month starting on `first_day`."""
    days = read_days(db, tenant, first_day)
    return build_invoice(tenant, first_day, invoice_lines(days, price_resolver(settings, lookup)))


CSV_COLUMNS = (
    "tenant", "month", "model", "provider", "cost_source", "period_start", "period_end",
    "requests", "unpriced_requests", "input_tokens", "cache_read_tokens", "output_tokens",
    "reasoning_tokens", "input_usd_per_mtok", "cache_read_usd_per_mtok", "output_usd_per_mtok",
    "reasoning_usd_per_mtok", "price_note", "subtotal_usd",
)  # fmt: skip


def invoice_csv(bill: Invoice) -> str:
    """The invoice as CSV: one row per line, then a `TOTAL` row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in bill.lines:
        prices = line.unit_prices
        row: list[Any] = [
            bill.tenant, bill.month, line.model, line.provider, line.cost_source,
            line.period_start, line.period_end, line.requests, line.unpriced_requests,
            line.input_tokens, line.cache_read_tokens, line.output_tokens, line.reasoning_tokens,
            *(
                ("", "", "", "") if prices is None else (
                    prices.input_usd_per_mtok or "", prices.cache_read_usd_per_mtok or "",
                    prices.output_usd_per_mtok or "", prices.reasoning_usd_per_mtok or "",
                )
            ),
            line.price_note, line.subtotal_usd,
        ]  # fmt: skip
        writer.writerow(row)
    total_row: list[Any] = [bill.tenant, bill.month, "TOTAL", "", "", "", "", bill.requests,
                            bill.unpriced_requests, "", "", "", "", "", "", "", "", "",
                            bill.total_usd]  # fmt: skip
    writer.writerow(total_row)
    return out.getvalue()
