"""Prometheus counters for the OTLP receivers, on the default registry.

Recorded once per request (never per span): the receivers call `observe` with the request's
outcome and how many spans it accepted, rejected (invalid ids) or refused (the whole request
failed after decoding, e.g. at capacity).
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from prometheus_client import Counter

Protocol = Literal["grpc", "http"]

REQUESTS = Counter(
    "llmtel_otlp_requests",
    "OTLP trace export requests by protocol and outcome (accepted, partial, or the refusal).",
    ["protocol", "outcome"],
)
SPANS = Counter(
    "llmtel_otlp_spans",
    "Spans in OTLP trace export requests by protocol and outcome (accepted, rejected, refused).",
    ["protocol", "outcome"],
)
REQUEST_BYTES = Counter(
    "llmtel_otlp_request_bytes",
    "Uncompressed bytes of OTLP trace export request bodies.",
    ["protocol"],
)


@cache
def _requests(protocol: str, outcome: str) -> Counter:
    return REQUESTS.labels(protocol, outcome)


@cache
def _spans(protocol: str, outcome: str) -> Counter:
    return SPANS.labels(protocol, outcome)


@cache
def _bytes(protocol: str) -> Counter:
    return REQUEST_BYTES.labels(protocol)


def observe(
    protocol: Protocol, outcome: str, *, accepted: int = 0, rejected: int = 0, refused: int = 0
) -> None:
    """Count one request and its spans."""
    _requests(protocol, outcome).inc()
    if accepted:
        _spans(protocol, "accepted").inc(accepted)
    if rejected:
        _spans(protocol, "rejected").inc(rejected)
    if refused:
        _spans(protocol, "refused").inc(refused)


def observe_bytes(protocol: Protocol, size: int) -> None:
    """Count a request body's uncompressed size."""
    _bytes(protocol).inc(size)
