"""OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, as the OTLP spec lays it out.

Order of checks, cheapest first: path and method (404, 405), Content-Type (415), API key
(401), body size (413, from Content-Length before reading, then while streaming), decoding
(415/413/400).
Every error answers a `google.rpc.Status` in the request's encoding (JSON when the request
did not name a usable one); 503 carries Retry-After.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ingest import metrics
from ingest.decode import (
    DEFAULT_MAX_BYTES,
    Encoding,
    encode_response,
    encode_status,
    encoding_for,
    inflate,
    parse,
)
from ingest.errors import (
    BadRequest,
    IngestError,
    Internal,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from ingest.service import IngestService

TRACES_PATH = "/v1/traces"

log = logging.getLogger(__name__)


def create_otlp_http_app(service: IngestService, max_bytes: int = DEFAULT_MAX_BYTES) -> Starlette:
    """The OTLP/HTTP app (serve it on port 4318); `max_bytes` caps the body, also inflated."""
    receiver = _TracesReceiver(service, max_bytes)
    return Starlette(
        routes=[Route(TRACES_PATH, receiver.handle, methods=["POST"])],
        # Starlette's own 404/405 answers are plain text; OTLP wants a Status on every 4xx
        exception_handlers={404: _routing_error, 405: _routing_error},
    )


def api_key_from(headers: Headers) -> str | None:
    """`Authorization: Bearer <key>`, else `x-api-key: <key>`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and key.strip():
            return key.strip()
    return headers.get("x-api-key") or None


class _TracesReceiver:
    def __init__(self, service: IngestService, max_bytes: int) -> None:
        self._service = service
        self._max_bytes = max_bytes

    async def handle(self, request: Request) -> Response:
        encoding: Encoding | None = None
        try:
            encoding = encoding_for(request.headers.get("content-type"))
            principal = await self._service.authenticate(api_key_from(request.headers))
            # read before refusing: an unread body makes the server close the connection
            body = await self._read_body(request)
            self._service.check_capacity()
            data = inflate(body, request.headers.get("content-encoding"), self._max_bytes)
            metrics.observe_bytes("http", len(data))
            if encoding is Encoding.JSON:
                # json_format is pure Python (~45 ms for 512 spans): keep the loop responsive
                otlp = await asyncio.to_thread(parse, data, encoding)
            else:
                otlp = parse(data, encoding)
            raw = data if encoding is Encoding.PROTOBUF else None
            result = await self._service.accept(otlp, principal, raw)
        except IngestError as exc:
            metrics.observe("http", exc.outcome, refused=exc.refused_spans)
            return error_response(exc, encoding or Encoding.JSON)
        except ClientDisconnect:
            metrics.observe("http", "client_disconnected")
            return Response(status_code=400)  # nobody is left to read it
        except Exception:
            log.exception("OTLP/HTTP export failed")
            error = Internal()
            metrics.observe("http", error.outcome)
            return error_response(error, encoding or Encoding.JSON)
        outcome = "partial" if result.rejected_spans else "accepted"
        metrics.observe(
            "http", outcome, accepted=result.accepted_spans, rejected=result.rejected_spans
        )
        return Response(encode_response(result.response, encoding), 200, media_type=encoding)

    async def _read_body(self, request: Request) -> bytes:
        """The body, refusing (without buffering it) one that is over the limit."""
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise BadRequest(f"invalid Content-Length {declared!r}") from None
            if length > self._max_bytes:
                raise PayloadTooLarge(self._max_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_bytes:
                raise PayloadTooLarge(self._max_bytes)
            if chunk:
                chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def error_response(error: IngestError, encoding: Encoding) -> Response:
    """The OTLP error answer: the mapped status and a `google.rpc.Status` body."""
    return Response(
        encode_status(error.status(), encoding),
        error.http_status,
        headers=error.http_headers(),
        media_type=encoding,
    )


async def _routing_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return error_response(MethodNotAllowed(request.method), Encoding.JSON)
    return error_response(NotFound(request.url.path), Encoding.JSON)
