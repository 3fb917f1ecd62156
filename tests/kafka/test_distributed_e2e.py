"""Distributed mode end to end on a real broker: SDK -> `llmtel ingest` -> Kafka ->
`llmtel sink --with-api` -> ClickHouse (chDB) -> API."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.devkafka import KafkaBroker
from tests.integration.harness import (
    ADMIN_KEY,
    RoleProcess,
    free_port,
    role_env,
    run_cli,
    wait_for,
)
from tests.integration.spans import export_grpc, export_http, make_spans
from tests.integration.test_embedded_anomaly import CALL, COST, sleep_to_mid_second
from tests.integration.test_embedded_e2e import GPT4O_COST

pytestmark = [pytest.mark.kafka, pytest.mark.integration]


@dataclass
class Stack:
    api_url: str
    otlp_http_url: str
    otlp_grpc: str
    sink: RoleProcess
    ingest: RoleProcess
    streams: RoleProcess
    env: dict[str, str]
    started: float  # when the streams worker was started

    def get(self, path: str, key: str = ADMIN_KEY, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.api_url}{path}",
            params=params,
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )

    def create_tenant(self, name: str) -> str:
        done = run_cli(self.env, "tenant", "create", name, "--json")
        assert done.returncode == 0, done.stderr
        key: str = json.loads(done.stdout)["api_key"]
        return key

    def requests(self, key: str) -> int:
        response = self.get("/api/v1/usage", key)
        assert response.status_code == 200, response.text
        count: int = response.json()["totals"]["requests"]
        return count


@pytest.fixture(scope="module")
def stack(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("distributed")
    api_port, http_port, grpc_port = free_port(), free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = role_env(
        LLMTEL_KAFKA_BOOTSTRAP=kafka_broker.bootstrap,
        LLMTEL_DATA_DIR=str(base / "data"),
        LLMTEL_API_URL=api_url,
        LLMTEL_KAFKA_CONSUMER_GROUP=f"sink-{base.name}",
        LLMTEL_HOST="127.0.0.1",
        LLMTEL_METRICS_PORT=str(free_port()),
        LLMTEL_WINDOW_S="1",
        LLMTEL_WINDOW_LATENESS_S="0.3",
        LLMTEL_ANOMALY_MIN_HISTORY="3",
    )
    migrated = run_cli(env, "migrate", "--kafka")
    assert migrated.returncode == 0, migrated.stderr + migrated.stdout
    sink = RoleProcess(
        "sink", ["sink", "--with-api", "--api-port", str(api_port)], env, base / "sink.log"
    )
    sink.start()
    sink.wait_http(f"{api_url}/readyz")
    ingest = RoleProcess(
        "ingest",
        [
            "ingest",
            "--auth-url",
            api_url,
            "--otlp-http-port",
            str(http_port),
            "--otlp-grpc-port",
            str(grpc_port),
        ],  # fmt: skip
        env,
        base / "ingest.log",
    )
    ingest.start()
    ingest.wait_http(f"http://127.0.0.1:{http_port}/v1/traces")
    streams_env = env | {"LLMTEL_METRICS_PORT": str(free_port())}
    streams = RoleProcess("streams", ["streams"], streams_env, base / "streams.log")
    streams.start()
    stack = Stack(
        api_url, f"http://127.0.0.1:{http_port}/v1/traces", f"127.0.0.1:{grpc_port}",
        sink, ingest, streams, env, time.monotonic(),
    )  # fmt: skip
    try:
        yield stack
    finally:
        streams.stop()
        ingest.stop()
        sink.stop()


def test_spans_flow_through_kafka_with_exact_counts_and_cost(stack: Stack) -> None:
    acme, globex = stack.create_tenant("acme"), stack.create_tenant("globex")
    ok = SpanExportResult.SUCCESS
    assert export_http(stack.otlp_http_url, acme, make_spans(40)) == ok
    assert export_grpc(stack.otlp_grpc, acme, make_spans(25), gzip=True) == ok
    assert export_http(stack.otlp_http_url, globex, make_spans(7), gzip=True) == ok
    assert export_http(stack.otlp_http_url, "llmtel_unknown", make_spans(1)) != ok

    wait_for(lambda: stack.requests(acme) >= 65, timeout=30)
    totals = stack.get("/api/v1/usage", acme).json()["totals"]
    assert totals["requests"] == 65
    assert totals["input_tokens"] == 6500
    assert Decimal(totals["cost_usd"]) == GPT4O_COST * 65
    wait_for(lambda: stack.requests(globex) >= 7, timeout=30)
    assert stack.requests(globex) == 7


def test_sigkill_of_the_sink_mid_load_loses_and_doubles_nothing(stack: Stack) -> None:
    key = stack.create_tenant("crashy")
    for _ in range(10):
        assert export_http(stack.otlp_http_url, key, make_spans(100)) == SpanExportResult.SUCCESS
    stack.sink.stop(signal.SIGKILL)
    for _ in range(5):  # accepted by ingest while the sink is down: waits in Kafka
        assert export_http(stack.otlp_http_url, key, make_spans(100)) == SpanExportResult.SUCCESS
    stack.sink.start()
    stack.sink.wait_http(f"{stack.api_url}/readyz")
    wait_for(lambda: stack.requests(key) >= 1500, timeout=60)
    assert stack.requests(key) == 1500
    spans = stack.get("/api/v1/spans", key, limit=1000).json()["spans"]
    assert len({s["span_id"] for s in spans}) == len(spans) == 1000


def test_streams_flag_a_5x_cost_spike_for_one_tenant_only(stack: Stack) -> None:
    spiky, steady = stack.create_tenant("spiky"), stack.create_tenant("steady")
    ok = SpanExportResult.SUCCESS
    # the worker has joined its group once it has produced a first (zero or real) window
    time.sleep(max(0.0, 20 - (time.monotonic() - stack.started)))
    for _ in range(5):
        sleep_to_mid_second()
        assert export_http(stack.otlp_http_url, spiky, make_spans(10, attributes=CALL)) == ok
        assert export_http(stack.otlp_http_url, steady, make_spans(10, attributes=CALL)) == ok
    sleep_to_mid_second()
    assert export_http(stack.otlp_http_url, spiky, make_spans(50, attributes=CALL)) == ok
    assert export_http(stack.otlp_http_url, steady, make_spans(10, attributes=CALL)) == ok

    def tenant_cost_anomalies(key: str) -> list[dict[str, Any]]:
        response = stack.get("/api/v1/anomalies", key, metric="cost_usd")
        assert response.status_code == 200, response.text
        return [a for a in response.json()["anomalies"] if a["scope"] == "tenant"]

    (anomaly,) = wait_for(lambda: tenant_cost_anomalies(spiky), timeout=30)
    assert Decimal(anomaly["value"]) == COST * 50
    assert Decimal(anomaly["average"]) == COST * 10
    time.sleep(2)
    assert tenant_cost_anomalies(steady) == []
    windows = stack.get("/api/v1/windows", steady, scope="tenant").json()["windows"]
    assert sum(w["requests"] for w in windows) == 60
    # the streamed windows equal the aggregation ClickHouse computes from the stored spans
    wait_for(lambda: stack.requests(steady) >= 60, timeout=30)
    stored = stack.get("/api/v1/usage", steady).json()["totals"]
    assert stored["requests"] == 60
    assert sum(Decimal(w["cost_usd"]) for w in windows) == Decimal(stored["cost_usd"])
    assert sum(w["input_tokens"] for w in windows) == stored["input_tokens"]
    assert sum(w["output_tokens"] for w in windows) == stored["output_tokens"]
