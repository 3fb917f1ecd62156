"""The service: auth, partial success, one message per tenant, backpressure as errors."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.errors import AtCapacity, Unauthenticated, Unavailable
from ingest.service import IngestService
from schema.models import DEFAULT_TENANT
from tests.ingest.helpers import (
    ACME_KEY,
    ADMIN_KEY,
    KeyTable,
    RecordingHandoff,
    make_spans,
    request_of,
)

NOW = 1_700_000_000_000_000_000


def with_bad_span(count: int) -> ExportTraceServiceRequest:
    request = request_of(make_spans(count))
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
    return request


async def test_tenant_key_hands_on_one_message(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    request = request_of(make_spans(4, resource={"tenant.id": "globex"}))
    response = await service.export(request, ACME_KEY)
    assert not response.HasField("partial_success")
    [message] = handoff.messages
    assert (message.tenant_id, message.span_count, message.received_at_ns) == ("acme", 4, NOW)
    assert message.request is request


@pytest.mark.parametrize("key", [None, "", "wrong-key"])
async def test_missing_or_unknown_key_is_unauthenticated(
    service: IngestService, handoff: RecordingHandoff, key: str | None
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await service.export(request_of(make_spans(1)), key)
    assert refused.value.http_status == 401
    assert "Authorization: Bearer" in refused.value.message
    assert handoff.attempts == 0


async def test_no_auth_takes_any_key_as_default_tenant(handoff: RecordingHandoff) -> None:
    service = IngestService(handoff, None)
    await service.export(request_of(make_spans(2, resource={"tenant.id": "acme"})), None)
    assert handoff.spans_by_tenant() == {DEFAULT_TENANT: 2}


async def test_partial_success_hands_on_only_the_valid_spans(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    response = await service.export(with_bad_span(5), ACME_KEY)
    assert response.partial_success.rejected_spans == 1
    assert "invalid trace id" in response.partial_success.error_message
    [message] = handoff.messages
    assert message.span_count == 4
    assert sum(len(ss.spans) for ss in message.request.resource_spans[0].scope_spans) == 4


async def test_nothing_accepted_submits_nothing(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    assert not (await service.export(ExportTraceServiceRequest(), ACME_KEY)).HasField(
        "partial_success"
    )
    response = await service.export(with_bad_span(1), ACME_KEY)
    assert response.partial_success.rejected_spans == 1
    assert handoff.attempts == 0


async def test_admin_key_submits_one_message_per_tenant(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    request = request_of(
        [
            *make_spans(2, resource={"tenant.id": "acme"}, service_name="a"),
            *make_spans(3, resource={"tenant.id": "globex"}, service_name="b"),
            *make_spans(1, service_name="c"),
        ]
    )
    await service.export(request, ADMIN_KEY)
    assert handoff.spans_by_tenant() == {"acme": 2, "globex": 3, DEFAULT_TENANT: 1}
    assert len(handoff.messages) == 3
    assert {m.received_at_ns for m in handoff.messages} == {NOW}


async def test_bus_full_is_at_capacity_with_the_retry_hint(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.full_after = 0
    handoff.retry_after_s = 2.5
    with pytest.raises(AtCapacity) as refused:
        await service.export(request_of(make_spans(3)), ACME_KEY)
    assert refused.value.retry_after_s == 2.5
    assert refused.value.refused_spans == 3
    assert refused.value.http_headers() == {"Retry-After": "3"}


async def test_second_tenant_refused_fails_the_whole_request(
    service: IngestService, handoff: RecordingHandoff
) -> None:
    handoff.full_after = 1
    request = request_of(
        [
            *make_spans(2, resource={"tenant.id": "acme"}, service_name="a"),
            *make_spans(3, resource={"tenant.id": "globex"}, service_name="b"),
        ]
    )
    with pytest.raises(AtCapacity):
        await service.export(request, ADMIN_KEY)
    # the first part was handed on; the client retries everything (at-least-once)
    assert handoff.spans_by_tenant() == {"acme": 2}


async def test_handoff_unavailable_is_unavailable(handoff: RecordingHandoff) -> None:
    handoff.unavailable = True
    service = IngestService(handoff, KeyTable())
    with pytest.raises(Unavailable) as refused:
        await service.export(request_of(make_spans(1)), ACME_KEY)
    assert refused.value.http_status == 503
    assert "bus closed" in refused.value.message
