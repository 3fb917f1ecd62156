"""The dashboard overview: health, cost and top lists over a time range, from the rollups.

Never raw spans: whole hours come from `llm_rollup_1h`, the partial hours at the edges from
`llm_rollup_1m`, the per-minute series from `llm_tenant_series_1m`; bounds round to whole
minutes, and latency quantiles merge the per-tenant DDSketch states of
`llm_latency_sketch_1h/1m` (1 % relative accuracy; far cheaper to merge than the rollups'
per-model t-digests), or for every tenant over whole hours, `llm_latency_sketch_all_1h`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy
from pydantic import TypeAdapter

from api.models import (
    BudgetStatus,
    Overview,
    OverviewPoint,
    Quantiles,
    TokenCounts,
    TopModel,
    TopTenant,
)
from api.params import NS_PER_S, InvalidParameter, format_cost, format_seconds
from api.queries.budget import BudgetUsage
from schema.clickhouse import Database

# From this range on, latency quantiles merge whole hours only (the range widened to the
# enclosing hours): a day's edges would otherwise merge ~100x more minute states than its
# hours do, and a quantile over 24-25 h describes the same traffic.
WHOLE_HOUR_QUANTILES_S = 6 * 3600
MAX_POINTS = 11_000  # as Prometheus: more buckets than a screen has pixels is a mistake
_QUANTILES = "0.5, 0.95, 0.99"
_SKETCH_ACCURACY = "0.01"  # the relative accuracy the sketch tables were created with


@dataclass(frozen=True, slots=True)
class OverviewRange:
    """Whole-minute bounds [start_s, end_s) and a bucket width in seconds."""

    start_s: int
    end_s: int
    step_s: int


def overview_range(start_ns: int, end_ns: int, step_s: int | None) -> OverviewRange:
    """Round to whole minutes (the rollup's grain) and pick or check the bucket width.

    Default step: one minute up to a day, else the smallest whole minute giving at most
    1,440 buckets.
    """
    start_s = start_ns // NS_PER_S // 60 * 60
    end_s = -(-end_ns // (60 * NS_PER_S)) * 60
    if start_s >= end_s:
        raise InvalidParameter("start must be before end")
    span = end_s - start_s
    if step_s is None:  # from the range asked for: rounding to minutes must not double it
        asked_s = -(-(end_ns - start_ns) // NS_PER_S)
        step_s = max(60, -(-asked_s // (1440 * 60)) * 60)
    if step_s < 60 or step_s % 60:
        raise InvalidParameter(f"step={step_s} is not a whole number of minutes: use 60, 300, ...")
    if -(-span // step_s) > MAX_POINTS:
        raise InvalidParameter(
            f"step={step_s} gives more than {MAX_POINTS} buckets for this range: "
            "use a larger step or a shorter range"
        )
    return OverviewRange(start_s, end_s, step_s)


def _where(rng: OverviewRange, tenant: str | None) -> tuple[str, dict[str, Any]]:
    where = "Minute >= toDateTime({start:UInt32}) AND Minute < toDateTime({end:UInt32})"
    params: dict[str, Any] = {"start": rng.start_s, "end": rng.end_s}
    if tenant is not None:
        where += " AND TenantId = {tenant:String}"
        params["tenant"] = tenant
    return where, params


# the totals' columns (latency quantiles come from the sketch tables: `sketch_source`)
_SOURCE_COLUMNS = (
    "TenantId, Model, Requests, Errors, InputTokens, OutputTokens, CacheReadTokens, "
    "ReasoningTokens, CostUsd, UnpricedRequests"
)


def quantile_range(rng: OverviewRange) -> tuple[int, int]:
    """[start_s, end_s) the latency quantiles cover: the range itself, or from
    WHOLE_HOUR_QUANTILES_S on, the enclosing whole hours."""
    if rng.end_s - rng.start_s < WHOLE_HOUR_QUANTILES_S:
        return rng.start_s, rng.end_s
    return rng.start_s // 3600 * 3600, -(-rng.end_s // 3600) * 3600


def rollup_source(
    rng: OverviewRange,
    tenant: str | None,
    *,
    columns: str = _SOURCE_COLUMNS,
    hours: str = "llm_rollup_1h",
    minutes: str = "llm_rollup_1m",
) -> tuple[str, dict[str, Any]]:
    """A subquery over the range: whole hours from the `hours` table, the partial hours at
    either edge from the `minutes` table; both hold the same sums (or mergeable states)."""
    scope = "" if tenant is None else " AND TenantId = {tenant:String}"
    params: dict[str, Any] = {"start": rng.start_s, "end": rng.end_s}
    if tenant is not None:
        params["tenant"] = tenant
    first_hour = -(-rng.start_s // 3600) * 3600
    last_hour = rng.end_s // 3600 * 3600
    if first_hour >= last_hour:  # no whole hour inside: minutes only
        return (
            f"SELECT {columns} FROM {{db}}.{minutes} WHERE Minute >= "
            f"toDateTime({{start:UInt32}}) AND Minute < toDateTime({{end:UInt32}}){scope}",
            params,
        )
    params.update(first_hour=first_hour, last_hour=last_hour)
    return (
        f"SELECT {columns} FROM {{db}}.{hours} "
        "WHERE Hour >= toDateTime({first_hour:UInt32}) AND Hour < toDateTime({last_hour:UInt32})"
        f"{scope} UNION ALL "
        f"SELECT {columns} FROM {{db}}.{minutes} "
        "WHERE ((Minute >= toDateTime({start:UInt32}) AND Minute < toDateTime({first_hour:UInt32}))"
        " OR (Minute >= toDateTime({last_hour:UInt32}) AND Minute < toDateTime({end:UInt32})))"
        f"{scope}",
        params,
    )


def sketch_source(rng: OverviewRange, tenant: str | None) -> tuple[str, dict[str, Any]]:
    """`rollup_source` over the per-tenant latency sketches (migration 0012); for every
    tenant over whole hours, the hourly sketches merged across tenants (0015)."""
    if tenant is None and rng.start_s % 3600 == 0 and rng.end_s % 3600 == 0:
        return (
            "SELECT DurationNs, TimeToFirstTokenMs FROM {db}.llm_latency_sketch_all_1h "
            "WHERE Hour >= toDateTime({start:UInt32}) AND Hour < toDateTime({end:UInt32})",
            {"start": rng.start_s, "end": rng.end_s},
        )
    return rollup_source(
        rng,
        tenant,
        columns="DurationNs, TimeToFirstTokenMs",
        hours="llm_latency_sketch_1h",
        minutes="llm_latency_sketch_1m",
    )


def _quantiles(values: Sequence[float], scale: float, present: bool) -> Quantiles:
    def one(value: float) -> float | None:
        return None if math.isnan(value) else value / scale

    if not present or len(values) != 3:
        return Quantiles(p50_ms=None, p95_ms=None, p99_ms=None)
    p50, p95, p99 = values
    return Quantiles(p50_ms=one(p50), p95_ms=one(p95), p99_ms=one(p99))


_POINTS = TypeAdapter(list[OverviewPoint])
# the series' costs as `format_cost` writes them (all 12 places), formatted by the engine:
# 1,440 Decimals parsed and formatted in Python cost ~1.5 ms of the overview's critical path
SERIES_COST = "toDecimalString(sum(CostUsd), 12)"


def fill_series(
    rng: OverviewRange, buckets: Sequence[tuple[int, int, int, str]]
) -> list[OverviewPoint]:
    """A point for every bucket of the range (zeros where there was no traffic); costs come
    formatted (`SERIES_COST`).

    A day of minutes is 1,441 points: their times are formatted by numpy in one call and
    the points validated by pydantic-core in one call, ~2x faster than a model per point.
    """
    found = {int(t): (int(r), int(e), str(c)) for t, r, e, c in buckets}
    zero = (0, 0, format_cost(Decimal(0)))
    first = rng.start_s // rng.step_s * rng.step_s
    starts = numpy.arange(first, rng.end_s, rng.step_s, dtype=numpy.int64)
    times = numpy.datetime_as_string(starts.astype("datetime64[s]"), unit="s")
    points = []
    for t, text in zip(starts.tolist(), times.tolist(), strict=True):
        requests, errors, cost = found.get(t, zero)
        width_min = (min(t + rng.step_s, rng.end_s) - max(t, rng.start_s)) / 60
        points.append(
            {
                "time": text + "Z",
                "requests": requests,
                "errors": errors,
                "cost_usd": cost,
                "requests_per_minute": requests / width_min,
            }
        )
    return _POINTS.validate_python(points)


def budget_status(usage: BudgetUsage) -> BudgetStatus:
    return BudgetStatus(
        tenant=usage.tenant,
        month=usage.month,
        budget_usd=format(usage.budget_usd, "f"),
        spent_usd=format_cost(usage.spent_usd),
        used_ratio=usage.used_ratio,
    )


# The overview's queries are independent: run them side by side (chDB releases the GIL, the
# Database pool allows 4 calls at once), so a request costs its slowest query, not the sum.
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llmtel-overview")


def _top(rows: Sequence[tuple[Any, ...]], top: int) -> list[tuple[Any, ...]]:
    """Rows (key, requests, errors, input, output, cost, ...) by cost, requests, key."""
    return sorted(rows, key=lambda r: (-Decimal(r[5]), -int(r[1]), str(r[0])))[:top]


def overview(
    db: Database,
    tenant: str | None,
    rng: OverviewRange,
    *,
    top: int,
    with_tenants: bool,
    budgets: Callable[[], Sequence[BudgetUsage]],
) -> Overview:
    """The overview of `tenant` (None: every tenant) over `rng`.

    `with_tenants` adds the top tenants by cost (admin only); `budgets` reads budget use.
    Four independent queries (each costs a few ms of fixed overhead in the engine): totals
    with the per-model and per-tenant groups in one pass, quantiles, series, budgets.
    """
    source, params = rollup_source(rng, tenant)
    where, minute_params = _where(rng, tenant)
    groups = _POOL.submit(
        db.query,
        "SELECT grouping(TenantId, Model) AS g, if(g = 2, Model, TenantId), sum(Requests), "
        "sum(Errors), sum(InputTokens), sum(OutputTokens), sum(CostUsd), "
        "sum(CacheReadTokens), sum(ReasoningTokens), sum(UnpricedRequests) "
        f"FROM ({source}) GROUP BY GROUPING SETS ((), (Model), (TenantId))",
        params,
    )
    q_start, q_end = quantile_range(rng)
    q_source, q_params = sketch_source(OverviewRange(q_start, q_end, rng.step_s), tenant)
    quantiles = _POOL.submit(
        db.query,
        f"SELECT quantilesDDMerge({_SKETCH_ACCURACY}, {_QUANTILES})(DurationNs), "
        f"quantilesDDMerge({_SKETCH_ACCURACY}, {_QUANTILES})(TimeToFirstTokenMs) "
        f"FROM ({q_source})",
        q_params,
    )
    series = _POOL.submit(
        db.query,
        "SELECT intDiv(toUnixTimestamp(Minute), {step:UInt32}) * {step:UInt32} AS t, "
        f"sum(Requests), sum(Errors), {SERIES_COST} FROM {{db}}.llm_tenant_series_1m WHERE {where} "
        "GROUP BY t ORDER BY t",
        {**minute_params, "step": rng.step_s},
    )
    budget_use = _POOL.submit(budgets)
    by_set: dict[int, list[tuple[Any, ...]]] = {1: [], 2: [], 3: []}
    for row in groups.result():
        by_set[int(row[0])].append(row[1:])
    total = by_set[3][0] if by_set[3] else ("", 0, 0, 0, 0, Decimal(0), 0, 0, 0)
    _, requests, errors, inp, out, cost, cache_read, reasoning, unpriced = total
    duration_q, ttft_q = quantiles.result()[0]
    return Overview(
        start=format_seconds(rng.start_s),
        end=format_seconds(rng.end_s),
        tenant=tenant,
        step_seconds=rng.step_s,
        quantiles_start=format_seconds(q_start),
        quantiles_end=format_seconds(q_end),
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        cost_usd=format_cost(Decimal(cost)),
        unpriced_requests=unpriced,
        tokens=TokenCounts(input=inp, output=out, cache_read=cache_read, reasoning=reasoning),
        latency=_quantiles(duration_q, 1_000_000, bool(requests)),
        time_to_first_token=_quantiles(ttft_q, 1, bool(requests)),
        series=fill_series(rng, series.result()),
        top_models=[
            TopModel(
                model=str(m),
                requests=int(r),
                errors=int(e),
                input_tokens=int(i),
                output_tokens=int(o),
                cost_usd=format_cost(Decimal(c)),
            )
            for m, r, e, i, o, c, *_ in _top(by_set[2], top)
        ],
        top_tenants=None
        if not with_tenants
        else [
            TopTenant(tenant=str(t), requests=int(r), cost_usd=format_cost(Decimal(c)))
            for t, r, _, _, _, c, *_ in _top(by_set[1], top)
        ],
        budgets=[budget_status(b) for b in budget_use.result()],
    )
