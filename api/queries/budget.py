"""Month-to-date spend against each tenant's monthly budget, from the per-day billing rollup.

Used by the dashboard overview and by `/metrics` (`llmtel_tenant_budget_used_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from api.queries.months import month_name, month_of, next_month
from schema.clickhouse import Database
from schema.tenants import TenantStore


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """One tenant's spend in the calendar month (UTC) so far, against its budget."""

    tenant: str
    month: str  # YYYY-MM
    budget_usd: Decimal
    spent_usd: Decimal  # exact sum of priced span costs this month

    @property
    def used_ratio(self) -> float:
        """spent / budget (above 1.0 once the budget is exceeded)."""
        return float(self.spent_usd / self.budget_usd)


def month_spend(db: Database, tenant_ids: list[str], first_day: date) -> dict[str, Decimal]:
    """Exact cost per tenant in the month starting on `first_day` (tenants without any: 0)."""
    if not tenant_ids:
        return {}
    rows = db.query(
        "SELECT TenantId, sum(CostUsd) FROM {db}.llm_billing_1d "
        "WHERE TenantId IN {tenants:Array(String)} "
        "AND Day >= {start:Date} AND Day < {end:Date} "
        "GROUP BY TenantId",
        {"tenants": tenant_ids, "start": first_day, "end": next_month(first_day)},
    )
    spent = {tenant: Decimal(0) for tenant in tenant_ids}
    spent.update({str(tenant): Decimal(cost) for tenant, cost in rows})
    return spent


def budget_usage(
    db: Database, tenants: TenantStore, tenant_scope: str | None, now_ns: int
) -> list[BudgetUsage]:
    """Budget use in the month of `now_ns` for every tenant that has a budget, by tenant.

    `tenant_scope` restricts to one tenant (None: all tenants, for admins and `/metrics`).
    """
    if tenant_scope is None:
        budgets = tenants.monthly_budgets()
    else:
        budget = tenants.get_settings(tenant_scope).monthly_budget_usd
        budgets = {} if budget is None else {tenant_scope: budget}
    first_day = month_of(now_ns)
    spent = month_spend(db, sorted(budgets), first_day)
    return [
        BudgetUsage(tenant, month_name(first_day), budget, spent[tenant])
        for tenant, budget in sorted(budgets.items())
    ]
