"""Distributed mode end to end on a real broker: SDK -> `llmtel ingest` -> Kafka ->
`llmtel streams` -> llmtel.windows.v1 / llmtel.anomalies.v1 -> `llmtel sink --with-api
--with-notify` (chDB) -> a local receiver playing Slack and a webhook consumer."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace.export import SpanExportResult

from llmtel.devkafka import KafkaBroker
from schema.windows import ANOMALIES_TOPIC, AnomalyRecord, Metric, Scope
from tests.alerts.receiver import Receiver, Reply, check_slack, check_webhook
from tests.integration.harness import (
    ADMIN_KEY,
    RoleProcess,
    free_port,
    role_env,
    run_cli,
    wait_for,
)
from tests.integration.spans import export_http, make_spans
from tests.integration.test_embedded_anomaly import CALL, sleep_to_mid_second

pytestmark = [pytest.mark.kafka, pytest.mark.integration]
SECRET = "whsec-distributed-0123456789"
LATENESS_S = 0.3


def create_tenant(env: dict[str, str], name: str) -> str:
    done = run_cli(env, "tenant", "create", name, "--json")
    assert done.returncode == 0, done.stderr
    key: str = json.loads(done.stdout)["api_key"]
    return key


def add_destination(api_url: str, tenant: str, body: dict[str, object]) -> None:
    response = httpx.post(
        f"{api_url}/api/v1/alerts/destinations",
        params={"tenant": tenant},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"default": True, **body},
        timeout=30,
    )
    assert response.status_code == 201, response.text


async def publish_twice(bootstrap: str, record: AnomalyRecord) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(
                ANOMALIES_TOPIC, record.to_json(), key=record.tenant.encode()
            )
    finally:
        await producer.stop()


def test_spike_alerts_once_via_kafka_with_retries_and_duplicates(
    kafka_broker: KafkaBroker, tmp_path: Path, hooks: Receiver
) -> None:
    api_port, http_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = role_env(
        LLMTEL_KAFKA_BOOTSTRAP=kafka_broker.bootstrap,
        LLMTEL_DATA_DIR=str(tmp_path / "data"),
        LLMTEL_API_URL=api_url,
        LLMTEL_KAFKA_CONSUMER_GROUP=f"sink-{tmp_path.name}",
        LLMTEL_NOTIFY_CONSUMER_GROUP=f"notify-{tmp_path.name}",
        LLMTEL_HOST="127.0.0.1",
        LLMTEL_METRICS_PORT=str(free_port()),
        LLMTEL_WINDOW_S="1",
        LLMTEL_WINDOW_LATENESS_S=str(LATENESS_S),
        LLMTEL_ANOMALY_MIN_HISTORY="3",
        LLMTEL_ALERT_ALLOWED_URLS="http://127.0.0.1",
        LLMTEL_ALERT_RETRY_INITIAL_S="0.1",
    )
    migrated = run_cli(env, "migrate", "--kafka")
    assert migrated.returncode == 0, migrated.stderr + migrated.stdout
    sink = RoleProcess(
        "sink",
        ["sink", "--with-api", "--with-notify", "--api-port", str(api_port)],
        env,
        tmp_path / "sink.log",
    )
    ingest = RoleProcess(
        "ingest",
        ["ingest", "--auth-url", api_url, "--otlp-http-port", str(http_port),
         "--otlp-grpc-port", str(free_port())],
        env,
        tmp_path / "ingest.log",
    )  # fmt: skip
    streams = RoleProcess(
        "streams", ["streams"], env | {"LLMTEL_METRICS_PORT": str(free_port())},
        tmp_path / "streams.log",
    )  # fmt: skip
    otlp = f"http://127.0.0.1:{http_port}/v1/traces"
    try:
        sink.start()
        sink.wait_http(f"{api_url}/readyz")
        ingest.start()
        ingest.wait_http(otlp)
        streams.start()
        started = time.monotonic()
        keys = {name: create_tenant(env, name) for name in ("spiky", "steady", "flaky")}
        add_destination(api_url, "spiky", {"kind": "slack", "url": hooks.url("/spiky")})
        add_destination(api_url, "steady", {"kind": "slack", "url": hooks.url("/steady")})
        add_destination(
            api_url, "flaky", {"kind": "webhook", "url": hooks.url("/flaky"), "secret": SECRET}
        )
        hooks.script("/flaky", Reply(500), Reply(503))
        time.sleep(max(0.0, 20 - (time.monotonic() - started)))  # the worker joined its group
        ok = SpanExportResult.SUCCESS
        for _ in range(5):
            sleep_to_mid_second()
            for key in keys.values():
                assert export_http(otlp, key, make_spans(10, attributes=CALL)) == ok
        sleep_to_mid_second()
        assert export_http(otlp, keys["spiky"], make_spans(50, attributes=CALL)) == ok  # 5x
        assert export_http(otlp, keys["steady"], make_spans(20, attributes=CALL)) == ok  # 2x
        assert export_http(otlp, keys["flaky"], make_spans(50, attributes=CALL)) == ok  # 5x

        (firing, *_) = hooks.wait("/spiky", 1, timeout=30)
        fields = check_slack(firing)
        assert (fields["Tenant"], fields["Metric"]) == ("spiky", "cost")
        headers = {"authorization": f"Bearer {keys['spiky']}"}

        def spike_window() -> dict[str, int] | None:
            found = httpx.get(
                f"{api_url}/api/v1/windows", params={"scope": "tenant"}, headers=headers, timeout=30
            ).json()["windows"]
            return next((w for w in found if w["requests"] == 50), None)

        spike = wait_for(spike_window, timeout=30)
        latency = firing.at - (spike["window_end_unix_nano"] / 1e9 + LATENESS_S)
        print(f"window close -> Slack message (Kafka): {latency:.3f} s")  # docs/benchmarks.md
        assert latency > 0  # sent after the window closed, not before

        flaky = hooks.wait("/flaky", 3, timeout=30)
        assert check_webhook(flaky[2], SECRET)["alert"]["tenant"] == "flaky"

        # the detector's anomaly for the spike, published twice more
        anomalies = httpx.get(
            f"{api_url}/api/v1/anomalies", params={"metric": "cost_usd"}, headers=headers,
            timeout=30,
        ).json()["anomalies"]  # fmt: skip
        found = next(a for a in anomalies if a["scope"] == "tenant")
        record = AnomalyRecord(
            "spiky", Scope.TENANT, "", Metric.COST_USD, found["window_start_unix_nano"],
            found["window_end_unix_nano"], Decimal(found["value"]), Decimal(found["average"]),
            found["factor"], found["history"],
        )  # fmt: skip
        asyncio.run(publish_twice(kafka_broker.bootstrap, record))
        time.sleep(5)  # consumed and judged well within this (the notifier polls every 0.2 s)
        firing_texts = [r for r in hooks.received("/spiky") if "resolved" not in r.json()["text"]]
        assert len(firing_texts) == 1
        flaky_firing = [
            r for r in hooks.received("/flaky") if r.json()["alert"]["kind"] == "firing"
        ]
        assert len(flaky_firing) == 3  # two failures, then delivered
        assert hooks.received("/steady") == []
    finally:
        streams.stop()
        ingest.stop()
        sink.stop()
