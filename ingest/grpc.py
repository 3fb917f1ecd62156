"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

grpc itself undoes gzip and enforces `max_bytes` (RESOURCE_EXHAUSTED, on the decompressed
message); the API key comes from `authorization: Bearer <key>` (or `x-api-key`) metadata.
Refusals become status codes with the message, plus a `google.rpc.Status` in
`grpc-status-details-bin`; UNAVAILABLE also carries `google.rpc.RetryInfo` in
`google.rpc.retryinfo-bin`, which is where the Python OTLP exporter looks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import cast

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ingest import metrics
from ingest.decode import DEFAULT_MAX_BYTES, Encoding, parse
from ingest.errors import IngestError, Internal, RetryLater
from ingest.service import IngestService

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"

log = logging.getLogger(__name__)

# what `invocation_metadata()` yields when iterated: (key, value) pairs
Metadata = Iterable[tuple[str, str | bytes]]


def create_otlp_grpc_server(
    service: IngestService, bind: str, max_bytes: int = DEFAULT_MAX_BYTES
) -> grpc.aio.Server:
    """The OTLP/gRPC server, bound to `bind` (e.g. "0.0.0.0:4317") but not yet started.

    Binding happens here, so a taken port fails now (port reuse is off: two receivers never
    silently share a port). Then `await server.start()`, and `await server.stop(grace)`.
    Messages over `max_bytes` are refused by grpc before they reach us (not in our metrics).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    # no request_deserializer: the handler parses the bytes itself, so that a corrupt message
    # is INVALID_ARGUMENT with a reason (grpc would answer UNKNOWN) and its size is counted
    handler = grpc.unary_unary_rpc_method_handler(
        _TraceService(service).export,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Export": handler}),)
    )
    server.add_insecure_port(bind)
    return server


def api_key_from(metadata: Metadata | None) -> str | None:
    """`authorization: Bearer <key>`, else `x-api-key: <key>` (metadata keys are lowercase)."""
    fallback: str | None = None
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif key == "x-api-key" and value:
            fallback = value
    return fallback


def trailing_metadata(error: IngestError) -> tuple[tuple[str, bytes], ...]:
    """Rich error details for clients that read them."""
    trailers = [("grpc-status-details-bin", error.status().SerializeToString())]
    if isinstance(error, RetryLater):
        trailers.append(("google.rpc.retryinfo-bin", error.retry_info().SerializeToString()))
    return tuple(trailers)


class _TraceService:
    def __init__(self, service: IngestService) -> None:
        self._service = service

    async def export(
        self,
        data: bytes,
        context: grpc.aio.ServicerContext[bytes, ExportTraceServiceResponse],
    ) -> ExportTraceServiceResponse:
        metadata = cast("Metadata | None", context.invocation_metadata())
        try:
            principal = await self._service.authenticate(api_key_from(metadata))
            self._service.check_capacity()
            metrics.observe_bytes("grpc", len(data))  # already inflated by grpc
            request = parse(data, Encoding.PROTOBUF)
            result = await self._service.accept(request, principal, data)
        except IngestError as exc:
            metrics.observe("grpc", exc.outcome, refused=exc.refused_spans)
            await context.abort(exc.grpc_code, exc.message, trailing_metadata(exc))
        except Exception:
            log.exception("OTLP/gRPC export failed")
            error = Internal()
            metrics.observe("grpc", error.outcome)
            await context.abort(error.grpc_code, error.message, trailing_metadata(error))
        outcome = "partial" if result.rejected_spans else "accepted"
        metrics.observe(
            "grpc", outcome, accepted=result.accepted_spans, rejected=result.rejected_spans
        )
        return result.response
