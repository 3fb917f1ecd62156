"""Step-aligned values of catalogue series, from the rollups.

A series' value at time x is the sum of the increments of every minute with
`Minute + 60 <= x`. PromQL samples a series on a grid of virtual scrapes every
`sample_interval_s` seconds (k * interval, from the end of its first minute on), so a
range `[r]` at time t holds the grid points in [t - r, t] (closed, as Prometheus 2.x).

The steps read the cumulative value C of a series at a few minutes of the query's window
only (`steps.plan`). One statement per metric reads its rollup rows from the three grains
(`tiered_rows`) and aggregates them per row of label columns as stored (tenant, [service],
model), in one pass: every minute's increments go into the bucket of the first of those
positions at or after it (`sumResample`; all history before the window into the first),
with the row's first minute, its increments in that minute and its requests. The rest
is done here on those few rows, with numpy where it counts: the model folding
(`top_models`), the labels a row splits into (status, type, le), the label matchers
other than the tenant's (which go into the SQL), and Prometheus' `extrapolatedRate`
(rate, increase) and `instantValue` (irate) for every series and step at once
(`steps.values`). The statement stays small on purpose: chDB's planning is about half of
a statement's time and grows with its expressions and table reads.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from api.promql import steps as st
from api.promql.catalogue import (
    DAYS,
    LABEL_COLUMNS,
    Metric,
    source_sql,
    tiered_rows,
    tiered_source,
)
from api.promql.errors import BadData
from api.promql.selectors import (
    LabelMatcher,
    label_conditions,
    regex_matches,
    selected,
    tenant_condition,
)
from schema.clickhouse import Database

Function = st.Function
MAX_MINUTES = 600_000  # about 14 months of minutes per series and query
# a window that ends at most this long before now reads the minutes up to the newest: its
# rows then hold all requests there are, which rank the models without another read
RECENT_S = 3_600
TopModels = frozenset[tuple[str, str]]
# the plan-level optimizations (filter push-down, prewhere, reading in order, ...) find
# nothing to do in these statements (each read has its own condition on its key) and cost
# ~2.5 ms of a statement's planning
STATEMENT_SETTINGS = " SETTINGS query_plan_enable_optimizations = 0"


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


def ranked(totals: Iterable[Sequence[Any]], top_models: int) -> TopModels:
    """(tenant, model) of the `top_models` models per tenant with the most requests, ties
    by name, from (tenant, model, requests) rows: catalogue.model_fold's ranking."""
    per_tenant: dict[str, dict[str, int]] = {}
    for tenant, model, requests in totals:
        models = per_tenant.setdefault(str(tenant), {})
        models[str(model)] = models.get(str(model), 0) + int(requests)
    top: set[tuple[str, str]] = set()
    for tenant, models in per_tenant.items():
        best = sorted(models.items(), key=lambda item: (-item[1], item[0]))[:top_models]
        top.update((tenant, model) for model, _ in best)
    return frozenset(top)


# reads the model ranking while the series statement runs (chDB runs statements of several
# clients at once): it would otherwise add its own ~4 ms to a histogram query
_BESIDE = ThreadPoolExecutor(max_workers=2, thread_name_prefix="promql-ranking")


class ModelRanking:
    """The models that keep their name, read from llm_counters_1d at most once (per request:
    an expression may have several selectors)."""

    def __init__(self) -> None:
        self._read: dict[tuple[int, str | None], Future[TopModels]] = {}

    def start(self, db: Database, top_models: int, tenant: str | None) -> None:
        """Begin reading the ranking, in another thread."""
        key = (top_models, tenant)
        if key not in self._read:
            self._read[key] = _BESIDE.submit(self._query, db, top_models, tenant)

    def get(self, db: Database, top_models: int, tenant: str | None) -> TopModels:
        self.start(db, top_models, tenant)
        return self._read[(top_models, tenant)].result()

    @staticmethod
    def _query(db: Database, top_models: int, tenant: str | None) -> TopModels:
        params: dict[str, Any] = {}
        rows = db.query(
            "SELECT TenantId, Model, sum(Requests) FROM {db}.llm_counters_1d "
            f"WHERE {tenant_condition(tenant, params)} "
            f"GROUP BY TenantId, Model{STATEMENT_SETTINGS}",
            params,
        )
        return ranked(rows, top_models)


def _bucket_sql(positions: list[int], k0: int, n: int) -> str:
    """SQL (over `Minute`): the bucket of a row's minute k0 + i, the first of `positions` at
    or after i (history before k0: the first); len(positions), which is not summed, after
    the last position."""
    gaps = {b - a for a, b in zip(positions, positions[1:], strict=False)}
    if len(gaps) <= 1:  # evenly spaced (an instant query, or a range's steps): arithmetic
        width = 60 * (gaps.pop() if gaps else 1)
        start = (k0 + positions[0]) * 60
        return (
            f"least(intDiv(greatest(toInt64(toUInt32(Minute)) - {start}, 0) + {width - 1}, "
            f"{width}), {len(positions)})"
        )
    # a bucket per minute of the window, in the SQL text (binding a long array parameter
    # costs more than the statement), and `len(positions)` for every later minute
    buckets = [bisect.bisect_left(positions, i) for i in range(n)] + [len(positions)]
    return (
        f"CAST([{','.join(map(str, buckets))}], 'Array(UInt32)')"
        f"[least(greatest(toInt64(intDiv(toUInt32(Minute), 60)) - {k0}, 0), {n}) + 1]"
    )


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """The statement of one metric's rows for some steps (module docstring)."""

    sql: str
    params: dict[str, Any]
    plan: st.Plan
    to_the_end: bool  # the rows hold every minute there is: their requests rank the models


def series_query(
    metric: Metric,
    selection: Selection,
    fn: Function,
    shifted: list[float],
    interval: float,
    tenant: str | None,
    now_s: float,
) -> SeriesQuery:
    """SQL: per row of label columns of `metric`'s rollup, the columns, its first minute (unix
    s), its requests, then per value its increment in that first minute and its increments
    per bucket of the plan's positions (a state metric: both as arrays over the buckets of
    the histogram)."""
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
    params: dict[str, Any] = {}
    reading = metric.reading
    to_the_end = reading.rollup != "latency" and (k_hi + 1) * 60 >= now_s - RECENT_S
    where = [
        condition
        for condition in (
            tenant_condition(tenant, params),
            label_conditions(metric, selection.matchers, params, {"tenant": "TenantId"}),
        )
        if condition != "1"
    ]
    keys = ", ".join(LABEL_COLUMNS[label] for label in metric.labels if label != reading.split)
    columns = ", ".join(dict.fromkeys((keys, "Requests", *reading.columns)))
    source = tiered_rows(reading.rollup, columns, k0 * 60, None if to_the_end else k_hi * 60, where)
    count, bucket = len(plan.positions), _bucket_sql(plan.positions, k0, n)
    if len(reading.values) == 1:
        [value] = reading.values
        aggregates = [
            f"[toFloat64(sumArgMin({value}, Minute))]",
            f"CAST(sumResample(0, {count}, 1)({value}, {bucket}) AS Array(Float64))",
        ]
    else:  # one array per row (a state: per bucket): fewer aggregates plan faster
        combinator = "Merge" if reading.state else ""
        values = reading.state or f"[{', '.join(reading.values)}]"
        aggregates = [
            f"CAST(sumForEach{combinator}ArgMin({values}, Minute) AS Array(Float64))",
            f"CAST(sumForEach{combinator}Resample(0, {count}, 1)({values}, {bucket}) "
            "AS Array(Array(Float64)))",
        ]
    sql = (
        f"SELECT {keys}, toUInt32(min(Minute)), sum(Requests), {', '.join(aggregates)} "
        f"FROM ({source}) GROUP BY {keys}{STATEMENT_SETTINGS}"
    )
    return SeriesQuery(sql, params, plan, to_the_end)


def _padded(values: list[float], width: int) -> list[float]:
    """A sumForEach result (empty where no row was summed) as `width` values."""
    return values + [0.0] * (width - len(values)) if len(values) < width else values


@dataclass(frozen=True, slots=True)
class Folded:
    """One metric's series before the split label, after the model folding: per series its
    label values (`names`), `fe` (the end of its first minute), and per split value its
    increment in its first grid sample (`first`) and C at the plan's positions."""

    names: tuple[str, ...]
    labels: list[tuple[str, ...]]
    fe: st.Floats  # (series,)
    first: st.Floats  # (series, split value)
    cumulative: st.Floats  # (series, position, split value)


def fold(metric: Metric, rows: Sequence[Sequence[Any]], top: TopModels, interval: float) -> Folded:
    """The rows of `series_query` with the models outside `top` folded into "other": the
    sum of their series, from the earliest first minute. A folded series' first grid sample
    comes less than a minute after its first minute ended, so its value there is the sum
    of the first-minute increments of the members whose first minute ended by then."""
    reading = metric.reading
    names = tuple(label for label in metric.labels if label != reading.split)
    width, splits = len(names), len(reading.split_values)
    at_tenant, at_model = names.index("tenant"), names.index("model")
    first = np.array([_padded(row[width + 2], splits) for row in rows], dtype=np.float64)
    if splits == 1:
        increments = np.array([row[width + 3] for row in rows], dtype=np.float64)[:, :, None]
    else:
        increments = np.array(
            [[_padded(b, splits) for b in row[width + 3]] for row in rows], dtype=np.float64
        )
    if reading.state:  # per bucket of the histogram: the `le` series are its running sums
        first, increments = np.cumsum(first, axis=1), np.cumsum(increments, axis=2)
    groups: dict[tuple[str, ...], int] = {}
    member_of = np.empty(len(rows), dtype=np.int64)
    for r, row in enumerate(rows):
        key = [str(v) for v in row[:width]]
        model = key[at_model]
        key[at_model] = (model or "unknown") if (key[at_tenant], model) in top else "other"
        member_of[r] = groups.setdefault(tuple(key), len(groups))
    fe_rows = np.array([row[width] for row in rows], dtype=np.float64) + 60
    fe = np.full(len(groups), np.inf)
    np.minimum.at(fe, member_of, fe_rows)
    sample_rows = np.ceil(fe_rows / interval) * interval
    counted = sample_rows == (np.ceil(fe / interval) * interval)[member_of]
    first_sums = np.zeros((len(groups), splits))
    np.add.at(first_sums, member_of[counted], first[counted])
    sums = np.zeros((len(groups), *increments.shape[1:]))
    np.add.at(sums, member_of, increments)
    return Folded(names, list(groups), fe, first_sums, np.cumsum(sums, axis=1))


def _matches(
    db: Database, matchers: list[LabelMatcher], names: tuple[str, ...], rows: list[list[str]]
) -> list[bool]:
    """Per row of label values (in `names`' order): whether every matcher of those labels holds."""
    keep = [True] * len(rows)
    for matcher in matchers:
        if matcher.name not in names:
            continue
        column = names.index(matcher.name)
        if matcher.op in ("=~", "!~"):
            hits = regex_matches(db, matcher.value, {row[column] for row in rows})
            found = [hits[row[column]] == (matcher.op == "=~") for row in rows]
        else:
            found = [(row[column] == matcher.value) == (matcher.op == "=") for row in rows]
        keep = [a and b for a, b in zip(keep, found, strict=True)]
    return keep


def split_series(
    db: Database,
    metric: Metric,
    folded: Folded,
    selection: Selection,
    fn: Function,
    shifted: list[float],
    plan: st.Plan,
    interval: float,
) -> list[Series]:
    """The series of `folded`, one per split value, that `selection`'s matchers keep (the
    tenant's already held in SQL), with at least one value among the steps."""
    reading = metric.reading
    names = (*folded.names, reading.split) if reading.split else folded.names
    candidates = [
        (g, v, [*labels, value] if reading.split else list(labels))
        for g, labels in enumerate(folded.labels)
        for v, value in enumerate(reading.split_values)
    ]
    matchers = [m for m in selection.matchers if m.name != "tenant"]
    keep = _matches(db, matchers, names, [labels for _, _, labels in candidates])
    picked = [c for c, kept in zip(candidates, keep, strict=True) if kept]
    if not picked:
        return []
    groups = np.array([g for g, _, _ in picked], dtype=np.int64)
    splits = np.array([v for _, v, _ in picked], dtype=np.int64)
    computed = st.values(
        fn,
        shifted,
        plan,
        interval,
        selection.range_s,
        folded.cumulative[groups, :, splits],
        folded.fe[groups],
        folded.first[groups, splits],
    )
    missing = np.isnan(computed)
    values = computed.astype(object)
    values[missing] = None
    found = []
    for i in np.flatnonzero(~missing.all(axis=1)):
        label_values = picked[i][2]
        labels = {n: value for n, value in zip(names, label_values, strict=True) if value != ""}
        if fn == "value":
            labels = {"__name__": metric.name, **labels}
        found.append(Series(labels, values[i].tolist()))
    return found


def evaluate(
    db: Database,
    selection: Selection,
    fn: Function,
    steps: list[float],
    interval: float,
    top_models: int,
    tenant: str | None,
    ranking: ModelRanking | None = None,
) -> list[Series]:
    """Every selected series with at least one value among `steps` (NaN elsewhere)."""
    shifted = [t - selection.offset_s for t in steps]
    ranking = ranking or ModelRanking()
    found: list[Series] = []
    for metric in selected(selection.matchers):
        query = series_query(metric, selection, fn, shifted, interval, tenant, time.time())
        if not query.to_the_end:
            ranking.start(db, top_models, tenant)
        rows = db.query(query.sql, query.params)
        if not rows:
            continue
        if query.to_the_end:
            names = [label for label in metric.labels if label != metric.reading.split]
            tenants_models = (names.index("tenant"), names.index("model"), len(names) + 1)
            top = ranked(([row[i] for i in tenants_models] for row in rows), top_models)
        else:
            top = ranking.get(db, top_models, tenant)
        folded = fold(metric, rows, top, interval)
        found += split_series(db, metric, folded, selection, fn, shifted, query.plan, interval)
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
