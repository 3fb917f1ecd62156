"""The protocol-independent receiver: authenticate, validate, route, hand off.

Both OTLP transports call this with a decoded request; it does not know what is downstream
(the `Handoff` does). A success answer means every accepted span was handed on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.errors import AtCapacity, Unauthenticated, Unavailable
from ingest.ports import Authenticator, Handoff
from ingest.routing import route
from ingest.validate import check_spans
from schema.messages import BusFull, HandoffUnavailable, OtlpMessage
from schema.models import Principal


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The answer for the client, and the span counts for metrics."""

    response: ExportTraceServiceResponse
    accepted_spans: int
    rejected_spans: int


class IngestService:
    """Accepts decoded OTLP trace requests for a tenant; `authenticator` None turns auth off."""

    def __init__(
        self,
        handoff: Handoff,
        authenticator: Authenticator | None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._handoff = handoff
        self._authenticator = authenticator
        self._clock = clock

    async def export(
        self, request: ExportTraceServiceRequest, api_key: str | None
    ) -> ExportTraceServiceResponse:
        """Authenticate, then `accept`; raises an `ingest.errors.IngestError` on refusal."""
        principal = await self.authenticate(api_key)
        return (await self.accept(request, principal)).response

    async def authenticate(self, api_key: str | None) -> Principal | None:
        """The key's principal (None when auth is off); the receivers call this before decoding."""
        if self._authenticator is None:
            return None
        if not api_key:
            raise Unauthenticated(
                "missing API key: send it as 'Authorization: Bearer <key>' (an HTTP header or "
                "gRPC metadata; e.g. OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer%20<key>')"
            )
        try:
            principal = await self._authenticator.authenticate(api_key)
        except HandoffUnavailable as exc:  # the key store is unreachable: retryable
            raise Unavailable(str(exc)) from exc
        if principal is None:
            raise Unauthenticated(
                "unknown or revoked API key: check the key your exporter sends in "
                "'Authorization: Bearer <key>'"
            )
        return principal

    def check_capacity(self) -> None:
        """Raise `AtCapacity` when the hand-off can take nothing now: receivers call this
        before decoding, so shedding load at capacity costs next to nothing."""
        retry_after_s = self._handoff.full()
        if retry_after_s is not None:
            raise AtCapacity(retry_after_s)

    async def accept(
        self,
        request: ExportTraceServiceRequest,
        principal: Principal | None,
        raw: bytes | None = None,
    ) -> ExportResult:
        """Validate, split by tenant and hand each part on; mutates `request`.

        `raw` is the protobuf the request was parsed from; it travels on when the request
        reaches the hand-off unchanged, so nothing downstream encodes it again.
        """
        received_at_ns = self._clock()
        checked = check_spans(request)
        result = ExportResult(checked.response(), checked.accepted_spans, checked.rejected_spans)
        if not checked.accepted_spans:
            return result  # nothing to hand on; still a (partial) success
        # When a request holds several tenants, each part is submitted in turn. If a later
        # submit fails, the earlier parts are already handed on, yet the client is told to
        # retry the whole request: delivery is at-least-once and those parts may be stored
        # twice (the OTLP spec accepts duplicates on retry, see its "Duplicate Data").
        batches = route(checked.request, principal, checked.accepted_spans)
        unchanged = raw is not None and not checked.rejected_spans and len(batches) == 1
        for batch in batches:
            message = OtlpMessage(
                batch.tenant_id,
                received_at_ns,
                batch.request,
                batch.span_count,
                payload=raw if unchanged else None,
            )
            try:
                await self._handoff.submit(message)
            except BusFull as exc:
                error: AtCapacity | Unavailable = AtCapacity(exc.retry_after_s)
                error.refused_spans = checked.accepted_spans
                raise error from exc
            except HandoffUnavailable as exc:
                error = Unavailable(str(exc))
                error.refused_spans = checked.accepted_spans
                raise error from exc
        return result
