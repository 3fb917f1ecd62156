"""Embedded mode computes windows and flags a 5x cost spike, visible through the API."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.integration.harness import running, wait_for
from tests.integration.spans import export_http, make_spans

# 10 such calls a second average $0.045 a window: above the cost rule's $0.01 minimum baseline
CALL = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
}
CALL_COST = calc_price(Usage(input_tokens=1000, output_tokens=200), "gpt-4o", provider_id="openai")
COST = CALL_COST.total_price.quantize(Decimal("1e-12"))

pytestmark = pytest.mark.integration


def sleep_to_mid_second() -> None:
    time.sleep(1.5 - (time.time() % 1.0))


def test_a_5x_spike_yields_one_tenant_cost_anomaly_and_none_for_others(tmp_path: Path) -> None:
    env = {
        "LLMTEL_WINDOW_S": "1",
        # lateness: a span acked mid-second reaches its window even when the box is busy
        "LLMTEL_WINDOW_LATENESS_S": "2",
        "LLMTEL_ANOMALY_MIN_HISTORY": "3",
    }
    with running(tmp_path / "data", **env) as proc:
        spiky, steady = proc.create_tenant("spiky"), proc.create_tenant("steady")
        ok = SpanExportResult.SUCCESS
        for _ in range(5):  # baseline: 10 calls a second each, one window per second
            sleep_to_mid_second()
            assert export_http(proc.otlp_http_url, spiky, make_spans(10, attributes=CALL)) == ok
            assert export_http(proc.otlp_http_url, steady, make_spans(10, attributes=CALL)) == ok
        sleep_to_mid_second()
        assert export_http(proc.otlp_http_url, spiky, make_spans(50, attributes=CALL)) == ok  # 5x
        assert export_http(proc.otlp_http_url, steady, make_spans(10, attributes=CALL)) == ok

        def cost_anomalies(key: str) -> list[dict[str, object]]:
            response = proc.get("/api/v1/anomalies", key, metric="cost_usd")
            assert response.status_code == 200, response.text
            found: list[dict[str, object]] = response.json()["anomalies"]
            return [a for a in found if a["scope"] == "tenant"]

        (anomaly,) = wait_for(lambda: cost_anomalies(spiky), timeout=10)
        assert anomaly["tenant"] == "spiky"
        assert Decimal(str(anomaly["value"])) == COST * 50
        assert Decimal(str(anomaly["average"])) == COST * 10

        def steady_requests() -> int:
            windows = proc.get("/api/v1/windows", steady, scope="tenant").json()["windows"]
            return sum(int(w["requests"]) for w in windows)

        # every window of the steady tenant closed (a fixed sleep was flaky on a busy box)
        wait_for(lambda: steady_requests() == 60 or None, timeout=10)
        assert cost_anomalies(steady) == []
