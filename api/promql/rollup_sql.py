"""Step-aligned values of catalogue series, computed by ClickHouse from the rollups.

A series' value at time x is the sum of the increments of every minute with
`Minute + 60 <= x`. PromQL samples a series on a grid of virtual scrapes every
`sample_interval_s` seconds (k * interval, from the end of its first minute on), so a
range `[r]` at time t holds the grid points in [t - r, t] (closed, as Prometheus 2.x).

Per series ClickHouse builds a dense array of cumulative values per minute (all earlier
history folded into the first element), reads the two grid samples each step needs by
index, and applies Prometheus' `extrapolatedRate` (rate, increase) or `instantValue`
(irate). Python receives one value per series and step (None: no sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from api.promql.catalogue import Metric, source_sql
from api.promql.errors import BadData
from api.promql.selectors import LabelMatcher, label_conditions, selected, tenant_condition
from schema.clickhouse import Database

Function = Literal["value", "rate", "increase", "irate"]
MAX_MINUTES = 600_000  # about 14 months of minutes per series and query


@dataclass(frozen=True, slots=True)
class Series:
    """Labels (without empty values) and one value per step; None where there is none."""

    labels: dict[str, str]
    values: list[float | None]


@dataclass(frozen=True, slots=True)
class Selection:
    matchers: list[LabelMatcher]
    offset_s: float = 0.0
    range_s: float = 0.0  # 0: an instant vector selector


def _fmt(number: float) -> str:
    return repr(float(number))


def _values_sql(fn: Function, k0: int, n: int, interval: float, range_s: float) -> str:
    """`vals`: arrayMap over the shifted step times `U` of one series (needs C and fe)."""
    s, r = _fmt(interval), _fmt(range_s)

    def at(x: str) -> str:
        return (
            f"C[toUInt32(least(greatest(toInt64(floor(({x}) / 60)) - 1 - {k0}, 0), {n - 1})) + 1]"
        )

    if fn == "value":
        last = f"floor(u / {s}) * {s}"
        return f"arrayMap(u -> if({last} >= fe, {at(last)}, nan), U)"
    if fn == "irate":
        t1 = f"arrayMap(u -> (u, floor(u / {s}) * {s}, greatest(u - {r}, fe)), U)"
        prev = f"x.2 - {s}"
        return (
            f"arrayMap(x -> if(x.2 < x.3 OR {prev} < x.3, nan, "
            f"if({at('x.2')} >= {at(prev)}, {at('x.2')} - {at(prev)}, {at('x.2')}) / {s}), {t1})"
        )
    # x: (u, last sample l, first sample f); then (.., count, V(f), V(l))
    t1 = f"arrayMap(u -> (u, floor(u / {s}) * {s}, ceil(greatest(u - {r}, fe) / {s}) * {s}), U)"
    t2 = (
        f"arrayMap(x -> (x.1, x.2, x.3, round((x.2 - x.3) / {s}) + 1, "
        f"{at('x.3')}, {at('x.2')}), {t1})"
    )
    # y: (count, delta, sampled, average interval, duration to start, duration to end)
    start = "x.3 - (x.1 - " + r + ")"
    t3 = (
        "arrayMap(x -> (x.4, x.6 - x.5, x.2 - x.3, (x.2 - x.3) / greatest(x.4 - 1, 1), "
        "if(x.6 - x.5 > 0 AND x.5 >= 0, "
        f"least({start}, (x.2 - x.3) * x.5 / (x.6 - x.5)), {start}), "
        f"x.1 - x.2), {t2})"
    )
    per = f" / {r}" if fn == "rate" else ""
    return (
        "arrayMap(y -> if(y.1 < 2, nan, y.2 * (y.3 + if(y.5 < y.4 * 1.1, y.5, y.4 / 2) "
        f"+ if(y.6 < y.4 * 1.1, y.6, y.4 / 2)) / y.3{per}), {t3})"
    )


def series_query(
    metric: Metric,
    selection: Selection,
    fn: Function,
    shifted: list[float],
    interval: float,
    top_models: int,
    tenant: str | None,
) -> tuple[str, dict[str, Any]]:
    """SQL and parameters for `fn` of `metric` at the (offset-shifted) step times."""
    look_back = selection.range_s + interval if fn != "value" else interval
    k0 = math.floor((min(shifted) - look_back) / 60) - 2  # minute number folded into index 0
    k_hi = math.floor(max(shifted) / 60) - 1  # last minute that can count
    n = max(k_hi - k0 + 1, 1)
    if n > MAX_MINUTES:
        raise BadData(
            f"the query spans {n} minutes of rollups per series, more than {MAX_MINUTES}: "
            "shorten the time range"
        )
    params: dict[str, Any] = {"steps": shifted, "k_hi_s": max(k_hi, 0) * 60}
    where = f"Minute <= toDateTime({{k_hi_s:UInt32}}) AND {tenant_condition(tenant, params)}"
    source = source_sql(metric, top_models, where)
    labels = ", ".join(metric.labels)
    conditions = label_conditions(metric, selection.matchers, params)
    minute = "toInt64(intDiv(toUInt32(Minute), 60))"
    sql = (
        "WITH {steps:Array(Float64)} AS U "
        f"SELECT {labels}, {_values_sql(fn, k0, n, interval, selection.range_s)} AS vals "
        f"FROM (SELECT {labels}, toFloat64((min(fk) + 1) * 60) AS fe, "
        f"arrayCumSum(groupArrayInsertAt(toFloat64(0), {n})(inc, idx)) AS C "
        f"FROM (SELECT {labels}, toUInt32(greatest({minute} - {k0}, 0)) AS idx, "
        f"sum(v) AS inc, min({minute}) AS fk FROM ({source}) WHERE {conditions} "
        f"GROUP BY {labels}, idx) GROUP BY {labels})"
    )
    return sql, params


def evaluate(
    db: Database,
    selection: Selection,
    fn: Function,
    steps: list[float],
    interval: float,
    top_models: int,
    tenant: str | None,
) -> list[Series]:
    """Every selected series with at least one value among `steps` (NaN elsewhere)."""
    shifted = [t - selection.offset_s for t in steps]
    found: list[Series] = []
    for metric in selected(selection.matchers):
        sql, params = series_query(metric, selection, fn, shifted, interval, top_models, tenant)
        for row in db.query(sql, params):
            values: list[float | None] = [None if math.isnan(v) else float(v) for v in row[-1]]
            if all(v is None for v in values):
                continue
            labels = {
                name: str(value)
                for name, value in zip(metric.labels, row, strict=False)
                if value != ""
            }
            if fn == "value":
                labels = {"__name__": metric.name, **labels}
            found.append(Series(labels, values))
    return found


def series_labels(
    db: Database,
    matcher_sets: list[list[LabelMatcher]],
    end_s: float | None,
    top_models: int,
    tenant: str | None,
) -> list[dict[str, str]]:
    """Label sets of the series selected by any of `matcher_sets` that exist by `end_s`."""
    seen: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for matchers in matcher_sets:
        for metric in selected(matchers):
            params: dict[str, Any] = {}
            where = tenant_condition(tenant, params)
            if end_s is not None:
                params["end_s"] = max(int(end_s) - 60, 0)
                where += " AND Minute <= toDateTime({end_s:UInt32})"
            labels = ", ".join(metric.labels)
            sql = (
                f"SELECT DISTINCT {labels} FROM ({source_sql(metric, top_models, where)}) "
                f"WHERE {label_conditions(metric, matchers, params)}"
            )
            for row in db.query(sql, params):
                found = {"__name__": metric.name}
                found.update(
                    {name: str(v) for name, v in zip(metric.labels, row, strict=True) if v != ""}
                )
                seen.setdefault(tuple(sorted(found.items())), found)
    return [seen[key] for key in sorted(seen)]
