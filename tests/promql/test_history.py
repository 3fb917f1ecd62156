"""Counter values whose history lies in the daily and hourly copies of the rollups.

A query reads minutes only from the hour of its window on; earlier increments come from
llm_counters_1d / llm_latency_1d (whole days) and the _1h tables (whole hours of the
window's day). Timeline, all in day E (two days ago, UTC) unless said:
  acme gpt-4o: 1 span the day before E (daily copy), 1 at 02:00 (hourly copy),
               80 in minute 05:10 (minute table);
  acme claude-3: 1 span in 05:11, 2 in 05:12 (a series that starts inside the window).
Queried at 05:13:07 with samples every 15 s: the values below are Prometheus' formulas
worked by hand; the zero-point clamp of `increase` needs the exact history (2).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.promql.config import MetricsConfig
from schema.clickhouse import Database
from schema.migrate import migrate
from schema.tenants import TenantStore
from tests.api.conftest import Keys, auth
from tests.api.rows import NS, insert_spans, llm_span
from tests.conftest import TEST_RETENTION_DAYS
from tests.promql.conftest import keys, make_client, store

pytestmark = pytest.mark.clickhouse
__all__ = ["keys", "store"]

DAY = 86_400
E = (int(time.time()) // DAY - 2) * DAY
T = E + 5 * 3600 + 13 * 60 + 7  # 05:13:07


def at(seconds: int, model: str = "gpt-4o") -> dict[str, Any]:
    return llm_span(TenantId="acme", Timestamp=seconds * NS, model=model, cost="0.5")


@pytest.fixture
async def api(db: Database, store: TenantStore) -> AsyncIterator[httpx.AsyncClient]:
    minute = E + 5 * 3600 + 10 * 60
    insert_spans(db, [
        at(E - DAY + 100), at(E + 2 * 3600 + 30),
        *[at(minute + i % 50) for i in range(80)],
        at(minute + 65, "claude-3"), at(minute + 125, "claude-3"), at(minute + 126, "claude-3"),
    ])  # fmt: skip
    async with make_client(db, store, MetricsConfig(top_models=10, sample_interval_s=15)) as c:
        yield c


async def value(api: httpx.AsyncClient, key: str, expr: str, t: float) -> dict[str, str]:
    response = await api.get(
        "/prometheus/api/v1/query", params={"query": expr, "time": str(t)}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return {r["metric"].get("model", ""): r["value"][1] for r in response.json()["data"]["result"]}


async def test_value_sums_days_hours_and_minutes(api: httpx.AsyncClient, keys: Keys) -> None:
    expr = "sum by (model) (llmtel_llm_requests_total)"
    assert await value(api, keys.acme, expr, T) == {"gpt-4o": "82", "claude-3": "3"}
    assert await value(api, keys.acme, expr, E + 5 * 3600 + 10 * 60 + 59) == {"gpt-4o": "2"}
    assert await value(api, keys.acme, expr, E + 3 * 3600) == {"gpt-4o": "2"}
    assert await value(api, keys.acme, expr, E + 2 * 3600 + 59) == {"gpt-4o": "1"}
    cost = await value(api, keys.admin, "llmtel_llm_cost_usd_total", T)
    assert cost == {"gpt-4o": "41", "claude-3": "1.5"}
    buckets = await value(
        api, keys.acme, 'sum by (model) (llmtel_llm_request_duration_seconds_bucket{le="+Inf"})', T
    )
    assert buckets == {"gpt-4o": "82", "claude-3": "3"}


async def test_increase_uses_the_exact_history_and_the_first_sample(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    # gpt-4o: samples 05:08:15 .. 05:13:00 (20, sampled 285 s, average 15 s); V(first) = 2,
    # V(last) = 82: the zero point 285 * 2 / 80 = 7.125 s is nearer than the range start
    # (8 s) and below 1.1 * 15; the end is 7 s away.
    # claude-3 starts inside the range: first sample 05:12:00 (V = 1), last 05:13:00 (V = 3),
    # 5 samples; the start is 233 s away, its zero point 30 s: both above 16.5 s -> 7.5 s.
    got = await value(api, keys.acme, "sum by (model) (increase(llmtel_llm_requests_total[5m]))", T)
    assert float(got["gpt-4o"]) == pytest.approx(80 * (285 + 7.125 + 7) / 285, rel=1e-12)
    assert float(got["claude-3"]) == pytest.approx(2 * (60 + 7.5 + 7) / 60, rel=1e-12)
    rate = await value(api, keys.acme, "sum by (model) (rate(llmtel_llm_requests_total[5m]))", T)
    assert float(rate["gpt-4o"]) == pytest.approx(80 * (285 + 7.125 + 7) / 285 / 300, rel=1e-12)
    # irate: the last two samples, both at or after the first sample
    irate = "sum by (model) (irate(llmtel_llm_requests_total[5m]))"
    at_13 = await value(api, keys.acme, irate, T)  # 05:12:45 -> 05:13:00
    assert at_13["gpt-4o"] == "0" and float(at_13["claude-3"]) == pytest.approx(2 / 15)
    assert await value(api, keys.acme, irate, T - 60) == {"gpt-4o": "0"}  # claude: 1 sample
    at_11 = await value(api, keys.acme, irate, T - 120)  # 05:10:45 -> 05:11:00
    assert float(at_11["gpt-4o"]) == pytest.approx(80 / 15)


async def test_model_folding_ranks_over_all_history(
    db: Database, store: TenantStore, keys: Keys, api: httpx.AsyncClient
) -> None:
    async with make_client(db, store, MetricsConfig(top_models=1, sample_interval_s=15)) as c:
        folded = await value(c, keys.acme, "sum by (model) (llmtel_llm_requests_total)", T)
        assert folded == {"gpt-4o": "82", "other": "3"}
        other = await value(c, keys.acme, 'llmtel_llm_cost_usd_total{model="other"}', T)
        assert other == {"other": "1.5"}


async def test_series_exist_from_their_first_minute_in_any_tier(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    async def models(end: float) -> set[str]:
        response = await api.get(
            "/prometheus/api/v1/series",
            params={"match[]": "llmtel_llm_cost_usd_total", "end": str(end)},
            headers=auth(keys.acme),
        )
        assert response.status_code == 200, response.text
        return {s["model"] for s in response.json()["data"]}

    assert await models(E - DAY + 119) == set()  # its minute ends at E - DAY + 120
    assert await models(E - DAY + 120) == {"gpt-4o"}
    assert await models(E + 5 * 3600 + 11 * 60 + 59) == {"gpt-4o"}
    assert await models(T) == {"gpt-4o", "claude-3"}


async def test_coarse_copies_hold_the_minute_sums(db: Database, api: httpx.AsyncClient) -> None:
    by_grain = {
        table: db.query(
            f"SELECT TenantId, ServiceName, Model, sum(Requests), sum(CostUsd) FROM {{db}}.{table} "
            "GROUP BY ALL ORDER BY ALL"
        )
        for table in ("llm_rollup_1m", "llm_counters_1h", "llm_counters_1d")
    }
    assert by_grain["llm_rollup_1m"] == by_grain["llm_counters_1h"] == by_grain["llm_counters_1d"]
    latency = {
        table: db.query(
            "SELECT TenantId, Model, sum(Requests), sumForEachMerge(DurationBuckets) "
            f"FROM {{db}}.{table} GROUP BY ALL ORDER BY ALL"
        )
        for table in ("llm_latency_1m", "llm_latency_1h", "llm_latency_1d")
    }
    assert latency["llm_latency_1m"] == latency["llm_latency_1h"] == latency["llm_latency_1d"]
    assert len(latency["llm_latency_1m"]) == 2
    assert model_minutes(db, "llm_model_counters_1m") == model_minutes(db, "llm_rollup_1m")


MODEL_FIGURES = (
    "toUnixTimestamp(Minute), TenantId, Model, sum(Requests), sum(InputTokens), "
    "sum(OutputTokens), sum(CacheReadTokens), sum(ReasoningTokens), sum(CostUsd)"
)


def model_minutes(db: Database, table: str) -> list[tuple[Any, ...]]:
    return db.query(f"SELECT {MODEL_FIGURES} FROM {{db}}.{table} GROUP BY ALL ORDER BY ALL")


async def test_model_counters_migration_backfills_and_then_follows_the_rollup(
    db: Database, api: httpx.AsyncClient
) -> None:
    for table in ("llm_model_counters_1m_mv", "llm_model_counters_1m"):
        db.command(f"DROP TABLE {{db}}.{table}")
    db.command("DELETE FROM {db}.schema_migrations WHERE version = '0013'")
    assert migrate(db, TEST_RETENTION_DAYS) == ["0013_llm_model_counters_1m"]
    expected = model_minutes(db, "llm_rollup_1m")
    assert len(expected) == 5 and model_minutes(db, "llm_model_counters_1m") == expected
    insert_spans(db, [at(E + 5 * 3600 + 11 * 60 + 30, "claude-3"), at(E + 7 * 3600)])
    assert model_minutes(db, "llm_model_counters_1m") == model_minutes(db, "llm_rollup_1m")
    assert migrate(db, TEST_RETENTION_DAYS) == []
