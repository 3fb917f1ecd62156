"""PromQL over the rollups through the HTTP API: values checked against Prometheus'
formulas computed here by hand from the inserted spans."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Keys, auth
from tests.promql.conftest import M

pytestmark = pytest.mark.clickhouse


async def query(api: httpx.AsyncClient, key: str, expr: str, t: float) -> dict[str, Any]:
    response = await api.get(
        "/prometheus/api/v1/query", params={"query": expr, "time": str(t)}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    data: dict[str, Any] = body["data"]
    return data


def by(data: dict[str, Any], label: str) -> dict[str, str]:
    return {r["metric"].get(label, ""): r["value"][1] for r in data["result"]}


async def test_counter_value_counts_complete_minutes_only(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    expr = 'llmtel_llm_requests_total{tenant="acme",model="gpt-4o"}'
    before = await query(api, keys.admin, expr, M + 59)
    assert before == {"resultType": "vector", "result": []}
    after = await query(api, keys.admin, expr, M + 60)
    assert by(after, "status") == {"ok": "1", "error": "1"}
    assert after["result"][0]["metric"]["__name__"] == "llmtel_llm_requests_total"
    assert after["result"][0]["value"][0] == M + 60
    later = await query(api, keys.admin, expr, M + 200)
    assert by(later, "status") == {"ok": "5", "error": "1"}


async def test_sum_by_tenant_of_cost(api: httpx.AsyncClient, keys: Keys) -> None:
    data = await query(api, keys.admin, "sum by (tenant) (llmtel_llm_cost_usd_total)", M + 600)
    assert by(data, "tenant") == {"acme": "0.543", "globex": "7"}


async def test_increase_extrapolates_as_prometheus(api: httpx.AsyncClient, keys: Keys) -> None:
    # gpt-4o ok requests of acme: 1 from M+60 (first sample), 5 from M+180. At t = M+240
    # over [10m], samples every 15 s from M+60 to M+240: 13 samples, sampled 180 s,
    # delta 4; the start extrapolation is limited by the zero point 180 * 1/4 = 45 s,
    # which is above 1.1 * 15, so it is 7.5 s; the end is 0 s away.
    expected = 4 * (180 + 7.5 + 0) / 180
    expr = 'increase(llmtel_llm_requests_total{tenant="acme",model="gpt-4o",status="ok"}[10m])'
    data = await query(api, keys.admin, expr, M + 240)
    [row] = data["result"]
    assert "__name__" not in row["metric"]
    assert float(row["value"][1]) == pytest.approx(expected)
    rate = await query(api, keys.admin, expr.replace("increase", "rate"), M + 240)
    assert float(rate["result"][0]["value"][1]) == pytest.approx(expected / 600)
    # irate: the last two samples (M+225, M+240) are equal
    irate = await query(api, keys.admin, expr.replace("increase", "irate"), M + 240)
    assert irate["result"][0]["value"][1] == "0"
    irate = await query(api, keys.admin, expr.replace("increase", "irate"), M + 180)
    assert float(irate["result"][0]["value"][1]) == pytest.approx(4 / 15)


async def test_offset_shifts_the_evaluation_time(api: httpx.AsyncClient, keys: Keys) -> None:
    expr = 'sum(llmtel_llm_requests_total{tenant="acme",model="gpt-4o"} offset 2m)'
    data = await query(api, keys.admin, expr, M + 200)
    assert data["result"][0]["value"][1] == "2"


async def test_histogram_quantile_interpolates_buckets(api: httpx.AsyncClient, keys: Keys) -> None:
    # acme gpt-4o durations 0.05, 0.3, 0.3, 0.7, 0.7, 2.0 s: cumulative 1 (<=0.1),
    # 1 (<=0.25), 3 (<=0.5), 5 (<=1), 6 (<=2.5). p50: rank 3 -> bucket (0.25, 0.5]
    # holds 2, rank within it 2 -> 0.25 + 0.25 * 2/2 = 0.5; p90: rank 5.4 -> (1, 2.5].
    # claude-3: one span of 10 ms: rank 0.5 in (0, 0.1] -> 0.05.
    expr = (
        "histogram_quantile({q}, sum by (le, model) "
        '(llmtel_llm_request_duration_seconds_bucket{{tenant="acme"}}))'
    )
    p50 = await query(api, keys.admin, expr.format(q=0.5), M + 600)
    assert by(p50, "model") == {"gpt-4o": "0.5", "claude-3": "0.05"}
    p90 = await query(api, keys.admin, expr.format(q=0.9), M + 600)
    assert float(by(p90, "model")["gpt-4o"]) == pytest.approx(1 + 1.5 * 0.4)


async def test_topk_and_arithmetic_and_comparison(api: httpx.AsyncClient, keys: Keys) -> None:
    top = await query(
        api, keys.admin, "topk(1, sum by (tenant) (llmtel_llm_cost_usd_total))", M + 600
    )
    assert by(top, "tenant") == {"globex": "7"}
    bottom = await query(
        api, keys.admin, "bottomk(1, sum by (tenant) (llmtel_llm_cost_usd_total))", M + 600
    )
    assert by(bottom, "tenant") == {"acme": "0.543"}
    ratio = await query(
        api,
        keys.admin,
        'sum by (tenant) (llmtel_llm_requests_total{status="error"}) '
        "/ sum by (tenant) (llmtel_llm_requests_total)",
        M + 600,
    )
    assert by(ratio, "tenant") == {"acme": str(1 / 7), "globex": "0"}
    filtered = await query(
        api, keys.admin, "sum by (tenant) (llmtel_llm_cost_usd_total) > 1", M + 600
    )
    assert by(filtered, "tenant") == {"globex": "7"}
    as_bool = await query(
        api, keys.admin, "sum by (tenant) (llmtel_llm_cost_usd_total) > bool 1", M + 600
    )
    assert by(as_bool, "tenant") == {"acme": "0", "globex": "1"}
    scalar = await query(api, keys.admin, "2 * (3 + 1)", M)
    assert scalar == {"resultType": "scalar", "result": [M, "8"]}
    regex = await query(
        api,
        keys.admin,
        'count(llmtel_llm_tokens_total{type=~"in.*|out.*",model!~"claude.*"})',
        M + 600,
    )
    assert regex["result"][0]["value"][1] == "4"  # acme and globex gpt-4o x input, output


async def test_query_range_steps_and_matrix(api: httpx.AsyncClient, keys: Keys) -> None:
    response = await api.post(
        "/prometheus/api/v1/query_range",
        data={
            "query": 'sum(llmtel_llm_requests_total{tenant="acme"})',
            "start": str(M + 30),
            "end": str(M + 200),
            "step": "60",
        },
        headers=auth(keys.admin),
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["resultType"] == "matrix"
    [series] = data["result"]
    assert series["metric"] == {}
    # M+30: nothing yet; M+90: 2; M+150: 2; M+210 is past end
    assert series["values"] == [[M + 90, "2"], [M + 150, "2"]]


async def test_tenant_key_is_confined(api: httpx.AsyncClient, keys: Keys) -> None:
    other = await query(api, keys.acme, 'llmtel_llm_cost_usd_total{tenant="globex"}', M + 600)
    assert other["result"] == []
    total = await query(api, keys.acme, "sum by (tenant) (llmtel_llm_cost_usd_total)", M + 600)
    assert by(total, "tenant") == {"acme": "0.543"}
    values = await api.get("/prometheus/api/v1/label/tenant/values", headers=auth(keys.acme))
    assert values.json() == {"status": "success", "data": ["acme"]}
    series = await api.get(
        "/prometheus/api/v1/series",
        params={"match[]": '{__name__="llmtel_llm_cost_usd_total"}'},
        headers=auth(keys.acme),
    )
    assert {s["tenant"] for s in series.json()["data"]} == {"acme"}
    admin = await api.get("/prometheus/api/v1/label/tenant/values", headers=auth(keys.admin))
    assert admin.json()["data"] == ["acme", "globex"]
    anonymous = await api.get("/prometheus/api/v1/query", params={"query": "1"})
    assert anonymous.status_code == 401


async def test_label_names_series_metadata_buildinfo(api: httpx.AsyncClient, keys: Keys) -> None:
    names = (await api.get("/prometheus/api/v1/labels", headers=auth(keys.admin))).json()["data"]
    assert names == ["__name__", "le", "model", "service", "status", "tenant", "type"]
    metrics = await api.get("/prometheus/api/v1/label/__name__/values", headers=auth(keys.admin))
    assert "llmtel_llm_request_duration_seconds_bucket" in metrics.json()["data"]
    series = await api.post(
        "/prometheus/api/v1/series",
        data={"match[]": 'llmtel_llm_requests_total{tenant="globex"}'},
        headers=auth(keys.admin),
    )
    assert series.json()["data"] == [
        {
            "__name__": "llmtel_llm_requests_total",
            "model": "gpt-4o",
            "service": "chat-app",
            "status": "error",
            "tenant": "globex",
        },
        {
            "__name__": "llmtel_llm_requests_total",
            "model": "gpt-4o",
            "service": "chat-app",
            "status": "ok",
            "tenant": "globex",
        },
    ]
    meta = (await api.get("/prometheus/api/v1/metadata", headers=auth(keys.admin))).json()
    assert meta["data"]["llmtel_llm_cost_usd_total"][0]["type"] == "counter"
    assert meta["data"]["llmtel_llm_request_duration_seconds"][0]["type"] == "histogram"
    info = (await api.get("/prometheus/api/v1/status/buildinfo", headers=auth(keys.admin))).json()
    assert info["data"]["version"].startswith("2.")


@pytest.mark.parametrize(
    ("expr", "named"),
    [
        ("predict_linear(llmtel_llm_cost_usd_total[5m], 60)", "function predict_linear()"),
        ("rate(llmtel_llm_cost_usd_total[5m:1m])", "subquery"),
        ("llmtel_llm_cost_usd_total[5m]", "range vector selector"),
        ("llmtel_llm_cost_usd_total @ 100", "@ modifier"),
        ("quantile(0.5, llmtel_llm_cost_usd_total)", "aggregation quantile()"),
        ("a + on(x) group_left b", "group_left"),
        ("sum(", "invalid parameter"),
    ],
)
async def test_unsupported_constructs_are_bad_data(
    api: httpx.AsyncClient, keys: Keys, expr: str, named: str
) -> None:
    response = await api.get(
        "/prometheus/api/v1/query", params={"query": expr}, headers=auth(keys.admin)
    )
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"
    assert named in body["error"]


async def test_query_range_parameter_errors(api: httpx.AsyncClient, keys: Keys) -> None:
    bad = await api.get(
        "/prometheus/api/v1/query_range",
        params={"query": "1", "start": "100", "end": "50", "step": "10"},
        headers=auth(keys.admin),
    )
    assert bad.status_code == 400
    assert "end timestamp must not be before start time" in bad.json()["error"]
    many = await api.get(
        "/prometheus/api/v1/query_range",
        params={"query": "1", "start": "0", "end": "1000000", "step": "1"},
        headers=auth(keys.admin),
    )
    assert "11,000 points" in many.json()["error"]
