"""OTLP/HTTP receiver, driven in process (httpx) and over a socket by the real SDK exporter."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
import uvicorn
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from ingest.http import create_otlp_http_app
from ingest.service import IngestService
from schema.models import DEFAULT_TENANT
from tests.ingest.helpers import (
    ACME_KEY,
    ADMIN_KEY,
    RecordingHandoff,
    make_spans,
    request_of,
    to_otlp_json,
)

PB = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}
AUTH = {"authorization": f"Bearer {ACME_KEY}"}
URL = "http://otlp.test/v1/traces"


@asynccontextmanager
async def client(
    service: IngestService, max_bytes: int = 1 << 20
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_otlp_http_app(service, max_bytes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as c:
        yield c


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """The app under uvicorn on a free port; yields the /v1/traces URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1/traces"
    finally:
        server.should_exit = True
        await task


async def export(
    url: str,
    spans: Sequence[ReadableSpan],
    key: str | None = ACME_KEY,
    compression: Compression = Compression.NoCompression,
) -> SpanExportResult:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    exporter = OTLPSpanExporter(endpoint=url, headers=headers, compression=compression, timeout=2)
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


def status_of(response: httpx.Response) -> status_pb2.Status:
    if response.headers["content-type"] == "application/json":
        return _status_from_json(response.content)
    return status_pb2.Status.FromString(response.content)


def _status_from_json(body: bytes) -> status_pb2.Status:
    from google.protobuf import json_format

    return json_format.Parse(body, status_pb2.Status())


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the real SDK exporter over a socket ---------------------------------------------------


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
)
async def test_sdk_exporter_delivers_every_span(
    service: IngestService, handoff: RecordingHandoff, compression: Compression
) -> None:
    async with serve(create_otlp_http_app(service, 1 << 20)) as url:
        result = await export(url, make_spans(7), compression=compression)
    assert result is SpanExportResult.SUCCESS
    assert handoff.spans_by_tenant() == {"acme": 7}
    [message] = handoff.messages
    names = {s.name for s in message.request.resource_spans[0].scope_spans[0].spans}
    assert names == {"agent run", "chat gpt-4o"}


async def test_sdk_exporter_with_admin_key_splits_tenants(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    spans = [
        *make_spans(3, resource={"tenant.id": "acme"}, service_name="a"),
        *make_spans(2, resource={"app.tenant_id": "globex"}, service_name="b"),
        *make_spans(4, service_name="c"),
    ]
    async with serve(create_otlp_http_app(service, 1 << 20)) as url:
        assert await export(url, spans, key=ADMIN_KEY) is SpanExportResult.SUCCESS
    assert handoff.spans_by_tenant() == {"acme": 3, "globex": 2, DEFAULT_TENANT: 4}


@pytest.mark.parametrize("key", ["wrong-key", None])
async def test_sdk_exporter_fails_without_a_valid_key(
    service: IngestService,
    handoff: RecordingHandoff,
    key: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve(create_otlp_http_app(service, 1 << 20)) as url:
        assert await export(url, make_spans(2), key=key) is SpanExportResult.FAILURE
    assert "code: 401" in caplog.text
    assert handoff.attempts == 0


async def test_sdk_exporter_honours_retry_after_when_at_capacity(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.full_after = 0
    handoff.retry_after_s = 7  # longer than the exporter's 2 s timeout: it gives up at once
    async with serve(create_otlp_http_app(service, 1 << 20)) as url:
        assert await export(url, make_spans(2)) is SpanExportResult.FAILURE
    # without our Retry-After it would have backed off ~1 s and tried again within 2 s
    assert handoff.attempts == 1


async def test_sdk_exporter_batch_over_the_limit_is_refused(
    service: IngestService, handoff: RecordingHandoff, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(create_otlp_http_app(service, 4096)) as url:
        assert await export(url, make_spans(60)) is SpanExportResult.FAILURE
        assert "code: 413" in caplog.text
        # what the exporter got: 413 with a Status, over a real socket
        body = request_of(make_spans(60)).SerializeToString()
        async with httpx.AsyncClient() as c:
            response = await c.post(url, content=body, headers=PB | AUTH)
    assert response.status_code == 413
    assert "4096 byte limit" in status_of(response).message
    assert handoff.attempts == 0


# --- in process: status codes, bodies, headers ----------------------------------------------


async def test_json_request_gets_a_json_answer(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    async with client(service) as c:
        response = await c.post(
            URL, content=to_otlp_json(request_of(make_spans(3))), headers=JSON | AUTH
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert handoff.spans_by_tenant() == {"acme": 3}


async def test_json_partial_success_names_the_rejected_spans(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    document = orjson.loads(to_otlp_json(request_of(make_spans(3))))
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["traceId"] = "not-hex"
    spans[1]["spanId"] = "0000000000000000"
    async with client(service) as c:
        response = await c.post(URL, content=orjson.dumps(document), headers=JSON | AUTH)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"
    assert "1 with an invalid trace id" in partial["errorMessage"]
    assert "1 with an invalid span id" in partial["errorMessage"]
    assert handoff.spans_by_tenant() == {"acme": 1}


async def test_protobuf_partial_success(service: IngestService, handoff: RecordingHandoff) -> None:
    request = request_of(make_spans(4))
    request.resource_spans[0].scope_spans[0].spans[2].parent_span_id = b"\x01\x02"
    async with client(service) as c:
        response = await c.post(URL, content=request.SerializeToString(), headers=PB | AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 1
    assert "parent span id" in answer.partial_success.error_message
    assert handoff.spans_by_tenant() == {"acme": 3}


async def test_x_api_key_header_is_accepted(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    async with client(service) as c:
        body = request_of(make_spans(1)).SerializeToString()
        response = await c.post(URL, content=body, headers=PB | {"x-api-key": ACME_KEY})
    assert response.status_code == 200
    assert handoff.spans_by_tenant() == {"acme": 1}


async def test_unauthenticated_is_401_with_status_in_the_request_encoding(
    service: IngestService,
) -> None:
    async with client(service) as c:
        response = await c.post(URL, content=b"", headers=PB | {"authorization": "Bearer nope"})
        missing = await c.post(URL, content=b"{}", headers=JSON)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/x-protobuf"
    status = status_of(response)
    assert status.code == 16  # UNAUTHENTICATED
    assert "unknown or revoked API key" in status.message
    assert missing.status_code == 401
    assert "missing API key" in status_of(missing).message


async def test_unsupported_media_type_is_415_in_json(service: IngestService) -> None:
    async with client(service) as c:
        response = await c.post(URL, content=b"x", headers={"content-type": "text/plain"} | AUTH)
        encoded = await c.post(
            URL, content=b"x", headers=PB | AUTH | {"content-encoding": "snappy"}
        )
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/json"
    assert "text/plain" in status_of(response).message
    assert encoded.status_code == 415
    assert encoded.headers["content-type"] == "application/x-protobuf"
    assert "snappy" in status_of(encoded).message


async def test_garbage_is_400_with_a_bad_request_detail(service: IngestService) -> None:
    async with client(service) as c:
        pb = await c.post(URL, content=b"\xff\xff\xff garbage", headers=PB | AUTH)
        js = await c.post(URL, content=b"{oops", headers=JSON | AUTH)
        gz = await c.post(
            URL,
            content=gzip.compress(b"x" * 1000)[:20],
            headers=PB | AUTH | {"content-encoding": "gzip"},
        )
    assert (pb.status_code, js.status_code, gz.status_code) == (400, 400, 400)
    status = status_of(pb)
    assert "not a protobuf ExportTraceServiceRequest" in status.message
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    assert detail.field_violations[0].description == status.message
    assert "not valid JSON" in status_of(js).message
    assert "truncated" in status_of(gz).message


async def test_too_large_by_content_length_streaming_or_inflating(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield bytes(1000)

    async with client(service, max_bytes=4000) as c:
        declared = await c.post(URL, content=bytes(4001), headers=PB | AUTH)
        streamed = await c.post(URL, content=chunks(), headers=PB | AUTH)
        bomb = await c.post(
            URL,
            content=gzip.compress(bytes(1_000_000)),
            headers=PB | AUTH | {"content-encoding": "gzip"},
        )
    assert "content-length" not in streamed.request.headers  # chunked: checked while reading
    for response in (declared, streamed, bomb):
        assert response.status_code == 413
        assert "4000 byte limit" in status_of(response).message
    assert "after decompression" in status_of(bomb).message
    assert handoff.attempts == 0


async def test_at_capacity_is_503_with_retry_after_and_retry_info(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.full_after = 0
    handoff.retry_after_s = 1.5
    async with client(service) as c:
        body = request_of(make_spans(2)).SerializeToString()
        response = await c.post(URL, content=body, headers=PB | AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    status = status_of(response)
    assert "at capacity" in status.message
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 500_000_000)


async def test_a_full_handoff_refuses_before_decoding_but_after_auth(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.reports_full = True
    async with client(service) as c:
        refused = await c.post(URL, content=b"not protobuf at all", headers=PB | AUTH)
        unknown = await c.post(URL, content=b"x", headers=PB | {"authorization": "Bearer nope"})
        handoff.reports_full = False
        garbage = await c.post(URL, content=b"not protobuf at all", headers=PB | AUTH)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
    assert "at capacity" in status_of(refused).message
    assert handoff.attempts == 0  # refused without decoding or submitting
    assert unknown.status_code == 401  # who is asking is still checked first
    assert garbage.status_code == 400  # with room again, the body is decoded (and refused)


async def test_handoff_unavailable_is_503(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.unavailable = True
    async with client(service) as c:
        response = await c.post(
            URL, content=to_otlp_json(request_of(make_spans(1))), headers=JSON | AUTH
        )
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert "bus closed" in response.json()["message"]


async def test_a_bug_downstream_is_500_with_a_status(handoff: RecordingHandoff) -> None:
    class Broken(RecordingHandoff):
        async def submit(self, message: object) -> None:
            raise RuntimeError("boom")

    async with client(IngestService(Broken(), None)) as c:
        body = request_of(make_spans(1)).SerializeToString()
        response = await c.post(URL, content=body, headers=PB)
    assert response.status_code == 500
    assert "internal error" in status_of(response).message


async def test_other_methods_and_paths(service: IngestService) -> None:
    async with client(service) as c:
        get = await c.get(URL)
        metrics = await c.post("http://otlp.test/v1/metrics", content=b"", headers=PB | AUTH)
    assert get.status_code == 405
    assert get.headers["allow"] == "POST"
    assert "POST" in get.json()["message"]
    assert metrics.status_code == 404
    assert "/v1/traces" in metrics.json()["message"]


async def test_empty_request_is_a_success_and_submits_nothing(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    async with client(service) as c:
        response = await c.post(
            URL, content=ExportTraceServiceRequest().SerializeToString(), headers=PB | AUTH
        )
    assert (response.status_code, response.content) == (200, b"")
    assert handoff.attempts == 0


async def test_metrics_count_requests_spans_and_bytes(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    before = {
        "accepted": sample("llmtel_otlp_requests_total", protocol="http", outcome="accepted"),
        "partial": sample("llmtel_otlp_requests_total", protocol="http", outcome="partial"),
        "unauth": sample("llmtel_otlp_requests_total", protocol="http", outcome="unauthenticated"),
        "spans": sample("llmtel_otlp_spans_total", protocol="http", outcome="accepted"),
        "rejected": sample("llmtel_otlp_spans_total", protocol="http", outcome="rejected"),
        "refused": sample("llmtel_otlp_spans_total", protocol="http", outcome="refused"),
        "bytes": sample("llmtel_otlp_request_bytes_total", protocol="http"),
    }
    good = request_of(make_spans(5)).SerializeToString()
    partial = request_of(make_spans(3))
    partial.resource_spans[0].scope_spans[0].spans[0].trace_id = b""
    async with client(service) as c:
        await c.post(URL, content=good, headers=PB | AUTH)
        await c.post(URL, content=partial.SerializeToString(), headers=PB | AUTH)
        await c.post(URL, content=good, headers=PB)
        handoff.full_after = 0
        await c.post(URL, content=good, headers=PB | AUTH)
    assert (
        sample("llmtel_otlp_requests_total", protocol="http", outcome="accepted")
        == before["accepted"] + 1
    )
    assert (
        sample("llmtel_otlp_requests_total", protocol="http", outcome="partial")
        == before["partial"] + 1
    )
    assert (
        sample("llmtel_otlp_requests_total", protocol="http", outcome="unauthenticated")
        == before["unauth"] + 1
    )
    assert (
        sample("llmtel_otlp_spans_total", protocol="http", outcome="accepted")
        == before["spans"] + 7
    )
    assert (
        sample("llmtel_otlp_spans_total", protocol="http", outcome="rejected")
        == before["rejected"] + 1
    )
    assert (
        sample("llmtel_otlp_spans_total", protocol="http", outcome="refused")
        == before["refused"] + 5
    )
    expected_bytes = 2 * len(good) + partial.ByteSize()
    assert (
        sample("llmtel_otlp_request_bytes_total", protocol="http")
        == before["bytes"] + expected_bytes
    )
