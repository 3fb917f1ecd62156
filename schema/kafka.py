"""The `llmtel.otlp.v1` topic contract and the topic set of the distributed pipeline.

One message per accepted OTLP request (and tenant): value = the validated
`ExportTraceServiceRequest` as protobuf bytes (JSON requests are converted once, at
ingest), key = tenant id (so a tenant's requests stay ordered within one partition),
headers = tenant, received-at (ns) and contract version. Per-message overhead in
aiokafka/faust is ~10 us, which is why messages are requests, not spans.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from schema.messages import CONTRACT_VERSION, OtlpMessage
from schema.windows import ANOMALIES_TOPIC, WINDOWS_TOPIC

OTLP_TOPIC = "llmtel.otlp.v1"
DLQ_TOPIC = "llmtel.otlp.dlq.v1"
ALL_TOPICS = (OTLP_TOPIC, WINDOWS_TOPIC, ANOMALIES_TOPIC, DLQ_TOPIC)

HEADER_TENANT = "llmtel-tenant"
HEADER_RECEIVED_AT = "llmtel-received-at-ns"
HEADER_VERSION = "llmtel-contract"
HEADER_SPAN_COUNT = "llmtel-spans"
# on DLQ messages
HEADER_DLQ_REASON = "llmtel-dlq-reason"
HEADER_DLQ_SOURCE = "llmtel-dlq-source"  # "topic/partition/offset"

Headers = list[tuple[str, bytes]]


class ContractError(ValueError):
    """A message that does not follow the llmtel.otlp.v1 contract (it goes to the DLQ)."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes
    value: bytes
    headers: Headers


def encode_otlp(message: OtlpMessage) -> KafkaRecord:
    return KafkaRecord(
        key=message.tenant_id.encode(),
        value=message.serialized(),
        headers=[
            (HEADER_TENANT, message.tenant_id.encode()),
            (HEADER_RECEIVED_AT, str(message.received_at_ns).encode()),
            (HEADER_VERSION, CONTRACT_VERSION.encode()),
            (HEADER_SPAN_COUNT, str(message.span_count).encode()),
        ],
    )


def decode_otlp(value: bytes | None, headers: Headers) -> OtlpMessage:
    """The message back, or `ContractError` saying what is wrong with it."""
    found = dict(headers)
    try:
        version = found[HEADER_VERSION].decode()
        tenant = found[HEADER_TENANT].decode()
        received_at = int(found[HEADER_RECEIVED_AT])
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise ContractError(f"missing or malformed header: {exc}") from exc
    if version != CONTRACT_VERSION:
        raise ContractError(f"unsupported contract version {version!r}")
    if not tenant:
        raise ContractError("empty tenant header")
    if value is None:
        raise ContractError("message has no value")
    try:
        request = ExportTraceServiceRequest.FromString(value)
    except Exception as exc:  # protobuf raises DecodeError, sometimes others
        raise ContractError(f"value is not an ExportTraceServiceRequest: {exc}") from exc
    spans = found.get(HEADER_SPAN_COUNT)
    span_count = (
        int(spans)
        if spans
        else sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    )
    return OtlpMessage(tenant, received_at, request, span_count, payload=value)
