"""Ingest into a real broker: the OTLP receivers with `KafkaHandoff`, fed by the real SDK
exporters, one message per request on the topic; 503 / UNAVAILABLE while the broker is
down, and recovery without help once it is back."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client import REGISTRY

from ingest.grpc import create_otlp_grpc_server
from ingest.http import create_otlp_http_app
from ingest.kafka import KafkaHandoff
from ingest.service import IngestService
from llmtel.devkafka import KafkaBroker
from schema.kafka import (
    HEADER_RECEIVED_AT,
    HEADER_SPAN_COUNT,
    HEADER_TENANT,
    HEADER_VERSION,
    decode_otlp,
)
from schema.messages import BusFull, HandoffUnavailable, OtlpMessage
from schema.models import DEFAULT_TENANT
from tests.ingest.helpers import ACME_KEY, ADMIN_KEY, KeyTable, free_port, make_spans, request_of
from tests.kafka.fixtures import MakeTopic, create_topic

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

STEP_S = 30.0
SEND_TIMEOUT_S = 2.0
PB = {"content-type": "application/x-protobuf"}


@dataclass(frozen=True)
class Consumed:
    tenant: str
    key: bytes
    headers: dict[str, bytes]
    request: ExportTraceServiceRequest
    span_count: int

    def span_ids(self) -> set[bytes]:
        return {
            span.span_id
            for rs in self.request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        }


@asynccontextmanager
async def kafka_handoff(bootstrap: str, topic: str, **options: Any) -> AsyncIterator[KafkaHandoff]:
    handoff = KafkaHandoff(bootstrap, topic=topic, send_timeout_s=SEND_TIMEOUT_S, **options)
    await handoff.start(wait_s=STEP_S)
    assert handoff.connected
    try:
        yield handoff
    finally:
        await handoff.stop()


@asynccontextmanager
async def receivers(handoff: KafkaHandoff) -> AsyncIterator[tuple[str, str]]:
    """Both OTLP receivers on free ports; yields (HTTP /v1/traces URL, gRPC endpoint)."""
    service = IngestService(handoff, KeyTable())
    config = uvicorn.Config(
        create_otlp_http_app(service, 1 << 20),
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
    )
    http_server = uvicorn.Server(config)
    http_task = asyncio.create_task(http_server.serve())
    endpoint = f"127.0.0.1:{free_port()}"
    grpc_server = create_otlp_grpc_server(service, endpoint, 1 << 20)
    await grpc_server.start()
    try:
        while not http_server.started:
            if http_task.done():
                http_task.result()
            await asyncio.sleep(0.01)
        port = http_server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1/traces", endpoint
    finally:
        await grpc_server.stop(None)
        http_server.should_exit = True
        await http_task


async def export_http(
    url: str,
    spans: Sequence[ReadableSpan],
    key: str = ACME_KEY,
    compression: Compression = Compression.NoCompression,
    timeout: float = 5,
) -> SpanExportResult:
    exporter = HttpExporter(
        endpoint=url,
        headers={"authorization": f"Bearer {key}"},
        compression=compression,
        timeout=timeout,
    )
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


async def export_grpc(
    endpoint: str,
    spans: Sequence[ReadableSpan],
    key: str = ACME_KEY,
    compression: grpc.Compression = grpc.Compression.NoCompression,
    timeout: float = 5,
) -> SpanExportResult:
    exporter = GrpcExporter(
        endpoint=endpoint,
        insecure=True,
        headers={"authorization": f"Bearer {key}"},
        compression=compression,
        timeout=timeout,
    )
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


async def consume(
    bootstrap: str, topic: str, at_least: int, settle_s: float = 0.5
) -> list[Consumed]:
    """Every message of `topic` from the start: at least `at_least`, then whatever else
    arrives within `settle_s` (so that an unexpected extra message is seen too)."""
    consumer = AIOKafkaConsumer(
        topic,  # no group: every partition
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    found: list[Consumed] = []
    async with asyncio.timeout(STEP_S):
        await consumer.start()
        try:
            quiet_until: float | None = None
            while quiet_until is None or time.monotonic() < quiet_until:
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    for r in records:
                        headers = [(name, bytes(value)) for name, value in r.headers]
                        message = decode_otlp(r.value, headers)
                        found.append(
                            Consumed(
                                message.tenant_id,
                                r.key,
                                dict(headers),
                                message.request,
                                message.span_count,
                            )
                        )
                if quiet_until is None and len(found) >= at_least:
                    quiet_until = time.monotonic() + settle_s
        finally:
            await consumer.stop()
    return found


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def submit_until_accepted(handoff: KafkaHandoff, message: OtlpMessage) -> None:
    async with asyncio.timeout(STEP_S):
        while True:
            try:
                await handoff.submit(message)
                return
            except (HandoffUnavailable, BusFull):
                await asyncio.sleep(0.1)


def ids_of(spans: Sequence[ReadableSpan]) -> set[bytes]:
    return {span.context.span_id.to_bytes(8, "big") for span in spans}


# --- delivery ---------------------------------------------------------------------------


async def test_http_exports_become_one_message_per_request_and_tenant(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp", partitions=3)
    produced = sample("llmtel_kafka_produced_messages_total", topic=topic)
    first, second = make_spans(3, service_name="one"), make_spans(7, service_name="two")
    mixed = [
        *make_spans(2, resource={"tenant.id": "acme"}, service_name="a"),
        *make_spans(4, resource={"tenant.id": "globex"}, service_name="b"),
        *make_spans(1, service_name="c"),
    ]
    async with kafka_handoff(kafka_bootstrap, topic) as handoff, receivers(handoff) as (url, _):
        assert await export_http(url, first) is SpanExportResult.SUCCESS
        assert await export_http(url, second, compression=Compression.Gzip) is (
            SpanExportResult.SUCCESS
        )
        assert await export_http(url, mixed, key=ADMIN_KEY) is SpanExportResult.SUCCESS

    messages = await consume(kafka_bootstrap, topic, at_least=5)
    by_tenant_and_size = sorted((m.tenant, m.span_count) for m in messages)
    assert by_tenant_and_size == [
        ("acme", 2), ("acme", 3), ("acme", 7), (DEFAULT_TENANT, 1), ("globex", 4),
    ]  # fmt: skip
    for m in messages:
        assert m.key == m.tenant.encode()
        assert m.headers[HEADER_TENANT] == m.tenant.encode()
        assert m.headers[HEADER_VERSION] == b"1"
        assert m.headers[HEADER_SPAN_COUNT] == str(m.span_count).encode()
        assert abs(int(m.headers[HEADER_RECEIVED_AT]) - time.time_ns()) < 120 * 10**9
        assert len(m.span_ids()) == m.span_count
    spans_of = {(m.tenant, m.span_count): m.span_ids() for m in messages}
    assert spans_of[("acme", 3)] == ids_of(first)
    assert spans_of[("acme", 7)] == ids_of(second)
    assert sample("llmtel_kafka_produced_messages_total", topic=topic) == produced + 5


async def test_grpc_exports_become_one_message_per_request(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp", partitions=2)
    batches = [make_spans(n, service_name=f"s{n}") for n in (1, 4, 9)]
    async with kafka_handoff(kafka_bootstrap, topic) as handoff, receivers(handoff) as (_, ep):
        for spans in batches:
            assert await export_grpc(ep, spans, compression=grpc.Compression.Gzip) is (
                SpanExportResult.SUCCESS
            )
    messages = await consume(kafka_bootstrap, topic, at_least=3)
    assert sorted(m.span_count for m in messages) == [1, 4, 9]
    assert {frozenset(m.span_ids()) for m in messages} == {
        frozenset(ids_of(spans)) for spans in batches
    }
    assert {m.key for m in messages} == {b"acme"}


async def test_a_tenant_keeps_to_one_partition_in_order(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp", partitions=4)
    async with kafka_handoff(kafka_bootstrap, topic) as handoff:
        for n in range(1, 21):
            request = request_of(make_spans(1, service_name=f"seq-{n}"))
            await handoff.submit(OtlpMessage("acme", n, request, 1))
    messages = await consume(kafka_bootstrap, topic, at_least=20)
    assert [int(m.headers[HEADER_RECEIVED_AT]) for m in messages] == list(range(1, 21))


async def test_concurrent_submits_are_all_acknowledged(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp", partitions=3)
    request = request_of(make_spans(50))
    tenants = [f"tenant-{i % 7}" for i in range(300)]
    async with kafka_handoff(kafka_bootstrap, topic) as handoff:
        await asyncio.gather(
            *(handoff.submit(OtlpMessage(t, i, request, 50)) for i, t in enumerate(tenants))
        )
    messages = await consume(kafka_bootstrap, topic, at_least=300)
    assert sorted(int(m.headers[HEADER_RECEIVED_AT]) for m in messages) == list(range(300))


# --- the broker goes away and comes back ------------------------------------------------


async def test_broker_down_is_503_and_unavailable_then_ingest_recovers(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp", partitions=3)
    acknowledged: set[bytes] = set()
    async with kafka_handoff(kafka_bootstrap, topic) as handoff, receivers(handoff) as (url, ep):
        before = make_spans(3, service_name="before")
        assert await export_http(url, before) is SpanExportResult.SUCCESS
        acknowledged |= ids_of(before)

        await asyncio.to_thread(kafka_broker.stop)
        try:
            body = request_of(make_spans(2, service_name="down")).SerializeToString()
            async with httpx.AsyncClient(timeout=STEP_S) as http:
                started = time.monotonic()
                response = await http.post(
                    url, content=body, headers=PB | {"authorization": f"Bearer {ACME_KEY}"}
                )
                waited = time.monotonic() - started
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) >= 1
            assert waited < SEND_TIMEOUT_S + 2

            async with grpc.aio.insecure_channel(ep) as channel:
                stub = trace_service_pb2_grpc.TraceServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.Export(
                        request_of(make_spans(2, service_name="down")),
                        metadata=(("authorization", f"Bearer {ACME_KEY}"),),
                    )
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
            trailers = dict(raised.value.trailing_metadata() or ())
            assert "google.rpc.retryinfo-bin" in trailers
            # the SDK exporter sees the refusal too (it gives up after its own timeout)
            assert await export_http(url, make_spans(1), timeout=1) is SpanExportResult.FAILURE
        finally:
            await asyncio.to_thread(kafka_broker.restart)

        # no help from outside: the next exports succeed (the exporters retry on 503 /
        # UNAVAILABLE as the spec says, within their timeout)
        started = time.monotonic()
        after_http = make_spans(4, service_name="after-http")
        assert await export_http(url, after_http, timeout=STEP_S) is SpanExportResult.SUCCESS
        recovered_s = time.monotonic() - started
        after_grpc = make_spans(5, service_name="after-grpc")
        assert await export_grpc(ep, after_grpc, timeout=STEP_S) is SpanExportResult.SUCCESS
        acknowledged |= ids_of(after_http) | ids_of(after_grpc)
        # and without retries once recovered
        quick = make_spans(2, service_name="quick")
        assert await export_http(url, quick, timeout=3) is SpanExportResult.SUCCESS
        acknowledged |= ids_of(quick)
    print(f"ingest recovered {recovered_s:.1f} s after the broker was back")

    messages = await consume(kafka_bootstrap, topic, at_least=4)
    stored = set().union(*(m.span_ids() for m in messages))
    assert acknowledged <= stored  # nothing acknowledged is missing
    for m in messages:
        assert len(m.span_ids()) == m.span_count


async def test_killed_broker_recovers_and_delivers_every_acknowledged_message(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    """Submits keep coming while the broker is SIGKILLed and restarted."""
    topic = await make_topic("otlp", partitions=3)
    acknowledged: list[int] = []
    refused = 0
    request = request_of(make_spans(5))
    stop = asyncio.Event()

    async def keep_submitting(handoff: KafkaHandoff, worker: int) -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            stamp = worker * 1_000_000 + n
            n += 1
            try:
                await handoff.submit(OtlpMessage(f"t{stamp % 5}", stamp, request, 5))
            except (HandoffUnavailable, BusFull):
                refused += 1
                await asyncio.sleep(0.1)
            else:
                acknowledged.append(stamp)

    async with kafka_handoff(kafka_bootstrap, topic) as handoff:
        workers = [asyncio.create_task(keep_submitting(handoff, w)) for w in range(4)]
        try:
            await asyncio.sleep(1)
            before = len(acknowledged)
            assert before > 0
            await asyncio.to_thread(kafka_broker.kill)
            await asyncio.sleep(1)
            await asyncio.to_thread(kafka_broker.restart)
            async with asyncio.timeout(STEP_S):
                while len(acknowledged) < before + 50:
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*workers)
    assert refused > 0
    messages = await consume(kafka_bootstrap, topic, at_least=len(acknowledged))
    stored = {int(m.headers[HEADER_RECEIVED_AT]) for m in messages}
    assert set(acknowledged) <= stored


async def test_start_before_the_broker_is_reachable_connects_later(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp")
    await asyncio.to_thread(kafka_broker.stop)
    handoff = KafkaHandoff(kafka_bootstrap, topic=topic, send_timeout_s=SEND_TIMEOUT_S)
    try:
        try:
            await handoff.start(wait_s=0.5)  # no error: it keeps trying in the background
            assert not handoff.connected
            with pytest.raises(HandoffUnavailable, match="not connected to the message bus"):
                await handoff.submit(OtlpMessage("acme", 1, request_of(make_spans(1)), 1))
        finally:
            await asyncio.to_thread(kafka_broker.restart)
        async with asyncio.timeout(STEP_S):
            while not handoff.connected:
                await asyncio.sleep(0.1)
        await handoff.submit(OtlpMessage("acme", 2, request_of(make_spans(1)), 1))
    finally:
        await handoff.stop()
    [message] = await consume(kafka_bootstrap, topic, at_least=1)
    assert message.headers[HEADER_RECEIVED_AT] == b"2"


async def test_too_much_pending_is_bus_full(
    kafka_broker: KafkaBroker, kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = await make_topic("otlp")
    request = request_of(make_spans(20))
    size = request.ByteSize()
    full = sample("llmtel_kafka_produce_failures_total", topic=topic, reason="full")
    async with kafka_handoff(kafka_bootstrap, topic, max_pending_bytes=size + 10) as handoff:
        await handoff.submit(OtlpMessage("acme", 1, request, 20))
        await asyncio.to_thread(kafka_broker.stop)
        try:
            # the first waits for the broker and stays pending in the producer ...
            with pytest.raises(HandoffUnavailable, match="did not acknowledge"):
                await handoff.submit(OtlpMessage("acme", 2, request, 20))
            # ... so the next is refused at once
            started = time.monotonic()
            with pytest.raises(BusFull) as raised:
                await handoff.submit(OtlpMessage("acme", 3, request, 20))
            assert time.monotonic() - started < 0.5
            assert raised.value.retry_after_s == 1.0
        finally:
            await asyncio.to_thread(kafka_broker.restart)
        # the pending one is delivered once the broker is back, and room is made again
        await submit_until_accepted(handoff, OtlpMessage("acme", 4, request, 20))
    assert sample("llmtel_kafka_produce_failures_total", topic=topic, reason="full") > full
    messages = await consume(kafka_bootstrap, topic, at_least=3)
    stamps = [int(m.headers[HEADER_RECEIVED_AT]) for m in messages]
    assert stamps == [1, 2, 4]  # the refused-but-queued one arrived late, in order


async def test_a_rejected_batch_replaces_the_producer(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """The broker refuses a message over the topic's max.message.bytes; the idempotent
    producer has then spent that sequence number, so it is replaced and later sends work."""
    topic = await create_topic(
        kafka_bootstrap, topic_prefix + "small", config={"max.message.bytes": "2048"}
    )
    big = request_of(make_spans(200))
    assert big.ByteSize() > 8 * 2048  # well over the limit even compressed
    restarts = sample("llmtel_kafka_producer_restarts_total", topic=topic)
    # no compression, so that the broker sees the size as it is
    async with kafka_handoff(kafka_bootstrap, topic, compression=None) as handoff:
        with pytest.raises(HandoffUnavailable, match="did not store"):
            await handoff.submit(OtlpMessage("acme", 1, big, 200))
        for stamp in (2, 3):
            small = OtlpMessage("acme", stamp, request_of(make_spans(1)), 1)
            await submit_until_accepted(handoff, small)
    assert sample("llmtel_kafka_producer_restarts_total", topic=topic) == restarts + 1
    messages = await consume(kafka_bootstrap, topic, at_least=2)
    assert [int(m.headers[HEADER_RECEIVED_AT]) for m in messages] == [2, 3]


async def test_stop_is_bounded_when_the_broker_is_gone(
    kafka_broker: KafkaBroker,
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = await make_topic("otlp")
    handoff = KafkaHandoff(kafka_bootstrap, topic=topic, send_timeout_s=1.0)
    await handoff.start(wait_s=STEP_S)
    await handoff.submit(OtlpMessage("acme", 1, request_of(make_spans(1)), 1))
    await asyncio.to_thread(kafka_broker.stop)
    try:
        with pytest.raises(HandoffUnavailable):
            await handoff.submit(OtlpMessage("acme", 2, request_of(make_spans(1)), 1))
        assert sample("llmtel_kafka_pending_bytes", topic=topic) > 0  # still in the producer
        started = time.monotonic()
        await handoff.stop()
        assert time.monotonic() - started < 5
        with pytest.raises(HandoffUnavailable, match="shutting down"):
            await handoff.submit(OtlpMessage("acme", 3, request_of(make_spans(1)), 1))
    finally:
        await asyncio.to_thread(kafka_broker.restart)
    # what the producer held was failed, not forgotten: every future resolved, none leaked
    assert sample("llmtel_kafka_pending_bytes", topic=topic) == 0
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"]
