"""OTLP/gRPC receiver, driven by the real SDK exporter and by a plain gRPC stub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client import REGISTRY

from ingest.grpc import create_otlp_grpc_server
from ingest.service import IngestService
from schema.models import DEFAULT_TENANT
from tests.ingest.helpers import (
    ACME_KEY,
    ADMIN_KEY,
    RecordingHandoff,
    free_port,
    make_spans,
    request_of,
)


@asynccontextmanager
async def serve(service: IngestService, max_bytes: int = 1 << 20) -> AsyncIterator[str]:
    endpoint = f"127.0.0.1:{free_port()}"
    server = create_otlp_grpc_server(service, endpoint, max_bytes)
    await server.start()
    try:
        yield endpoint
    finally:
        await server.stop(None)


@asynccontextmanager
async def stub(endpoint: str) -> AsyncIterator[trace_service_pb2_grpc.TraceServiceStub]:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        yield trace_service_pb2_grpc.TraceServiceStub(channel)


async def export(
    endpoint: str,
    spans: Sequence[ReadableSpan],
    key: str | None = ACME_KEY,
    compression: grpc.Compression = grpc.Compression.NoCompression,
) -> SpanExportResult:
    exporter = OTLPSpanExporter(
        endpoint=endpoint,
        insecure=True,
        headers={"authorization": f"Bearer {key}"} if key else None,
        compression=compression,
        timeout=2,
    )
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


async def call(
    endpoint: str, request: ExportTraceServiceRequest, key: str | None = ACME_KEY
) -> ExportTraceServiceResponse:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with stub(endpoint) as s:
        response: ExportTraceServiceResponse = await s.Export(request, metadata=metadata)
        return response


async def refusal(
    endpoint: str, request: ExportTraceServiceRequest, key: str | None = ACME_KEY, **kw: object
) -> grpc.aio.AioRpcError:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    async with stub(endpoint) as s:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await s.Export(request, metadata=metadata, **kw)
    return raised.value


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
async def test_sdk_exporter_delivers_every_span(
    service: IngestService, handoff: RecordingHandoff, compression: grpc.Compression
) -> None:
    async with serve(service) as endpoint:
        result = await export(endpoint, make_spans(6), compression=compression)
    assert result is SpanExportResult.SUCCESS
    assert handoff.spans_by_tenant() == {"acme": 6}


async def test_sdk_exporter_with_admin_key_splits_tenants(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    spans = [
        *make_spans(2, resource={"tenant.id": "acme"}, service_name="a"),
        *make_spans(5, resource={"tenant.id": "globex"}, service_name="b"),
        *make_spans(1, service_name="c"),
    ]
    async with serve(service) as endpoint:
        assert await export(endpoint, spans, key=ADMIN_KEY) is SpanExportResult.SUCCESS
    assert handoff.spans_by_tenant() == {"acme": 2, "globex": 5, DEFAULT_TENANT: 1}


@pytest.mark.parametrize("key", ["wrong-key", None])
async def test_unknown_or_missing_key_is_unauthenticated(
    service: IngestService, handoff: RecordingHandoff, key: str | None
) -> None:
    async with serve(service) as endpoint:
        assert await export(endpoint, make_spans(1), key=key) is SpanExportResult.FAILURE
        error = await refusal(endpoint, request_of(make_spans(1)), key=key)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "API key" in (error.details() or "")
    assert handoff.attempts == 0


async def test_x_api_key_metadata_is_accepted(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    async with serve(service) as endpoint, stub(endpoint) as s:
        await s.Export(request_of(make_spans(2)), metadata=(("x-api-key", ACME_KEY),))
    assert handoff.spans_by_tenant() == {"acme": 2}


async def test_a_full_handoff_refuses_before_decoding(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.reports_full = True
    async with serve(service) as endpoint:
        error = await refusal(endpoint, request_of(make_spans(2)))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "at capacity" in (error.details() or "")
    assert handoff.attempts == 0


async def test_at_capacity_is_unavailable_with_retry_info(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.full_after = 0
    handoff.retry_after_s = 7  # longer than the exporter's 2 s timeout: it gives up at once
    async with serve(service) as endpoint:
        assert await export(endpoint, make_spans(2)) is SpanExportResult.FAILURE
        # without our RetryInfo the exporter would have retried after ~1 s
        assert handoff.attempts == 1
        error = await refusal(endpoint, request_of(make_spans(2)))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "at capacity" in (error.details() or "")
    trailers = dict(error.trailing_metadata() or ())
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert info.retry_delay.seconds == 7
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    unpacked = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(unpacked)
    assert unpacked.retry_delay.seconds == 7


async def test_handoff_unavailable_is_unavailable(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.unavailable = True
    async with serve(service) as endpoint:
        error = await refusal(endpoint, request_of(make_spans(1)))
    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert "bus closed" in (error.details() or "")


async def test_partial_success(service: IngestService, handoff: RecordingHandoff) -> None:
    request = request_of(make_spans(3))
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b"short"
    async with serve(service) as endpoint:
        response = await call(endpoint, request)
    assert response.partial_success.rejected_spans == 1
    assert "invalid span id" in response.partial_success.error_message
    assert handoff.spans_by_tenant() == {"acme": 2}


async def test_corrupt_message_is_invalid_argument_with_the_reason(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    async with serve(service) as endpoint, grpc.aio.insecure_channel(endpoint) as channel:
        method = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await method(
                b"\xff\xff\xff garbage", metadata=(("authorization", f"Bearer {ACME_KEY}"),)
            )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a protobuf ExportTraceServiceRequest" in (raised.value.details() or "")
    assert handoff.attempts == 0


async def test_message_over_the_limit_is_resource_exhausted(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    big = request_of(make_spans(60))
    assert big.ByteSize() > 4096
    async with serve(service, max_bytes=4096) as endpoint:
        plain = await refusal(endpoint, big)
        # compresses well under the limit, but the limit applies to the inflated message
        zipped = await refusal(endpoint, big, compression=grpc.Compression.Gzip)
        assert await export(endpoint, make_spans(60)) is SpanExportResult.FAILURE
    assert plain.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert zipped.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert handoff.attempts == 0


async def test_metrics_count_grpc_requests_and_bytes(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"protocol": "grpc", **labels}) or 0.0

    accepted = value("llmtel_otlp_requests_total", outcome="accepted")
    spans = value("llmtel_otlp_spans_total", outcome="accepted")
    size = value("llmtel_otlp_request_bytes_total")
    capacity = value("llmtel_otlp_requests_total", outcome="at_capacity")
    request = request_of(make_spans(4))
    async with serve(service) as endpoint:
        await call(endpoint, request)
        handoff.full_after = 1
        await refusal(endpoint, request)
    assert value("llmtel_otlp_requests_total", outcome="accepted") == accepted + 1
    assert value("llmtel_otlp_requests_total", outcome="at_capacity") == capacity + 1
    assert value("llmtel_otlp_spans_total", outcome="accepted") == spans + 4
    assert value("llmtel_otlp_request_bytes_total") == size + 2 * request.ByteSize()


async def test_binding_a_taken_port_fails_at_once(service: IngestService) -> None:
    async with serve(service) as endpoint:
        with pytest.raises(RuntimeError):
            create_otlp_grpc_server(service, endpoint, 1 << 20)
