"""Windows and rules for the alert tests."""

from __future__ import annotations

from decimal import Decimal

from schema.alerts import AlertRule, RuleSpec
from schema.windows import Scope, WindowRecord

W = 1_000_000_000  # 1 s windows
T0 = 1_700_000_000 * W


def window(
    index: int,
    *,
    tenant: str = "acme",
    cost: str = "0.05",
    requests: int = 10,
    errors: int = 0,
    tokens: int = 1200,
    p95_ms: int = 500,
    scope: Scope = Scope.TENANT,
    key: str = "",
    start: int = T0,
) -> WindowRecord:
    return WindowRecord(
        tenant=tenant,
        scope=scope,
        key=key,
        window_start_ns=start + index * W,
        window_end_ns=start + (index + 1) * W,
        requests=requests,
        errors=errors,
        input_tokens=tokens,
        output_tokens=0,
        cost_usd=Decimal(cost),
        unpriced=0,
        latency_p95_ns=p95_ms * 1_000_000 if requests else 0,
    )


def rule(rule_id: str = "default", tenant: str = "acme", **spec: object) -> AlertRule:
    return AlertRule(tenant, rule_id, RuleSpec.model_validate(spec), None)


def baseline_then(values: list[str], tenant: str = "acme", start: int = T0) -> list[WindowRecord]:
    """Windows with these costs, in order."""
    return [window(i, tenant=tenant, cost=c, start=start) for i, c in enumerate(values)]
