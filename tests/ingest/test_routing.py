"""Tenant keys write to their tenant; the admin key routes by resource attribute."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.routing import route
from schema.models import DEFAULT_TENANT, Principal, Role
from tests.ingest.helpers import make_spans, request_of

ADMIN = Principal(role=Role.ADMIN, tenant_id=DEFAULT_TENANT, key_id="a")
ACME = Principal(role=Role.TENANT, tenant_id="acme", key_id="t")


def mixed_request() -> ExportTraceServiceRequest:
    """Three resources: tenant.id=acme (2 spans), app.tenant_id=globex (3), none (1)."""
    return request_of(
        [
            *make_spans(2, resource={"tenant.id": "acme"}, service_name="a"),
            *make_spans(3, resource={"app.tenant_id": "globex"}, service_name="g"),
            *make_spans(1, service_name="plain"),
        ]
    )


def test_admin_key_splits_by_resource_attribute() -> None:
    request = mixed_request()
    assert len(request.resource_spans) == 3
    batches = route(request, ADMIN, 6)
    assert {b.tenant_id: b.span_count for b in batches} == {
        "acme": 2,
        "globex": 3,
        DEFAULT_TENANT: 1,
    }
    for batch in batches:
        assert len(batch.request.resource_spans) == 1
        spans = sum(len(ss.spans) for ss in batch.request.resource_spans[0].scope_spans)
        assert spans == batch.span_count


def test_tenant_id_wins_over_app_tenant_id_and_empty_values_are_ignored() -> None:
    request = request_of(
        [
            *make_spans(1, resource={"app.tenant_id": "b", "tenant.id": "a"}, service_name="1"),
            *make_spans(1, resource={"tenant.id": "", "app.tenant_id": "c"}, service_name="2"),
        ]
    )
    assert {b.tenant_id for b in route(request, ADMIN, 2)} == {"a", "c"}


def test_admin_single_tenant_request_is_not_copied() -> None:
    request = request_of(make_spans(4, resource={"tenant.id": "acme"}))
    [batch] = route(request, ADMIN, 4)
    assert batch.tenant_id == "acme"
    assert batch.request is request
    assert batch.span_count == 4


def test_admin_without_attributes_goes_to_default_tenant() -> None:
    request = request_of(make_spans(2))
    [batch] = route(request, ADMIN, 2)
    assert (batch.tenant_id, batch.request is request) == (DEFAULT_TENANT, True)


def test_tenant_key_ignores_resource_attributes() -> None:
    request = mixed_request()
    [batch] = route(request, ACME, 6)
    assert (batch.tenant_id, batch.span_count, batch.request is request) == ("acme", 6, True)


def test_no_auth_is_the_default_tenant() -> None:
    request = mixed_request()
    [batch] = route(request, None, 6)
    assert (batch.tenant_id, batch.request is request) == (DEFAULT_TENANT, True)
