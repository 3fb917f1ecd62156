"""Query latency at scale: overview, invoice, trace lookup and PromQL over N synthetic spans.

Loads `--spans` synthetic spans (default 100M) into a fresh embedded engine with
`INSERT ... SELECT FROM numbers()` into `otel_traces`, in chunks, so every materialized view
(trace-id ranges, minute rollups, billing days, ...) fills itself as in production. Then asks
the API in process (FastAPI app through httpx.ASGITransport: routing, auth, queries and
serialisation; no network) and prints p50/p95 latency per query.

    python bench/bench_queries.py [--spans 100_000_000] [--days 14] [--runs 40]
                                  [--data-dir DIR [--load-only | --reuse]]

The shape: `--tenants` tenants (default 10), 4 services, 6 models (one unpriced), traces of
four spans (one HTTP server span, three LLM calls), 2% errors, spread evenly over the last
`--days` days up to now. With `--data-dir DIR --reuse` a second run skips the load.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from schema.clickhouse import Database  # noqa: E402
from schema.migrate import migrate  # noqa: E402
from schema.models import TenantSettings  # noqa: E402
from schema.tenants import TenantStore  # noqa: E402

ADMIN_KEY = "llmtel_bench_admin_key_0123456789abcdef"
NS = 1_000_000_000
SPANS_PER_TRACE = 4
# (model, provider, USD per million input tokens, per million output tokens; None: unpriced)
MODELS: list[tuple[str, str, str | None, str | None]] = [
    ("gpt-4o", "openai", "2.5", "10"),
    ("gpt-4o-mini", "openai", "0.15", "0.6"),
    ("claude-sonnet-4-5", "anthropic", "3", "15"),
    ("claude-3-5-haiku", "anthropic", "0.8", "4"),
    ("gemini-2.5-flash", "google", "0.3", "2.5"),
    ("house-llm", "in-house", None, None),
]
SERVICES = ["chat", "rag", "agent", "batch"]

# both cores for the load, in large blocks (each block runs every materialized view once)
LOAD_SETTINGS = {
    "max_threads": 2,
    "max_insert_threads": 2,
    "min_insert_block_size_rows": 1_048_576,
    "min_insert_block_size_bytes": 256 * 2**20,
}
PROMQL_INSTANT = [
    "sum by (tenant) (rate(llmtel_llm_cost_usd_total[5m]))",
    "histogram_quantile(0.95, sum by (le, model) "
    "(rate(llmtel_llm_request_duration_seconds_bucket[5m])))",
    "topk(3, sum by (model) (increase(llmtel_llm_tokens_total[1h])))",
    "sum by (tenant, status) (rate(llmtel_llm_requests_total[5m]))",
]
PROMQL_RANGE = "sum by (model) (rate(llmtel_llm_cost_usd_total[5m]))"


def _array(values: list[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def load_sql(tenants: int, first_ns: int, step_ns: int) -> str:
    """INSERT ... SELECT of synthetic spans for numbers({offset}, {count})."""
    models = _array([m for m, _, _, _ in MODELS])
    providers = _array([p for _, p, _, _ in MODELS])
    price_in = "[" + ", ".join(p or "0" for _, _, p, _ in MODELS) + "]"
    price_out = "[" + ", ".join(p or "0" for _, _, _, p in MODELS) + "]"
    unpriced = len(MODELS)  # the last model has no price
    return f"""
INSERT INTO {{db}}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind,
    ServiceName, ResourceAttributes, ScopeName, SpanAttributes, Duration, StatusCode,
    TenantId, IsLlm, LlmProvider, LlmOperation, LlmRequestModel, LlmResponseModel,
    LlmInputTokens, LlmOutputTokens, LlmCacheReadTokens, LlmReasoningTokens, LlmCostUsd,
    LlmCostSource, LlmTimeToFirstTokenMs)
SELECT
    fromUnixTimestamp64Nano(toInt64({first_ns} + number * {step_ns})),
    leftPad(lower(hex(cityHash64(intDiv(number, {SPANS_PER_TRACE})))), 16, '0')
        || leftPad(lower(hex(cityHash64(intDiv(number, {SPANS_PER_TRACE}), 1))), 16, '0'),
    leftPad(lower(hex(cityHash64(number, 2))), 16, '0'),
    if(is_llm, leftPad(lower(hex(cityHash64(number - number % {SPANS_PER_TRACE}, 2))), 16, '0'),
       ''),
    if(is_llm, concat('chat ', model), 'POST /v1/answer'),
    if(is_llm, 'Client', 'Server'),
    service,
    map('service.name', service, 'deployment.environment', 'prod', 'tenant.id', tenant),
    'bench',
    if(is_llm, map('gen_ai.operation.name', 'chat', 'gen_ai.request.model', model,
                   'gen_ai.provider.name', provider,
                   'gen_ai.usage.input_tokens', toString(input),
                   'gen_ai.usage.output_tokens', toString(output)),
       map('http.route', '/v1/answer', 'http.response.status_code', '200')),
    toUInt64((h % 2800 + 200) * 1000000),
    if(h % 50 = 0, 'Error', 'Ok'),
    tenant,
    is_llm,
    if(is_llm, provider, ''),
    if(is_llm, 'chat', ''),
    if(is_llm, model, ''),
    if(is_llm, model, ''),
    if(is_llm, input, 0),
    if(is_llm, output, 0),
    if(is_llm, cache_read, 0),
    0,
    if(is_llm AND m != {unpriced},
       toDecimal128((input - cache_read) * {price_in}[m] + cache_read * {price_in}[m] / 2
                     + output * {price_out}[m], 12) / 1000000,
       NULL),
    if(is_llm AND m != {unpriced}, 'genai-prices', ''),
    if(is_llm AND h % 5 != 0, (h % 2800 + 200) / 10.0, NULL)
FROM (
    SELECT
        number,
        cityHash64(number, 3) AS h,
        number % {SPANS_PER_TRACE} != 0 AS is_llm,
        concat('tenant', leftPad(toString(cityHash64(intDiv(number, {SPANS_PER_TRACE}), 4)
                                         % {tenants}), 2, '0')) AS tenant,
        {_array(SERVICES)}[cityHash64(intDiv(number, {SPANS_PER_TRACE}), 5) % 4 + 1] AS service,
        toUInt8(cityHash64(number, 6) % {len(MODELS)} + 1) AS m,
        {models}[m] AS model,
        {providers}[m] AS provider,
        toUInt64(h % 4000 + 100) AS input,
        toUInt64(cityHash64(number, 7) % 1000 + 10) AS output,
        toUInt64(if(h % 3 = 0, intDiv(h % 4000 + 100, 4), 0)) AS cache_read
    FROM numbers({{offset:UInt64}}, {{count:UInt64}})
)
"""


def trace_ids_sql(numbers: list[int]) -> str:
    listed = ", ".join(str(n) for n in numbers)
    return (
        f"SELECT leftPad(lower(hex(cityHash64(t))), 16, '0') "
        f"|| leftPad(lower(hex(cityHash64(t, 1))), 16, '0') FROM "
        f"(SELECT toUInt64(arrayJoin([{listed}])) AS t)"
    )


def load(db: Database, spans: int, chunk: int, tenants: int, days: float) -> None:
    now_ns = time.time_ns()
    first_ns = now_ns - int(days * 86_400 * NS)
    step_ns = max(1, (now_ns - first_ns) // spans)
    sql = load_sql(tenants, first_ns, step_ns)
    started = time.perf_counter()
    for offset in range(0, spans, chunk):
        count = min(chunk, spans - offset)
        t0 = time.perf_counter()
        db.command(sql, {"offset": offset, "count": count}, settings=LOAD_SETTINGS)
        took = time.perf_counter() - t0
        done = offset + count
        print(
            f"  loaded {done:>12,} spans  ({count / took:,.0f} spans/s this chunk, "
            f"{time.perf_counter() - started:,.0f} s in all)",
            flush=True,
        )
    print(f"load: {spans:,} spans in {time.perf_counter() - started:,.0f} s", flush=True)


def summary(db: Database) -> None:
    for table in (
        "otel_traces",
        "otel_traces_trace_id_ts",
        "llm_rollup_1m",
        "llm_rollup_1h",
        "llm_billing_1d",
    ):
        rows = db.query(
            "SELECT sum(rows), sum(bytes_on_disk), count() FROM system.parts "
            "WHERE database = {d:String} AND table = {t:String} AND active",
            {"d": db.name, "t": table},
        )
        count, size, parts = rows[0]
        print(f"  {table:<26} {int(count or 0):>13,} rows {int(size or 0) / 2**30:7.2f} GiB "
              f"{int(parts or 0):>5} parts")  # fmt: skip


async def timed(
    name: str, runs: int, call: Callable[[int], Awaitable[httpx.Response]]
) -> tuple[str, float, float]:
    await call(0)  # warm-up
    samples = []
    for i in range(runs):
        t0 = time.perf_counter()
        response = await call(i)
        samples.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return name, statistics.median(samples), p95


async def measure(
    db: Database, store: TenantStore, spans: int, runs: int, at: float | None
) -> None:
    """`at`: evaluate as of this UNIX time (the overview's end, PromQL's time); None: now."""
    # imported here so that a load-only run does not need the API to import
    from api.app import create_app
    from llmtel.serving import freeze_startup_heap, tune_gc
    from streams.unit_prices import GenaiUnitPrices

    tune_gc()  # the server's collector set-up and order (llmtel.serving), or pauses differ
    app = create_app(db, store, prices=GenaiUnitPrices())
    freeze_startup_heap()
    transport = httpx.ASGITransport(app=app)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    _, tenant_key = store.create_key("tenant03")
    tenant = {"authorization": f"Bearer {tenant_key}"}
    rng = random.Random(7)
    traces = [r[0] for r in db.query(trace_ids_sql(
        [rng.randrange(spans // SPANS_PER_TRACE) for _ in range(runs + 1)]))]  # fmt: skip
    month = time.strftime("%Y-%m", time.gmtime())
    results: list[tuple[str, float, float]] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

        def get(path: str, headers: dict[str, str], **params: Any) -> Callable[
            [int], Awaitable[httpx.Response]
        ]:  # fmt: skip
            return lambda _: http.get(path, params=params, headers=headers)

        ending = {} if at is None else {"end": str(int(at) * 10**9)}  # unix ns
        overview = "/api/v1/dashboard/overview"
        results.append(await timed("overview, one tenant, 24 h", runs,
                                   get(overview, tenant, **ending)))  # fmt: skip
        results.append(await timed("overview, all tenants (admin), 24 h", runs,
                                   get(overview, admin, **ending)))  # fmt: skip
        results.append(await timed("invoice, one tenant, this month", runs,
                                   get("/api/v1/billing/invoices/tenant03", admin,
                                       month=month)))  # fmt: skip
        results.append(await timed(
            "trace lookup (random trace)", runs,
            lambda i: http.get(f"/api/v1/traces/{traces[i]}", headers=admin)))  # fmt: skip
        probe = await http.get("/prometheus/api/v1/query", params={"query": "1"}, headers=admin)
        if probe.status_code == 404:
            print("PromQL: /prometheus/api/v1/query does not exist in this tree: skipped")
        else:
            now = time.time() if at is None else at
            for query in PROMQL_INSTANT:
                results.append(await timed(f"PromQL query: {query}", runs,
                                           get("/prometheus/api/v1/query", admin, query=query,
                                               time=f"{now:.3f}")))  # fmt: skip
            results.append(await timed(
                f"PromQL query_range 24 h step 5m: {PROMQL_RANGE}", runs,
                get("/prometheus/api/v1/query_range", admin, query=PROMQL_RANGE,
                    start=f"{now - 86_400:.3f}", end=f"{now:.3f}", step="300")))  # fmt: skip
    print(f"\n{'query':<100} {'p50 ms':>8} {'p95 ms':>8}")
    for name, p50, p95 in results:
        print(f"{name:<100} {p50:8.1f} {p95:8.1f}")


def data_end(db: Database) -> float:
    """The newest span's end, in UNIX seconds (read from the trace-id lookup table)."""
    table = db.table("otel_traces_trace_id_ts")
    return float(db.query(f"SELECT toUnixTimestamp(max(End)) FROM {table}")[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=lambda v: int(v.replace("_", "")), default=100_000_000)
    parser.add_argument("--chunk", type=lambda v: int(v.replace("_", "")), default=5_000_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="data dir already loaded")
    parser.add_argument("--load-only", action="store_true", help="load, do not measure")
    parser.add_argument(
        "--at",
        default="now",
        help="evaluate the overview and PromQL as of: 'now', 'data-end' (the newest span "
        "loaded: current windows hold data, as on a live system) or UNIX seconds",
    )
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="llmtel-bench-queries-"))
    db = Database.connect(f"chdb://{data_dir.resolve()}/clickhouse", "bench")
    migrate(db, retention_days=max(30, int(args.days) + 2))
    store = TenantStore(db)
    store.bootstrap(ADMIN_KEY)
    if not args.reuse:
        for i in range(args.tenants):
            budget = Decimal(1000 * (i + 1)) if i % 2 == 0 else None
            store.create_tenant(f"tenant{i:02d}", TenantSettings(monthly_budget_usd=budget))
        print(f"data: {data_dir}  spans: {args.spans:,}  tenants: {args.tenants}  "
              f"days: {args.days}", flush=True)  # fmt: skip
        load(db, args.spans, args.chunk, args.tenants, args.days)
    summary(db)
    if not args.load_only:
        at = None if args.at == "now" else data_end(db) if args.at == "data-end" else float(args.at)
        if at is not None:
            print(f"evaluated as of {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(at))} UTC")
        asyncio.run(measure(db, store, args.spans, args.runs, at))
    db.close()


if __name__ == "__main__":
    main()
