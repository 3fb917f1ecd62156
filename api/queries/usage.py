"""Usage and cost per tenant, read from the per-minute rollup `llm_rollup_1m` only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal, get_args

from api.models import UsageFigures, UsageReport, UsageRow
from api.params import NS_PER_S, format_cost, format_day, format_seconds
from schema.clickhouse import Database

GroupKey = Literal["tenant", "model", "service", "provider", "day", "hour"]
GROUP_KEYS: tuple[str, ...] = get_args(GroupKey)

# SQL expression per group key; day and hour as unix seconds of their (UTC) start
_GROUP_EXPR: dict[str, str] = {
    "tenant": "TenantId",
    "model": "Model",
    "service": "ServiceName",
    "provider": "Provider",
    "day": "toUnixTimestamp(toStartOfDay(Minute))",
    "hour": "toUnixTimestamp(toStartOfHour(Minute))",
}

_FIGURES = """
    sum(Requests), sum(Errors), sum(InputTokens), sum(OutputTokens), sum(CacheReadTokens),
    sum(ReasoningTokens), sum(CostUsd), sum(UnpricedRequests),
    quantilesTDigestMerge(0.5, 0.95)(DurationNs), quantileTDigestMerge(0.5)(TimeToFirstTokenMs)
"""


def parse_group_by(value: str | None) -> list[str]:
    """`model,day` -> ["model", "day"]; ValueError naming the allowed keys otherwise."""
    if not value:
        return []
    keys = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [key for key in keys if key not in GROUP_KEYS]
    if unknown:
        raise ValueError(
            f"cannot group by {', '.join(unknown)}: use a comma list of {', '.join(GROUP_KEYS)}"
        )
    return list(dict.fromkeys(keys))


def _ms(ns: float) -> float | None:
    return None if math.isnan(ns) else ns / 1_000_000


def _figures(values: Sequence[Any]) -> dict[str, Any]:
    (requests, errors, input_tokens, output_tokens, cache_read, reasoning, cost, unpriced,
     duration_q, ttft_p50) = values  # fmt: skip
    return {
        "requests": requests,
        "errors": errors,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read,
        "reasoning_tokens": reasoning,
        "cost_usd": format_cost(Decimal(cost)),
        "unpriced_requests": unpriced,
        "duration_p50_ms": _ms(duration_q[0]) if requests else None,
        "duration_p95_ms": _ms(duration_q[1]) if requests else None,
        "time_to_first_token_p50_ms": None if math.isnan(ttft_p50) else float(ttft_p50),
    }


def usage_report(
    db: Database, tenant: str | None, start_ns: int, end_ns: int, group_by: Sequence[str]
) -> UsageReport:
    """Usage between `start_ns` and `end_ns` for `tenant` (None: all), grouped by `group_by`.

    The rollup keeps minutes: the start rounds down and the end up to a whole minute.
    """
    start_s = start_ns // NS_PER_S // 60 * 60
    end_s = -(-end_ns // (60 * NS_PER_S)) * 60
    where = "Minute >= toDateTime({start:UInt32}) AND Minute < toDateTime({end:UInt32})"
    params: dict[str, Any] = {"start": start_s, "end": end_s}
    if tenant is not None:
        where += " AND TenantId = {tenant:String}"
        params["tenant"] = tenant
    totals_rows = db.query(f"SELECT {_FIGURES} FROM {{db}}.llm_rollup_1m WHERE {where}", params)
    totals = UsageFigures(**_figures(totals_rows[0]))
    rows: list[UsageRow] = []
    if group_by:
        keys = ", ".join(f"{_GROUP_EXPR[key]} AS g_{key}" for key in group_by)
        order = ", ".join(f"g_{key}" for key in group_by)
        sql = (
            f"SELECT {keys}, {_FIGURES} FROM {{db}}.llm_rollup_1m WHERE {where} "
            f"GROUP BY {order} ORDER BY {order}"
        )
        for row in db.query(sql, params):
            labels: dict[str, Any] = {}
            for key, value in zip(group_by, row, strict=False):
                if key == "day":
                    labels[key] = format_day(int(value))
                elif key == "hour":
                    labels[key] = format_seconds(int(value))
                else:
                    labels[key] = str(value)
            rows.append(UsageRow(**labels, **_figures(row[len(group_by) :])))
    else:
        rows.append(UsageRow(**totals.model_dump()))
    return UsageReport(
        start=format_seconds(start_s),
        end=format_seconds(end_s),
        tenant=tenant,
        group_by=list(group_by),
        rows=rows,
        totals=totals,
    )
