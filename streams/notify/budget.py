"""Pure budget levels: which of 50 / 80 / 100 % of a monthly budget a cost has reached.

One alert per level and calendar month (UTC): the id is (tenant, month, level), so the
ledger lets each through once however often the cost is checked. When several levels are
reached at once (a budget set late, or a sudden jump) only the highest is sent; the
notifier marks the lower ones as superseded so they do not follow later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from schema.alerts import (
    BUDGET_LEVELS,
    BUDGET_RULE_ID,
    Alert,
    AlertKind,
    AlertMetric,
    AlertScope,
    alert_id,
)

NS_PER_S = 1_000_000_000


def month_bounds(now_ns: int) -> tuple[int, int]:
    """[start, end) of the calendar month (UTC) containing `now_ns`, in ns."""
    now = datetime.fromtimestamp(now_ns // NS_PER_S, tz=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return int(start.timestamp()) * NS_PER_S, int(end.timestamp()) * NS_PER_S


def budget_alerts(tenant: str, cost: Decimal, budget: Decimal, now_ns: int) -> list[Alert]:
    """One alert per level the month-to-date `cost` has reached, highest first."""
    if budget <= 0:
        return []
    start, end = month_bounds(now_ns)
    month = datetime.fromtimestamp(start // NS_PER_S, tz=UTC).strftime("%Y-%m")
    alerts = []
    for level in sorted(BUDGET_LEVELS, reverse=True):
        limit = budget * level / 100
        if cost < limit:
            continue
        alerts.append(
            Alert(
                alert_id=alert_id(tenant, BUDGET_RULE_ID, month, level),
                kind=AlertKind.BUDGET,
                tenant=tenant,
                rule_id=BUDGET_RULE_ID,
                rule_name=f"{level}% of the monthly budget",
                metric=AlertMetric.COST,
                scope=AlertScope.TENANT,
                key="",
                window_start_ns=start,
                window_end_ns=end,
                value=cost,
                threshold=limit,
                budget_usd=budget,
                budget_percent=level,
            )
        )
    return alerts
