"""End to end in embedded mode: real SDK exporters -> `llmtel up` -> ClickHouse -> API."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from genai_prices import Usage, calc_price
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.integration.harness import ADMIN_KEY, LlmtelProcess, running, wait_for
from tests.integration.spans import export_grpc, export_http, make_spans

pytestmark = pytest.mark.integration

GPT4O_CALL = calc_price(Usage(input_tokens=100, output_tokens=20), "gpt-4o", provider_id="openai")
GPT4O_COST = GPT4O_CALL.total_price.quantize(Decimal("1e-12"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlmtelProcess]:
    data = tmp_path_factory.mktemp("e2e") / "data"
    with running(data, LLMTEL_MAX_REQUEST_BYTES=str(1024 * 1024)) as proc:
        yield proc


@pytest.fixture(scope="module")
def tenants(server: LlmtelProcess) -> dict[str, str]:
    return {name: server.create_tenant(name) for name in ("acme", "globex")}


def totals(server: LlmtelProcess, key: str, **params: Any) -> dict[str, Any]:
    response = server.get("/api/v1/usage", key, **params)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["totals"]
    return result


def wait_requests(server: LlmtelProcess, key: str, expected: int, **params: Any) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        t = totals(server, key, **params)
        return t if t["requests"] >= expected else None

    result: dict[str, Any] = wait_for(reached)
    assert result["requests"] == expected
    return result


def test_two_tenants_over_every_protocol_exact_tokens_and_cost(
    server: LlmtelProcess, tenants: dict[str, str]
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    ok = SpanExportResult.SUCCESS
    assert export_http(server.otlp_http_url, acme, make_spans(30)) == ok
    assert export_grpc(server.otlp_grpc_endpoint, acme, make_spans(20), gzip=True) == ok
    assert export_grpc(server.otlp_grpc_endpoint, acme, make_spans(5, error_every=1)) == ok
    explicit = {
        "llm.model": "house-model-x",
        "llm.provider": "in-house",
        "llm.input_tokens": 7,
        "llm.output_tokens": 3,
        "llm.cost_usd": 0.5,
    }
    spans = make_spans(10, service="billing", attributes=explicit)
    assert export_http(server.otlp_http_url, globex, spans, gzip=True) == ok

    acme_totals = wait_requests(server, acme, 55)
    assert acme_totals["input_tokens"] == 5500
    assert acme_totals["output_tokens"] == 1100
    assert Decimal(acme_totals["cost_usd"]) == GPT4O_COST * 55
    assert acme_totals["errors"] == 5

    globex_totals = wait_requests(server, globex, 10)
    assert globex_totals["input_tokens"] == 70
    assert Decimal(globex_totals["cost_usd"]) == Decimal("5")

    everyone = totals(server, ADMIN_KEY)
    assert everyone["requests"] >= 65
    only_globex = totals(server, ADMIN_KEY, tenant="globex")
    assert only_globex["requests"] == 10


def test_tenant_isolation_foreign_trace_is_404(
    server: LlmtelProcess, tenants: dict[str, str]
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    spans = make_spans(1, service="isolation-probe")
    trace_id = format(spans[0].context.trace_id, "032x")
    assert export_http(server.otlp_http_url, acme, spans) == SpanExportResult.SUCCESS

    own = wait_for(lambda: server.get(f"/api/v1/traces/{trace_id}", acme).status_code == 200)
    assert own
    body = server.get(f"/api/v1/traces/{trace_id}", acme).json()
    assert [s["trace_id"] for s in body["spans"]] == [trace_id]
    assert server.get(f"/api/v1/traces/{trace_id}", globex).status_code == 404
    foreign = server.get("/api/v1/spans", globex, service="isolation-probe").json()
    assert foreign["spans"] == []
    assert server.get(f"/api/v1/traces/{trace_id}", ADMIN_KEY).status_code == 200


def test_bad_input_gets_clear_errors_and_accepted_data_stays_intact(
    server: LlmtelProcess, tenants: dict[str, str]
) -> None:
    key = server.create_tenant("badinput")
    auth = {"authorization": f"Bearer {key}"}
    proto = {**auth, "content-type": "application/x-protobuf"}
    assert export_http(server.otlp_http_url, key, make_spans(4)) == SpanExportResult.SUCCESS

    def post(body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(server.otlp_http_url, content=body, headers=headers, timeout=10)

    garbage = post(b"\xff\x00not a protobuf", proto)
    assert garbage.status_code == 400
    assert post(b"{}", {**auth, "content-type": "text/plain"}).status_code == 415
    truncated = post(
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab", {**proto, "content-encoding": "gzip"}
    )
    assert truncated.status_code == 400
    oversize = post(b"\x00" * (2 * 1024 * 1024), proto)
    assert oversize.status_code == 413
    unknown = post(
        b"", {"authorization": "Bearer llmtel_nope", "content-type": "application/x-protobuf"}
    )
    assert unknown.status_code == 401
    assert (
        export_http(server.otlp_http_url, "llmtel_nope", make_spans(1)) != SpanExportResult.SUCCESS
    )

    assert export_http(server.otlp_http_url, key, make_spans(6)) == SpanExportResult.SUCCESS
    wait_requests(server, key, 10)


def test_revoked_key_stops_working_within_seconds(server: LlmtelProcess) -> None:
    key = server.create_tenant("shortlived")
    assert export_http(server.otlp_http_url, key, make_spans(1)) == SpanExportResult.SUCCESS
    keys = server.cli("tenant", "keys", "shortlived", "--json")
    assert keys.returncode == 0, keys.stderr
    import json

    (key_id,) = [k["key_id"] for k in json.loads(keys.stdout)]
    revoked = server.cli("tenant", "revoke-key", key_id)
    assert revoked.returncode == 0, revoked.stderr
    wait_for(
        lambda: export_http(server.otlp_http_url, key, make_spans(1)) != SpanExportResult.SUCCESS,
        timeout=10,
    )
    assert server.get("/api/v1/usage", key).status_code == 401


def test_shutdown_flushes_everything_accepted(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data) as proc:
        key = proc.create_tenant("flush")
        for _ in range(5):
            assert export_http(proc.otlp_http_url, key, make_spans(200)) == SpanExportResult.SUCCESS
        # stop at once: everything acknowledged above must be in ClickHouse afterwards
        assert proc.stop(signal.SIGTERM) == 0
        proc.start()
        assert totals(proc, key)["requests"] == 1000
