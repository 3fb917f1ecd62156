"""Why an OTLP request was refused, each reason mapped once to its HTTP status and gRPC code.

The receivers (`ingest.http`, `ingest.grpc`) turn these into responses; nothing else in ingest
decides a status code. Retryable failures (503 / UNAVAILABLE) carry a retry hint, the rest are
final: per the OTLP spec a client drops data refused with 400, 401, 413 or 415.
"""

from __future__ import annotations

import math
from typing import ClassVar

import grpc
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]


class IngestError(Exception):
    """Base of every refusal; `message` says what was wrong and what to do."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    outcome: ClassVar[str] = "error"  # the `outcome` label in ingest.metrics

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # spans of a decoded request that this refusal turned away (known only after decoding)
        self.refused_spans = 0

    @property
    def retry_after_s(self) -> float | None:
        """Seconds the client should wait before retrying; None means do not retry."""
        return None

    def http_headers(self) -> dict[str, str]:
        """Extra response headers this refusal needs (Retry-After, WWW-Authenticate)."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(retry_after_header(self.retry_after_s))}

    def status(self) -> status_pb2.Status:
        """The `google.rpc.Status` body the OTLP spec asks for on every 4xx/5xx."""
        return status_pb2.Status(code=self.grpc_code.value[0], message=self.message)


def retry_after_header(seconds: float) -> int:
    """Retry-After is whole seconds (RFC 9110); round up so clients never come back early."""
    return max(1, math.ceil(seconds))


class Unauthenticated(IngestError):
    """No API key, or one we do not know (or that was revoked)."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    outcome = "unauthenticated"

    def http_headers(self) -> dict[str, str]:
        # RFC 9110 section 11.6.1: a 401 must say which scheme to use
        return {"WWW-Authenticate": 'Bearer realm="llmtel"'}


class UnsupportedMediaType(IngestError):
    """A Content-Type or Content-Encoding we do not decode.

    OTLP does not name a status for an unknown Content-Encoding; RFC 9110 section 15.5.16 says
    415 covers both the Content-Type and the Content-Encoding, so we answer 415 for both (the
    Collector answers 400 for the encoding; either way the client must not retry).
    """

    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT  # HTTP-only in practice: gRPC negotiates codecs
    outcome = "unsupported_media_type"


class BadRequest(IngestError):
    """The body cannot be decoded (corrupt gzip, not protobuf, not OTLP/JSON)."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    outcome = "bad_request"

    def status(self) -> status_pb2.Status:
        # the OTLP spec: a 400's Status.details SHOULD hold a google.rpc.BadRequest
        status = super().status()
        violation = error_details_pb2.BadRequest.FieldViolation(
            field="body", description=self.message
        )
        _pack(status, error_details_pb2.BadRequest(field_violations=[violation]))
        return status


class PayloadTooLarge(IngestError):
    """The body, compressed or after decompression, is over the configured limit.

    HTTP 413 is what the OTLP spec asks for. On gRPC, the spec notes that servers answer
    RESOURCE_EXHAUSTED for an over-size message (grpc itself does so for
    `grpc.max_receive_message_length`) and that the client treats it as final when no
    RetryInfo comes with it, so we send none.
    """

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    outcome = "too_large"

    def __init__(self, max_bytes: int, *, inflated: bool = False) -> None:
        when = "after decompression " if inflated else ""
        super().__init__(
            f"request body is {when}over the {max_bytes} byte limit; export smaller batches "
            "(e.g. lower the batch span processor's max_export_batch_size)"
        )


class RetryLater(IngestError):
    """A temporary refusal: 503 + Retry-After / UNAVAILABLE + google.rpc.RetryInfo."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self._retry_after_s = retry_after_s

    @property
    def retry_after_s(self) -> float:
        return self._retry_after_s

    def retry_info(self) -> error_details_pb2.RetryInfo:
        info = error_details_pb2.RetryInfo()
        whole = int(self._retry_after_s)
        info.retry_delay.seconds = whole
        info.retry_delay.nanos = int((self._retry_after_s - whole) * 1e9)
        return info

    def status(self) -> status_pb2.Status:
        status = super().status()
        _pack(status, self.retry_info())
        return status


class AtCapacity(RetryLater):
    """The hand-off is full (`schema.messages.BusFull`): backpressure reaches the client."""

    outcome = "at_capacity"

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"llmtel is at capacity and did not accept this request; retry in "
            f"{retry_after_header(retry_after_s)} s (OTLP exporters retry on their own)",
            retry_after_s,
        )


class Unavailable(RetryLater):
    """The hand-off is not taking data (`schema.messages.HandoffUnavailable`): retry later."""

    outcome = "unavailable"

    def __init__(self, detail: str, retry_after_s: float = 1.0) -> None:
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"llmtel cannot accept data right now{reason}; the request was not stored, "
            "retry later (OTLP exporters retry on their own)",
            retry_after_s,
        )


class MethodNotAllowed(IngestError):
    """Anything but POST on the OTLP path."""

    http_status = 405
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    outcome = "method_not_allowed"

    def __init__(self, method: str) -> None:
        super().__init__(f"{method} is not supported here: OTLP/HTTP exports use POST")

    def http_headers(self) -> dict[str, str]:
        return {"Allow": "POST"}


class NotFound(IngestError):
    """A path we do not serve; ingest takes traces only."""

    http_status = 404
    grpc_code = grpc.StatusCode.UNIMPLEMENTED
    outcome = "not_found"

    def __init__(self, path: str) -> None:
        super().__init__(f"nothing at {path}: llmtel takes OTLP traces at POST /v1/traces")


class Internal(IngestError):
    """A bug on our side; the request was not stored."""

    outcome = "internal"

    def __init__(self) -> None:
        super().__init__("internal error in the llmtel receiver; the request was not stored")


def _pack(
    status: status_pb2.Status, detail: error_details_pb2.BadRequest | error_details_pb2.RetryInfo
) -> None:
    any_detail = AnyProto()
    any_detail.Pack(detail)
    status.details.append(any_detail)
