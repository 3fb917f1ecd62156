"""The per-tenant LLM series of `/metrics`, read from the rollups at scrape time.

Every API replica reads the same ClickHouse rows, so all report the same values, and they
survive restarts. A counter's value is the sum over the minutes that are complete at the
scrape (`Minute + 60 <= now`), exactly the value PromQL over the rollups gives for that
moment (api/promql/catalogue.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from api.promql import catalogue as cat
from api.promql.selectors import tenant_condition
from schema.clickhouse import Database

BUDGET_HELP = "Month-to-date spend over the tenant's monthly budget (1.0 = budget used up)."


def totals(
    db: Database, metric: cat.Metric, now_s: float, top_models: int, tenant: str | None
) -> list[tuple[tuple[str, ...], float]]:
    """(label values, counter value) of every series of `metric` at `now_s`."""
    params: dict[str, Any] = {"complete_s": max(int(now_s) - 60, 0)}
    where = f"Minute <= toDateTime({{complete_s:UInt32}}) AND {tenant_condition(tenant, params)}"
    labels = ", ".join(metric.labels)
    sql = (
        # summed as decimals so that a cost total prints as the exact sum of span costs
        f"SELECT {labels}, toFloat64(sum(toDecimal128(v, 12))) "
        f"FROM ({cat.source_sql(metric, top_models, where)}) "
        f"GROUP BY {labels} ORDER BY {labels}"
    )
    return [(tuple(str(v) for v in row[:-1]), float(row[-1])) for row in db.query(sql, params)]


def _counter(
    db: Database, family: cat.Family, now_s: float, top: int, tenant: str | None
) -> Metric:
    metric = cat.BY_NAME[family.name]
    out = CounterMetricFamily(family.name, family.help, labels=list(metric.labels))
    for labels, value in totals(db, metric, now_s, top, tenant):
        out.add_metric(list(labels), value)
    return out


def _histogram(
    db: Database, family: cat.Family, now_s: float, top: int, tenant: str | None
) -> Metric:
    name = family.name
    buckets: dict[tuple[str, ...], list[tuple[str, float]]] = {}
    for labels, value in totals(db, cat.BY_NAME[f"{name}_bucket"], now_s, top, tenant):
        buckets.setdefault(labels[:-1], []).append((labels[-1], value))
    sums = dict(totals(db, cat.BY_NAME[f"{name}_sum"], now_s, top, tenant))
    out = HistogramMetricFamily(name, family.help, labels=["tenant", "model"], unit="")
    for labels, found in sorted(buckets.items()):
        found.sort(key=lambda pair: float(pair[0]))
        out.add_metric(list(labels), found, sums.get(labels, 0.0))
    return out


def llm_families(db: Database, now_s: float, top_models: int, tenant: str | None) -> list[Metric]:
    """Every per-tenant LLM family at `now_s`; `tenant` None: all tenants."""
    build = {"counter": _counter, "histogram": _histogram}
    return [build[f.kind](db, f, now_s, top_models, tenant) for f in cat.FAMILIES]


def budget_family(ratios: Iterable[tuple[str, float]]) -> Metric:
    """`llmtel_tenant_budget_used_ratio{tenant}` for the tenants that have a budget."""
    out = GaugeMetricFamily("llmtel_tenant_budget_used_ratio", BUDGET_HELP, labels=["tenant"])
    for tenant, ratio in ratios:
        out.add_metric([tenant], ratio)
    return out


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(families: list[Metric]) -> bytes:
    """Prometheus text format 0.0.4 of `families`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)
