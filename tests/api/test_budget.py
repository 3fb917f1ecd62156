"""Month-to-date budget use per tenant: exact spend of the calendar month (UTC) only."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from api.queries.budget import BudgetUsage, budget_usage
from schema.clickhouse import Database
from schema.models import TenantSettings
from schema.tenants import TenantStore
from tests.api.conftest import Keys
from tests.api.rows import NS, insert_spans, llm_span

pytestmark = pytest.mark.clickhouse


def at(*parts: int) -> int:
    *fields, nanos = (*parts, 0) if len(parts) < 7 else parts
    return int(datetime(*fields, tzinfo=UTC).timestamp()) * NS + nanos


NOW = at(2025, 3, 20, 12)


@pytest.fixture
def spending(db: Database, store: TenantStore, keys: Keys) -> None:
    store.update_settings("acme", TenantSettings(monthly_budget_usd=Decimal("10")))
    store.update_settings("globex", TenantSettings(monthly_budget_usd=Decimal("0.000001")))
    insert_spans(db, [
        # acme, March: 2.5 + 0.000000000001 + an unpriced call
        llm_span(TenantId="acme", Timestamp=at(2025, 3, 1), cost="2.5"),
        llm_span(TenantId="acme", Timestamp=at(2025, 3, 20, 11, 59), cost="0.000000000001"),
        llm_span(TenantId="acme", Timestamp=at(2025, 3, 20), cost=None, model="mystery"),
        # not March: February's last instant and April
        llm_span(TenantId="acme", Timestamp=at(2025, 2, 28, 23, 59, 59, 999_999_999), cost="7"),
        llm_span(TenantId="acme", Timestamp=at(2025, 4, 1), cost="7"),
        # globex is far over its budget; default has no budget (its spend is not reported)
        llm_span(TenantId="globex", Timestamp=at(2025, 3, 2), cost="0.000003"),
        llm_span(TenantId="default", Timestamp=at(2025, 3, 2), cost="100"),
    ])  # fmt: skip


def test_every_tenant_with_a_budget(db: Database, store: TenantStore, spending: None) -> None:
    usage = budget_usage(db, store, None, NOW)
    assert usage == [
        BudgetUsage("acme", "2025-03", Decimal("10"), Decimal("2.500000000001")),
        BudgetUsage("globex", "2025-03", Decimal("0.000001"), Decimal("0.000003")),
    ]
    assert usage[0].used_ratio == pytest.approx(0.2500000000001)
    assert usage[1].used_ratio == pytest.approx(3.0)


def test_one_tenant_and_the_month_follows_now(
    db: Database, store: TenantStore, spending: None
) -> None:
    assert budget_usage(db, store, "acme", NOW) == [
        BudgetUsage("acme", "2025-03", Decimal("10"), Decimal("2.500000000001"))
    ]
    # February's last instant belongs to February, April's first to April
    assert budget_usage(db, store, "acme", at(2025, 2, 28, 23, 59, 59)) == [
        BudgetUsage("acme", "2025-02", Decimal("10"), Decimal("7"))
    ]
    assert budget_usage(db, store, "acme", at(2025, 4, 1))[0].spent_usd == Decimal("7")
    # a month without spend: 0, not missing
    assert budget_usage(db, store, "acme", at(2025, 5, 1))[0].used_ratio == 0.0
    # no budget, or an unknown tenant: nothing to report
    assert budget_usage(db, store, "default", NOW) == []
    assert budget_usage(db, store, "nobody", NOW) == []
