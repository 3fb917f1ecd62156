"""Which tenant a request's spans belong to (pure).

A tenant key writes only to its own tenant, whatever its resources claim. The admin key may
write for any tenant: each ResourceSpans names its tenant with a string resource attribute
`tenant.id` (or `app.tenant_id`), and resources without one go to the default tenant. Without
authentication everything is the default tenant. The request is split (copied) only when it
really holds several tenants; the common single-tenant request goes on as it came.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from schema.models import DEFAULT_TENANT, Principal

# checked in this order; the first non-empty string value wins
TENANT_ATTRIBUTES = ("tenant.id", "app.tenant_id")


@dataclass(frozen=True, slots=True)
class TenantBatch:
    """The part of a request that belongs to one tenant."""

    tenant_id: str
    request: ExportTraceServiceRequest
    span_count: int


def route(
    request: ExportTraceServiceRequest, principal: Principal | None, span_count: int
) -> list[TenantBatch]:
    """One batch per tenant in the request; `principal` None means authentication is off."""
    if principal is None:
        return [TenantBatch(DEFAULT_TENANT, request, span_count)]
    if not principal.is_admin:
        return [TenantBatch(principal.tenant_id, request, span_count)]
    tenants = [resource_tenant(rs) for rs in request.resource_spans]
    first = tenants[0] if tenants else DEFAULT_TENANT
    if all(tenant == first for tenant in tenants):
        return [TenantBatch(first, request, span_count)]
    return _split(request, tenants)


def resource_tenant(resource_spans: ResourceSpans) -> str:
    """The tenant a resource names for itself, or the default tenant."""
    found: dict[str, str] = {}
    for attribute in resource_spans.resource.attributes:
        if attribute.key in TENANT_ATTRIBUTES and attribute.value.string_value:
            found.setdefault(attribute.key, attribute.value.string_value)
    for key in TENANT_ATTRIBUTES:
        if key in found:
            return found[key]
    return DEFAULT_TENANT


def _split(request: ExportTraceServiceRequest, tenants: list[str]) -> list[TenantBatch]:
    requests: dict[str, ExportTraceServiceRequest] = {}
    counts: dict[str, int] = {}
    for tenant, resource_spans in zip(tenants, request.resource_spans, strict=True):
        part = requests.get(tenant)
        if part is None:
            part = requests[tenant] = ExportTraceServiceRequest()
            counts[tenant] = 0
        part.resource_spans.append(resource_spans)  # a copy
        counts[tenant] += sum(len(scope.spans) for scope in resource_spans.scope_spans)
    return [TenantBatch(tenant, part, counts[tenant]) for tenant, part in requests.items()]
