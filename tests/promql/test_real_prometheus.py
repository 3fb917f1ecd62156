"""A real Prometheus scrapes llmtel's /metrics; the same PromQL asked of it and of llmtel's
Prometheus API agree within Prometheus' own extrapolation tolerance.

Timeline: history ten to eight minutes ago (present from the first scrape, older than
every window asked about), and more spans in the current minute N, which both sides count
from N + 60 (a minute is published when complete). Prometheus scrapes every second from
before N + 60 until some seconds after; then both are asked at the same instant.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.promql.config import MetricsConfig
from schema.clickhouse import Database
from schema.tenants import TenantStore
from tests.api.conftest import Keys, auth
from tests.api.rows import MS, NS, insert_spans, llm_span
from tests.integration.harness import wait_for
from tests.promql.prometheus import run_prometheus, serve_app

pytestmark = [pytest.mark.clickhouse, pytest.mark.integration, pytest.mark.timeout(400)]

SCRAPE_S = 1
EXPRESSIONS = [
    "sum by (tenant) (rate(llmtel_llm_cost_usd_total[5m]))",
    "histogram_quantile(0.95, sum by (le, model) "
    "(rate(llmtel_llm_request_duration_seconds_bucket[5m])))",
    "topk(3, sum by (tenant, model) (rate(llmtel_llm_tokens_total[5m])))",
    "sum by (tenant, status) (increase(llmtel_llm_requests_total[5m]))",
    'rate(llmtel_llm_requests_total{tenant=~"ac.*",status!="error"}[2m])',
    "llmtel_llm_cost_usd_total",
    "sum without (service) (llmtel_llm_requests_total) > 4",
]


def spans(minute: int, scale: int) -> list[dict[str, Any]]:
    """LLM spans in `minute` (unix s) with distinct figures per tenant and model."""
    rows = []
    for t, tenant in enumerate(("acme", "globex")):
        for m, model in enumerate(("gpt-4o", "claude-3")):
            count = scale * (1 + t + 2 * m)
            for i in range(count):
                rows.append(
                    llm_span(
                        TenantId=tenant,
                        model=model,
                        Timestamp=(minute + 1 + i % 50) * NS,
                        input_tokens=100 * (1 + t) + 7 * m,
                        output_tokens=20 + 3 * t,
                        cost=f"0.00{1 + t + 2 * m}",
                        Duration=(80 + 450 * ((i + m) % 5)) * MS,
                        StatusCode="Error" if i % 4 == 3 else "Unset",
                    )
                )
    return rows


def by_labels(result: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in result}


@pytest.mark.timeout(400)
def test_llmtel_agrees_with_a_real_prometheus(
    db: Database, store: TenantStore, keys: Keys, tmp_path: Path
) -> None:
    now = time.time()
    current = int(now // 60 * 60)
    new_minute = current if now - current < 40 else current + 60
    history = [row for k in (10, 9, 8) for row in spans(current - 60 * k, 2)]
    insert_spans(db, history + spans(new_minute, 3))

    app = create_app(db, store)
    app.state.metrics_config = MetricsConfig(top_models=10, sample_interval_s=SCRAPE_S)
    with serve_app(app) as target, run_prometheus(target, keys.admin, tmp_path, SCRAPE_S) as prom:
        first_scrape = prom.started_at
        assert first_scrape < new_minute + 60 - 2, "Prometheus must see the step happen"
        # 25 s past the step, and scraped long enough for the range query below to have a
        # dozen 5 s steps (Prometheus may start up to ~45 s into the new minute)
        ready_at = max(new_minute + 60 + 25, first_scrape + 3 + 5 * 14 + 2)
        wait_for(lambda: time.time() > ready_at, timeout=200, interval=1)
        t_eval = math.floor(time.time()) - 2.0  # both sides have every sample up to here
        base = f"http://{target}/prometheus/api/v1"
        for expr in EXPRESSIONS:
            ours = httpx.get(
                f"{base}/query", params={"query": expr, "time": t_eval}, headers=auth(keys.admin)
            )
            assert ours.status_code == 200, ours.text
            theirs = prom.api("query", query=expr, time=t_eval)
            ours_data = ours.json()["data"]
            assert ours_data["resultType"] == theirs["resultType"] == "vector"
            got, want = by_labels(ours_data["result"]), by_labels(theirs["result"])
            assert got.keys() == want.keys(), (expr, got, want)
            assert want, f"{expr}: Prometheus returned nothing, the comparison would be empty"
            # Prometheus extrapolates by at most 1.1 scrape intervals at each end of the
            # samples it has (since its first scrape); llmtel has the whole window
            tolerance = 2.2 * SCRAPE_S / (t_eval - first_scrape) + 1e-9
            for labels, value in want.items():
                assert got[labels] == pytest.approx(value, rel=tolerance, abs=1e-12), (
                    expr,
                    labels,
                )
        # a Grafana-style range query of a raw counter: the same step function
        start, end = first_scrape + 3, t_eval
        expr = 'sum by (tenant) (llmtel_llm_requests_total{status="ok"})'
        params = {"query": expr, "start": start, "end": end, "step": 5}
        ours = httpx.post(f"{base}/query_range", data=params, headers=auth(keys.admin))
        theirs = prom.api("query_range", **params)
        assert ours.status_code == 200, ours.text
        assert ours.json()["data"]["resultType"] == theirs["resultType"] == "matrix"
        step_at = new_minute + 60
        for mine, real in zip(
            sorted(ours.json()["data"]["result"], key=lambda r: r["metric"]["tenant"]),
            sorted(theirs["result"], key=lambda r: r["metric"]["tenant"]),
            strict=True,
        ):
            assert mine["metric"] == real["metric"]
            real_points = {p[0]: p[1] for p in real["values"]}
            compared = 0
            for t, v in mine["values"]:
                if abs(t - step_at) <= 2 * SCRAPE_S or t not in real_points:
                    continue  # Prometheus sees the step at its first scrape after it
                assert v == real_points[t], (t, mine["metric"])
                compared += 1
            assert compared >= 10
