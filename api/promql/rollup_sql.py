"""Step-aligned values of catalogue series, from the rollups.

A series' value at time x is the sum of the increments of every minute with
`Minute + 60 <= x`. PromQL samples a series on a grid of virtual scrapes every
`sample_interval_s` seconds (k * interval, from the end of its first minute on), so a
range `[r]` at time t holds the grid points in [t - r, t] (closed, as Prometheus 2.x).

Per series ClickHouse builds a dense array of cumulative values per minute of the window
the steps need (everything earlier, read from the hourly and daily copies, folded into the
first element) in one aggregation per series, and returns only the elements the steps read
(`steps.plan`). numpy then applies Prometheus' `extrapolatedRate` (rate, increase) or
`instantValue` (irate) to all series and steps at once (`steps.values`): that keeps the
SQL small, and the engine's planning time of a query grows with its expression trees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.promql import steps as st
from api.promql.catalogue import DAYS, Metric, source_sql, tiered_source
from api.promql.errors import BadData
from api.promql.selectors import LabelMatcher, label_conditions, selected, tenant_condition
from schema.clickhouse import Database

Function = st.Function
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


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """The SQL of one metric's series at some steps, and which C values it returns."""

    sql: str
    params: dict[str, Any]
    plan: st.Plan


def series_query(
    metric: Metric,
    selection: Selection,
    fn: Function,
    shifted: list[float],
    interval: float,
    top_models: int,
    tenant: str | None,
) -> SeriesQuery:
    """SQL: per series of `metric`, its labels, `fe`, C at the plan's positions and C at
    its first grid sample, for `fn` at the (offset-shifted) step times."""
    look_back = selection.range_s + interval if fn != "value" else interval
    k0 = math.floor((min(shifted) - look_back) / 60) - 2  # minute number folded into index 0
    k_hi = math.floor(max(shifted) / 60) - 1  # last minute that can count
    n = max(k_hi - k0 + 1, 1)
    if n > MAX_MINUTES:
        raise BadData(
            f"the query spans {n} minutes of rollups per series, more than {MAX_MINUTES}: "
            "shorten the time range"
        )
    plan = st.plan(shifted, k0, n, interval, selection.range_s)
    params: dict[str, Any] = {"positions": [i + 1 for i in plan.positions]}
    scope = tenant_condition(tenant, params)
    source = tiered_source(metric, top_models, k0 * 60, k_hi * 60, scope)
    labels = ", ".join(metric.labels)
    conditions = label_conditions(metric, selection.matchers, params)
    first = f"floor(({st.first_sample_sql(interval)}) / 60) - 1 - {k0}"
    # one aggregation per series (sumResample: a dense per-minute array, history before k0
    # into its first element) instead of grouping by series and minute first: 2x faster
    sql = (
        f"SELECT {labels}, fe, arrayMap(i -> C[i], {{positions:Array(UInt32)}}), "
        f"C[toUInt32(least(greatest(toInt64({first}), 0), {n - 1})) + 1] "
        f"FROM (SELECT {labels}, toFloat64((min(mi) + 1) * 60) AS fe, "
        f"arrayCumSum(sumResample({k0}, {k0 + n}, 1)(v, greatest(mi, {k0}))) AS C "
        f"FROM (SELECT {labels}, toInt64(intDiv(toUInt32(Minute), 60)) AS mi, v "
        f"FROM ({source}) WHERE {conditions}) GROUP BY {labels})"
    )
    return SeriesQuery(sql, params, plan)


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
        query = series_query(metric, selection, fn, shifted, interval, top_models, tenant)
        rows = db.query(query.sql, query.params)
        if not rows:
            continue
        width = len(metric.labels)
        computed = st.values(
            fn,
            shifted,
            query.plan,
            interval,
            selection.range_s,
            np.array([row[width + 1] for row in rows], dtype=np.float64),
            np.array([row[width] for row in rows], dtype=np.float64),
            np.array([row[width + 2] for row in rows], dtype=np.float64),
        )
        for row, row_values in zip(rows, computed.tolist(), strict=True):
            values: list[float | None] = [None if math.isnan(v) else v for v in row_values]
            if all(v is None for v in values):
                continue
            labels = {
                name: str(value)
                for name, value in zip(metric.labels, row[:width], strict=True)
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
            scope = tenant_condition(tenant, params)
            if end_s is None:  # the daily copy holds every series there is
                source = source_sql(metric, top_models, scope, DAYS)
            else:
                until = math.floor(end_s) - 60
                source = tiered_source(metric, top_models, until, until, scope)
            labels = ", ".join(metric.labels)
            sql = (
                f"SELECT DISTINCT {labels} FROM ({source}) "
                f"WHERE {label_conditions(metric, matchers, params)}"
            )
            for row in db.query(sql, params):
                found = {"__name__": metric.name}
                found.update(
                    {name: str(v) for name, v in zip(metric.labels, row, strict=True) if v != ""}
                )
                seen.setdefault(tuple(sorted(found.items())), found)
    return [seen[key] for key in sorted(seen)]
