"""/metrics: pipeline health for everyone, per-tenant LLM series by key, promtool-clean."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.promql.config import MetricsConfig
from schema.clickhouse import Database
from schema.migrate import migrate
from schema.models import TenantSettings
from schema.tenants import TenantStore
from streams import metrics as pipeline_metrics
from tests.api.conftest import Keys, auth
from tests.api.rows import MS, insert_spans, llm_span
from tests.promql.conftest import at, make_client, spans_fixture

pytestmark = pytest.mark.clickhouse


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def scrape(api: httpx.AsyncClient, key: str | None) -> str:
    response = await api.get("/metrics", headers=auth(key) if key else {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_admin_sees_every_tenant(api: httpx.AsyncClient, keys: Keys) -> None:
    found = samples(await scrape(api, keys.admin))
    req = "llmtel_llm_requests_total"
    acme = {"tenant": "acme", "service": "chat-app", "model": "gpt-4o"}
    assert value(found, req, **acme, status="ok") == 5
    assert value(found, req, **acme, status="error") == 1
    assert value(found, "llmtel_llm_cost_usd_total", tenant="globex", model="gpt-4o") == 7
    assert value(found, "llmtel_llm_cost_usd_total", tenant="acme", model="gpt-4o") == 0.043
    tokens = "llmtel_llm_tokens_total"
    assert value(found, tokens, tenant="acme", model="gpt-4o", type="input") == 600
    assert value(found, tokens, tenant="acme", model="gpt-4o", type="cache_read") == 0
    hist = "llmtel_llm_request_duration_seconds"
    assert value(found, f"{hist}_bucket", tenant="acme", model="gpt-4o", le="0.5") == 3
    assert value(found, f"{hist}_bucket", tenant="acme", model="gpt-4o", le="+Inf") == 6
    assert value(found, f"{hist}_count", tenant="acme", model="gpt-4o") == 6
    assert value(found, f"{hist}_sum", tenant="acme", model="gpt-4o") == pytest.approx(4.05)
    ttft = "llmtel_llm_time_to_first_token_seconds"
    assert value(found, f"{ttft}_bucket", tenant="globex", model="gpt-4o", le="0.1") == 1
    assert value(found, f"{ttft}_bucket", tenant="globex", model="gpt-4o", le="0.05") == 0
    assert value(found, f"{ttft}_count", tenant="acme", model="gpt-4o") == 0
    assert ("llmtel_otlp_requests_total", ()) not in found  # labelled, but the family is there
    assert any(name.startswith("llmtel_insert_rows") for name, _ in found)


async def test_tenant_key_sees_only_its_series(api: httpx.AsyncClient, keys: Keys) -> None:
    found = samples(await scrape(api, keys.acme))
    tenants = {
        dict(labels).get("tenant") for name, labels in found if name.startswith("llmtel_llm_")
    }
    assert tenants == {"acme"}


async def test_without_key_only_pipeline_health(api: httpx.AsyncClient, keys: Keys) -> None:
    text = await scrape(api, None)
    assert pipeline_metrics.INSERT_ROWS._name in text  # the pipeline's (default registry)
    assert "llmtel_llm_" not in text
    bad = await api.get("/metrics", headers=auth("llmtel_not_a_key"))
    assert bad.status_code == 401


async def test_top_models_fold_into_other(db: Database, store: TenantStore, keys: Keys) -> None:
    spans_fixture(db)
    async with make_client(db, store, MetricsConfig(top_models=1, sample_interval_s=15)) as api:
        found = samples(await scrape(api, keys.admin))
        models = {
            dict(labels)["model"]
            for name, labels in found
            if name == "llmtel_llm_cost_usd_total" and dict(labels)["tenant"] == "acme"
        }
        assert models == {"gpt-4o", "other"}
        assert value(found, "llmtel_llm_cost_usd_total", tenant="acme", model="other") == 0.5
        response = await api.get(
            "/prometheus/api/v1/query",
            params={"query": 'llmtel_llm_cost_usd_total{model="other"}'},
            headers=auth(keys.admin),
        )
        [row] = response.json()["data"]["result"]
        assert row["metric"]["tenant"] == "acme"
        assert row["value"][1] == "0.5"


async def test_budget_ratio(db: Database, store: TenantStore, keys: Keys) -> None:
    insert_spans(db, [llm_span(TenantId="acme", cost="2.5")])
    store.update_settings("acme", TenantSettings(monthly_budget_usd="10"))
    async with make_client(db, store, MetricsConfig()) as api:
        found = samples(await scrape(api, keys.admin))
    assert value(found, "llmtel_tenant_budget_used_ratio", tenant="acme") == 0.25


async def test_promtool_accepts_the_exposition(api: httpx.AsyncClient, keys: Keys) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs the Debian package prometheus"
    text = await scrape(api, keys.admin)
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_migration_backfills_existing_spans(db: Database) -> None:
    insert_spans(db, [llm_span(TenantId="acme", Timestamp=at(5), Duration=700 * MS)])
    db.command("DROP TABLE {db}.llm_latency_1m_mv")
    db.command("DROP TABLE {db}.llm_latency_1m")
    db.command("DELETE FROM {db}.schema_migrations WHERE version = '0007'")
    assert migrate(db, 30) == ["0007_llm_latency_1m"]
    [(requests, buckets)] = db.query(
        "SELECT sum(Requests), sumForEachMerge(DurationBuckets) FROM {db}.llm_latency_1m"
    )
    assert requests == 1
    assert list(buckets) == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # (0.5, 1.0]
