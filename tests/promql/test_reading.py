"""PromQL's reading of the rollups (api/promql/rollup_sql.py): per metric one statement, whose
rows are folded into models and split into series here. An answer must not depend on which
way a query is read: a range's steps (positions read through a bucket per minute when they
are uneven) equal instant queries at those times, and a window at the present (the models
ranked from the statement's own rows) equals one read with the separate ranking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.promql import rollup_sql
from api.promql.config import MetricsConfig
from schema.clickhouse import Database
from schema.tenants import TenantStore
from tests.api.conftest import Keys, auth
from tests.api.rows import insert_spans, llm_span
from tests.promql.conftest import M, at, keys, make_client, spans_fixture, store

pytestmark = pytest.mark.clickhouse
__all__ = ["keys", "store"]

EXPRESSIONS = [
    "llmtel_llm_tokens_total",
    "sum by (model) (rate(llmtel_llm_cost_usd_total[2m]))",
    "increase(llmtel_llm_requests_total[3m])",
    "irate(llmtel_llm_request_duration_seconds_bucket[1m])",
    'sum by (model, type) (increase(llmtel_llm_tokens_total{model!="claude-3"}[4m]))',
]


@pytest.fixture
def spans(db: Database) -> None:
    """The shared fixture, plus models that start later and fold into "other" at top 1."""
    spans_fixture(db)
    insert_spans(db, [
        llm_span(TenantId="acme", Timestamp=at(185), model="mistral", cost="0.25"),
        llm_span(TenantId="acme", Timestamp=at(187), model="mistral", cost="0.25"),
        llm_span(TenantId="acme", Timestamp=at(250), model="", cost=None),
        llm_span(TenantId="acme", Timestamp=at(251), model="claude-3", cost="0.5"),
    ])  # fmt: skip


@pytest.fixture(params=[1, 10], ids=["top1", "top10"])
async def api(
    request: pytest.FixtureRequest, db: Database, store: TenantStore, spans: None
) -> AsyncIterator[httpx.AsyncClient]:
    config = MetricsConfig(top_models=request.param, sample_interval_s=15)
    async with make_client(db, store, config) as client:
        yield client


def by_labels(result: list[dict[str, Any]], key: str) -> dict[tuple[Any, ...], Any]:
    return {tuple(sorted(r["metric"].items())): r[key] for r in result}


async def instant(api: httpx.AsyncClient, key: str, expr: str, t: float) -> dict[Any, float]:
    response = await api.get(
        "/prometheus/api/v1/query", params={"query": expr, "time": str(t)}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return {
        k: float(v[1]) for k, v in by_labels(response.json()["data"]["result"], "value").items()
    }


async def test_range_steps_equal_instant_queries(api: httpx.AsyncClient, keys: Keys) -> None:
    start, end, step = M - 30, M + 420, 37  # 37 s: the positions read are unevenly spaced
    for expr in EXPRESSIONS:
        response = await api.post(
            "/prometheus/api/v1/query_range",
            data={"query": expr, "start": str(start), "end": str(end), "step": str(step)},
            headers=auth(keys.admin),
        )
        assert response.status_code == 200, response.text
        ranged = by_labels(response.json()["data"]["result"], "values")
        compared = 0
        for t in range(start, end + 1, step):
            at_t = await instant(api, keys.admin, expr, t)
            in_range = {k: float(v) for k, points in ranged.items() for s, v in points if s == t}
            assert in_range.keys() == at_t.keys(), (expr, t)
            for labels, value in at_t.items():
                assert in_range[labels] == pytest.approx(value, rel=1e-12, abs=1e-15), (expr, t)
                compared += 1
        assert compared >= 8, expr


async def test_a_window_at_the_present_is_read_like_an_older_one(
    api: httpx.AsyncClient, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    for expr in EXPRESSIONS:
        answers = []
        for recent_s in (0, 10**10):  # never / always "at the present"
            monkeypatch.setattr(rollup_sql, "RECENT_S", recent_s)
            answers.append([await instant(api, keys.admin, expr, M + t) for t in (70, 190, 300)])
        assert answers[0] == answers[1], expr
        assert any(answers[0]), expr


async def test_matchers_apply_to_folded_and_split_labels(
    db: Database, store: TenantStore, keys: Keys, spans: None
) -> None:
    async with make_client(db, store, MetricsConfig(top_models=1)) as api:
        expr = 'llmtel_llm_tokens_total{model=~"oth.*",type!~"cache.*|reasoning"}'
        got = await instant(api, keys.acme, expr, M + 600)
        names = {dict(labels)["type"]: value for labels, value in got.items()}
        # acme's other models: claude-3 (2 spans), mistral (2), no model (1); 100 in, 20 out
        assert names == {"input": 500, "output": 100}
        assert {dict(labels)["model"] for labels in got} == {"other"}
        unknown = await instant(api, keys.acme, 'llmtel_llm_cost_usd_total{model="unknown"}', M)
        assert unknown == {}  # folded into "other" at top 1
    async with make_client(db, store, MetricsConfig(top_models=10)) as api:
        unknown = await instant(
            api, keys.acme, 'llmtel_llm_requests_total{model=~"unk.*",status="ok"}', M + 600
        )
        assert list(unknown.values()) == [1]
