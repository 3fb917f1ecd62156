"""The per-tenant LLM series llmtel derives from its rollups, as SQL over the rollup tables.

Every series is a counter. Its per-minute increments come from one rollup row set; the
value of a series at time t is the sum of the increments of every minute that ended at or
before t (`Minute + 60 <= t`): a minute is published once it is complete. `/metrics`
(at scrape time) and PromQL (at any time) both use exactly this definition.

Cardinality: per tenant the `top_models` models with the most requests of all time keep
their name; the rest are folded into `model="other"` (a span without a model is
`model="unknown"`), the same folding in `/metrics` and PromQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Upper bounds (seconds) of the latency histograms; they are also written into
# schema/migrations/0007_llm_latency_1m.sql, which buckets each span once, at insert.
DURATION_BUCKETS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, float("inf"),
)  # fmt: skip
TTFT_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, float("inf"),
)  # fmt: skip

Kind = Literal["counter", "histogram"]


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family as `/metrics` exposes it (# HELP / # TYPE)."""

    name: str  # counters: with the `_total` suffix, as in the exposition's TYPE line
    kind: Kind
    help: str
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Metric:
    """One series name, its labels, and the SQL of its per-minute increments.

    `sql` selects the label columns (named as the labels), `Minute` and `v` (Float64);
    `$WHERE` takes conditions on the rollup's own columns, `$FOLD` the model folding.
    """

    name: str
    family: Family
    labels: tuple[str, ...]
    sql: str


def le_labels(bounds: tuple[float, ...]) -> list[str]:
    """`le` label values as prometheus-client writes them (`1.0`, `+Inf`)."""
    return ["+Inf" if bound == float("inf") else repr(float(bound)) for bound in bounds]


def _array_literal(values: list[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


REQUESTS = Family(
    "llmtel_llm_requests_total",
    "counter",
    "LLM requests per tenant, service, model and status (ok, error), from the rollups.",
)
TOKENS = Family(
    "llmtel_llm_tokens_total",
    "counter",
    "LLM tokens per tenant, model and type (input, output, cache_read, reasoning).",
)
COST = Family(
    "llmtel_llm_cost_usd_total",
    "counter",
    "LLM cost in USD per tenant and model (priced requests only), from the rollups.",
)
DURATION = Family(
    "llmtel_llm_request_duration_seconds",
    "histogram",
    "Duration of LLM request spans per tenant and model.",
    "seconds",
)
TTFT = Family(
    "llmtel_llm_time_to_first_token_seconds",
    "histogram",
    "Time to first token of LLM request spans that report it, per tenant and model.",
    "seconds",
)
FAMILIES: tuple[Family, ...] = (REQUESTS, TOKENS, COST, DURATION, TTFT)

_ROLLUP = "FROM {db}.llm_rollup_1m"
_LATENCY = "FROM {db}.llm_latency_1m"


def _histogram(
    family: Family, buckets: str, bounds: tuple[float, ...], total: str, count: str
) -> list[Metric]:
    les = _array_literal(le_labels(bounds))
    labels = ("tenant", "model")
    head = "SELECT TenantId AS tenant, $FOLD AS model"
    return [
        Metric(
            f"{family.name}_bucket",
            family,
            (*labels, "le"),
            f"{head}, b.1 AS le, Minute, toFloat64(b.2) AS v {_LATENCY} "
            f"ARRAY JOIN arrayZip({les}, arrayCumSum(finalizeAggregation({buckets}))) AS b "
            "WHERE $WHERE",
        ),
        Metric(
            f"{family.name}_sum",
            family,
            labels,
            f"{head}, Minute, toFloat64({total}) AS v {_LATENCY} WHERE $WHERE",
        ),
        Metric(
            f"{family.name}_count",
            family,
            labels,
            f"{head}, Minute, toFloat64({count}) AS v {_LATENCY} WHERE $WHERE",
        ),
    ]


METRICS: tuple[Metric, ...] = (
    Metric(
        REQUESTS.name,
        REQUESTS,
        ("tenant", "service", "model", "status"),
        "SELECT TenantId AS tenant, ServiceName AS service, $FOLD AS model, s.1 AS status, "
        f"Minute, toFloat64(s.2) AS v {_ROLLUP} "
        "ARRAY JOIN [('ok', toFloat64(Requests - Errors)), ('error', toFloat64(Errors))] AS s "
        "WHERE $WHERE",
    ),
    Metric(
        TOKENS.name,
        TOKENS,
        ("tenant", "model", "type"),
        "SELECT TenantId AS tenant, $FOLD AS model, k.1 AS type, "
        f"Minute, toFloat64(k.2) AS v {_ROLLUP} "
        "ARRAY JOIN [('input', toFloat64(InputTokens)), ('output', toFloat64(OutputTokens)), "
        "('cache_read', toFloat64(CacheReadTokens)), "
        "('reasoning', toFloat64(ReasoningTokens))] AS k WHERE $WHERE",
    ),
    Metric(
        COST.name,
        COST,
        ("tenant", "model"),
        f"SELECT TenantId AS tenant, $FOLD AS model, Minute, toFloat64(CostUsd) AS v {_ROLLUP} "
        "WHERE $WHERE",
    ),
    *_histogram(DURATION, "DurationBuckets", DURATION_BUCKETS, "DurationSumS", "Requests"),
    *_histogram(TTFT, "TtftBuckets", TTFT_BUCKETS, "TtftSumS", "TtftCount"),
)
BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}


def model_fold(top_models: int) -> str:
    """SQL: the model label of a rollup row (top-N per tenant by requests, else 'other')."""
    top = (
        "SELECT TenantId, Model FROM {db}.llm_rollup_1m GROUP BY TenantId, Model "
        f"ORDER BY sum(Requests) DESC, Model LIMIT {int(top_models)} BY TenantId"
    )
    return f"if((TenantId, Model) IN ({top}), if(Model = '', 'unknown', Model), 'other')"


def source_sql(metric: Metric, top_models: int, where: str) -> str:
    """The increments query of `metric`, restricted by `where` (on rollup columns)."""
    return metric.sql.replace("$FOLD", model_fold(top_models)).replace("$WHERE", where or "1")
