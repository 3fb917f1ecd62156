"""What ingest hands on: one message per accepted OTLP request (the bus and Kafka contract).

The payload is the validated `ExportTraceServiceRequest`. In process it travels parsed; on
Kafka it travels as protobuf bytes with the tenant, receive time and contract version as
headers. Keeping one message per request (not per span) keeps per-message overhead off the
hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

CONTRACT_VERSION = "1"


@dataclass(frozen=True, slots=True)
class OtlpMessage:
    tenant_id: str
    received_at_ns: int
    request: ExportTraceServiceRequest
    span_count: int
    # `request` serialized, when ingest already holds exactly these bytes (a protobuf body
    # nothing was removed from): saves re-encoding it for Kafka and for the normaliser
    payload: bytes | None = None

    def serialized(self) -> bytes:
        return self.payload if self.payload is not None else self.request.SerializeToString()


class BusFull(Exception):
    """The hand-off has no room: the receiver must answer 503 / UNAVAILABLE with a retry hint."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__("llmtel is at capacity; retry later")
        self.retry_after_s = retry_after_s


class HandoffUnavailable(Exception):
    """The hand-off is not accepting data (shutting down, broker unreachable)."""
