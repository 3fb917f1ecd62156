"""The per-tenant LLM series llmtel derives from its rollups, as SQL over the rollup tables.

Every series is a counter. Its per-minute increments come from one rollup row set; the
value of a series at time t is the sum of the increments of every minute that ended at or
before t (`Minute + 60 <= t`): a minute is published once it is complete. `/metrics`
(at scrape time) and PromQL (at any time) both use exactly this definition.

Every series can be read at three grains: the minute tables, and their hourly and daily
copies (migration 0010, same label columns), so that a query reads minutes only where its
steps need them and everything before from a few coarse rows (`Tier`, `tiered_source`).
PromQL reads the series without a service label (cost, tokens) from a minute table without
the service (migration 0013, `Reading`).

Cardinality: per tenant the `top_models` models with the most requests of all time keep
their name; the rest are folded into `model="other"` (a span without a model is
`model="unknown"`), the same folding in `/metrics` and PromQL.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


# the rollups PromQL reads: per tenant, service and model (minutes: llm_rollup_1m), per tenant
# and model (minutes: llm_model_counters_1m; hours and days as the former), latency buckets
Rollup = Literal["counters", "model_counters", "latency"]

# the label columns of the rollups (every label but the one a `Reading` splits a row by)
LABEL_COLUMNS: dict[str, str] = {"tenant": "TenantId", "service": "ServiceName", "model": "Model"}


@dataclass(frozen=True, slots=True)
class Reading:
    """A metric's increments as PromQL reads them: per rollup row, the increments of the
    series the row stands for, with the row's label columns (`LABEL_COLUMNS`) as labels.

    `values`: one SQL expression over the rollup's `columns` per series (of one type), told
    apart by the label `split` (`split_values`, in the same order); or `state`: a
    sumForEach state column of per-bucket counts, whose running sum over the buckets is
    the `le` series.
    """

    rollup: Rollup
    columns: tuple[str, ...]
    values: tuple[str, ...] = ()
    state: str = ""
    split: str = ""
    split_values: tuple[str, ...] = ("",)


@dataclass(frozen=True, slots=True)
class Metric:
    """One series name, its labels, and the SQL of its per-minute increments.

    `sql` selects the label columns (named as the labels), `Minute` and `v` (Float64);
    `$WHERE` takes conditions on the rollup's own columns, `$FOLD` the model folding,
    `$TIME` and `$GRAIN` the time column and table suffix of the tier read. `reading`
    says the same for PromQL's evaluation (api/promql/rollup_sql.py).
    """

    name: str
    family: Family
    labels: tuple[str, ...]
    sql: str
    reading: Reading

    def replace_table(self, table: str, source: str) -> Metric:
        """This metric read from `source` (a subquery) instead of `table`."""
        return replace(self, sql=self.sql.replace(table, source))


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

_ROLLUP = "FROM {db}.llm_$COUNTERS"
_LATENCY = "FROM {db}.llm_latency_$GRAIN"


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
            f"{head}, b.1 AS le, $TIME, toFloat64(b.2) AS v {_LATENCY} "
            f"ARRAY JOIN arrayZip({les}, arrayCumSum(finalizeAggregation({buckets}))) AS b "
            "WHERE $WHERE",
            Reading(
                "latency",
                (buckets,),
                state=buckets,
                split="le",
                split_values=tuple(le_labels(bounds)),
            ),
        ),
        Metric(
            f"{family.name}_sum",
            family,
            labels,
            f"{head}, $TIME, toFloat64({total}) AS v {_LATENCY} WHERE $WHERE",
            Reading("latency", (total,), (total,)),
        ),
        Metric(
            f"{family.name}_count",
            family,
            labels,
            f"{head}, $TIME, toFloat64({count}) AS v {_LATENCY} WHERE $WHERE",
            Reading("latency", (count,), (count,)),
        ),
    ]


_TOKENS = ("InputTokens", "OutputTokens", "CacheReadTokens", "ReasoningTokens")
METRICS: tuple[Metric, ...] = (
    Metric(
        REQUESTS.name,
        REQUESTS,
        ("tenant", "service", "model", "status"),
        "SELECT TenantId AS tenant, ServiceName AS service, $FOLD AS model, s.1 AS status, "
        f"$TIME, toFloat64(s.2) AS v {_ROLLUP} "
        "ARRAY JOIN [('ok', toFloat64(Requests - Errors)), ('error', toFloat64(Errors))] AS s "
        "WHERE $WHERE",
        Reading(
            "counters",
            ("Requests", "Errors"),
            ("toUInt64(Requests - Errors)", "toUInt64(Errors)"),
            split="status",
            split_values=("ok", "error"),
        ),
    ),
    Metric(
        TOKENS.name,
        TOKENS,
        ("tenant", "model", "type"),
        "SELECT TenantId AS tenant, $FOLD AS model, k.1 AS type, "
        f"$TIME, toFloat64(k.2) AS v {_ROLLUP} "
        "ARRAY JOIN [('input', toFloat64(InputTokens)), ('output', toFloat64(OutputTokens)), "
        "('cache_read', toFloat64(CacheReadTokens)), "
        "('reasoning', toFloat64(ReasoningTokens))] AS k WHERE $WHERE",
        Reading(
            "model_counters",
            _TOKENS,
            tuple(f"toUInt64({column})" for column in _TOKENS),
            split="type",
            split_values=("input", "output", "cache_read", "reasoning"),
        ),
    ),
    Metric(
        COST.name,
        COST,
        ("tenant", "model"),
        f"SELECT TenantId AS tenant, $FOLD AS model, $TIME, toFloat64(CostUsd) AS v {_ROLLUP} "
        "WHERE $WHERE",
        Reading("model_counters", ("CostUsd",), ("CostUsd",)),
    ),
    *_histogram(DURATION, "DurationBuckets", DURATION_BUCKETS, "DurationSumS", "Requests"),
    *_histogram(TTFT, "TtftBuckets", TTFT_BUCKETS, "TtftSumS", "TtftCount"),
)
BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}


@dataclass(frozen=True, slots=True)
class Tier:
    """One grain of the rollups: its time column, the tables' suffix and its length."""

    column: str
    grain: str
    seconds: int

    def counters(self) -> str:
        """The table suffix of the rollup_1m series at this grain (`llm_` + it)."""
        return "rollup_1m" if self.grain == "1m" else f"counters_{self.grain}"

    def time_select(self) -> str:
        """The bucket start, selected as `Minute` (what the series SQL expects)."""
        return "Minute" if self.column == "Minute" else f"{self.column} AS Minute"

    def table(self, rollup: Rollup) -> str:
        """The table (without the database) of `rollup` at this grain."""
        if rollup == "latency":
            return f"llm_latency_{self.grain}"
        if rollup == "model_counters" and self.grain == "1m":
            return "llm_model_counters_1m"
        return f"llm_{self.counters()}"


MINUTES = Tier("Minute", "1m", 60)
HOURS = Tier("Hour", "1h", 3_600)
DAYS = Tier("Day", "1d", 86_400)


def model_fold(top_models: int, tenant: str = "TenantId", model: str = "Model") -> str:
    """SQL: the model label of a rollup row (top-N per tenant by requests, else 'other').

    Ranked over the daily copy: the same all-time sums as the minute rollup, 1,440x fewer rows.
    """
    top = (
        "SELECT TenantId, Model FROM {db}.llm_counters_1d GROUP BY TenantId, Model "
        f"ORDER BY sum(Requests) DESC, Model LIMIT {int(top_models)} BY TenantId"
    )
    return f"if(({tenant}, {model}) IN ({top}), if({model} = '', 'unknown', {model}), 'other')"


def source_sql(
    metric: Metric, top_models: int, where: str, tier: Tier = MINUTES, *, fold: bool = True
) -> str:
    """The increments query of `metric` at `tier`, restricted by `where` (on its columns).

    `fold=False` leaves the model label as stored (the caller folds it).
    """
    return (
        metric.sql.replace("$FOLD", model_fold(top_models) if fold else "Model")
        .replace("$WHERE", where or "1")
        .replace("$TIME", tier.time_select())
        .replace("$COUNTERS", tier.counters())
        .replace("$GRAIN", tier.grain)
    )


_COLUMNS: dict[Rollup, str] = {
    "counters": "TenantId, ServiceName, Model, Requests, Errors, InputTokens, OutputTokens, "
    "CacheReadTokens, ReasoningTokens, CostUsd",
    "latency": "TenantId, Model, Requests, DurationSumS, DurationBuckets, TtftCount, TtftSumS, "
    "TtftBuckets",
}


def tiered_rows(
    rollup: Rollup, columns: str, minutes_from_s: int, until_s: int | None, where: list[str]
) -> str:
    """SQL: `Minute` and `columns` of every row of `rollup` up to `until_s` (None: all)
    that meets the conditions `where`: minutes from the hour of `minutes_from_s` on from the
    minute table, whole hours of that day before it from the hourly copy, whole days before
    from the daily copy (a coarse row's `Minute` is its bucket's start). An empty grain is
    not read."""
    hour = max(minutes_from_s // HOURS.seconds * HOURS.seconds, 0)
    day = hour // DAYS.seconds * DAYS.seconds
    minutes = f"Minute >= toDateTime({hour})"
    if until_s is not None:
        minutes += f" AND Minute <= toDateTime({max(until_s, 0)})"
    parts = [
        (DAYS, f"Day < toDateTime({day})", day > 0),
        (HOURS, f"Hour >= toDateTime({day}) AND Hour < toDateTime({hour})", hour > day),
        (MINUTES, minutes, True),
    ]
    return " UNION ALL ".join(
        f"SELECT {tier.time_select()}, {columns} FROM {{db}}.{tier.table(rollup)} "
        f"WHERE {' AND '.join([cond, *where])}"
        for tier, cond, wanted in parts
        if wanted
    )


def tiered_source(
    metric: Metric, top_models: int, minutes_from_s: int, until_s: int, scope: str
) -> str:
    """Increments of `metric` for every minute up to `until_s`, under `scope`.

    The rows come from `tiered_rows` (minutes, hours, days). The rows of a coarse tier
    carry their bucket's start as `Minute`: fine for sums and for "did the series exist
    before `minutes_from_s`", nothing finer. `scope` is a condition on the rollup columns
    (the tenant). The metric's own SQL (labels, ARRAY JOIN, model folding) is applied once,
    over the union of the three reads: the engine's planning time grows with the size of
    the statement.
    """
    rollup: Rollup = "latency" if metric.reading.rollup == "latency" else "counters"
    union = tiered_rows(rollup, _COLUMNS[rollup], minutes_from_s, until_s, [scope])
    table = "{db}.llm_latency_$GRAIN" if rollup == "latency" else "{db}.llm_$COUNTERS"
    return source_sql(metric.replace_table(table, f"({union})"), top_models, "", MINUTES)
