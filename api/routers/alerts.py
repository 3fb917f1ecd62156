"""Alert rules, destinations and delivery attempts (per tenant; the admin key may act for any).

A tenant key manages its own tenant only; the admin key selects the tenant with `tenant=`
(default: `default`). Destination URLs and secrets are write-only: responses show the
scheme and host and whether a secret is set, never the URL path or the secret.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ScopeDep, TenantsDep
from api.params import format_ns
from api.queries.windows import time_range
from api.routers.spans import TIME_HELP
from schema.alert_store import AlertStore
from schema.alert_urls import check_url
from schema.alerts import (
    AlertMetric,
    AlertRule,
    AlertScope,
    Comparison,
    Destination,
    DestinationKind,
    DestinationSpec,
    RulePatch,
    RuleSpec,
)

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid rule or destination (the message says what to change)"},
    401: {"description": "No or unknown key"},
    403: {"description": "Another tenant's alerts"},
}


def get_alert_store(request: Request) -> AlertStore:
    store: AlertStore | None = getattr(request.app.state, "alert_store", None)
    if store is None:
        store = request.app.state.alert_store = AlertStore(request.app.state.db)
    return store


AlertStoreDep = Annotated[AlertStore, Depends(get_alert_store)]


def target_tenant(
    principal: PrincipalDep,
    tenants: TenantsDep,
    tenant: Annotated[
        str | None, Query(description="Admin only: the tenant to act for (default: default).")
    ] = None,
) -> str:
    """The one tenant a write (or a read by id) is about."""
    if not principal.is_admin:
        if tenant is not None and tenant != principal.tenant_id:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"a tenant key manages only its own tenant ({principal.tenant_id!r}); "
                "drop 'tenant='",
            )
        return principal.tenant_id
    chosen = tenant or principal.tenant_id
    tenants.get_tenant(chosen)  # 404 for an unknown tenant
    return chosen


TargetDep = Annotated[str, Depends(target_tenant)]


# -- bodies ------------------------------------------------------------------------------


class RuleOut(BaseModel):
    rule_id: str
    tenant: str
    builtin: bool = Field(description="The unchanged default rule every tenant has.")
    created_at: datetime | None
    name: str
    metric: AlertMetric
    scope: AlertScope
    key: str | None
    comparison: Comparison
    factor: float
    threshold: Decimal | None
    min_baseline: Decimal | None
    effective_min_baseline: Decimal
    cooldown_s: int
    destinations: list[str] = Field(description="Empty: the tenant's default destinations.")
    enabled: bool


class DestinationOut(BaseModel):
    destination_id: str
    tenant: str
    name: str
    kind: DestinationKind
    masked_url: str = Field(description="Scheme and host; the rest of the URL is write-only.")
    has_secret: bool
    default: bool
    created_at: datetime


class DeliveryOut(BaseModel):
    tenant: str
    alert_id: str
    rule_id: str
    destination_id: str
    kind: str = Field(description="firing, resolved or budget.")
    window_start: str
    window_end: str
    attempt: int
    status: str = Field(description="delivered, retry (another attempt followed) or failed.")
    http_status: int | None = Field(description="null: no HTTP answer (timeout, refused).")
    latency_ms: float
    error: str
    attempted_at: datetime


class DeliveryList(BaseModel):
    tenant: str | None
    deliveries: list[DeliveryOut] = Field(description="Newest first.")


def _rule_out(rule: AlertRule) -> RuleOut:
    spec = rule.spec
    return RuleOut(
        rule_id=rule.rule_id,
        tenant=rule.tenant,
        builtin=rule.created_at is None,
        created_at=rule.created_at,
        effective_min_baseline=spec.baseline(),
        **spec.model_dump(),
    )


def _destination_out(d: Destination) -> DestinationOut:
    return DestinationOut(
        destination_id=d.destination_id,
        tenant=d.tenant,
        name=d.name,
        kind=d.kind,
        masked_url=d.masked_url,
        has_secret=bool(d.secret),
        default=d.default,
        created_at=d.created_at,
    )


# -- rules -------------------------------------------------------------------------------


@router.post(
    "/rules",
    response_model=RuleOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an alert rule",
    responses=_ERRORS,
)
def create_rule(body: RuleSpec, tenant: TargetDep, store: AlertStoreDep) -> RuleOut:
    return _rule_out(store.create_rule(tenant, body))


@router.get(
    "/rules",
    response_model=list[RuleOut],
    summary="Alert rules, the default rule included",
    responses=_ERRORS,
)
def list_rules(tenant: ScopeDep, store: AlertStoreDep) -> list[RuleOut]:
    return [_rule_out(rule) for rule in store.list_rules(tenant)]


@router.get("/rules/{rule_id}", response_model=RuleOut, summary="One rule", responses=_ERRORS)
def get_rule(rule_id: str, tenant: TargetDep, store: AlertStoreDep) -> RuleOut:
    return _rule_out(store.get_rule(tenant, rule_id))


@router.patch(
    "/rules/{rule_id}",
    response_model=RuleOut,
    summary="Change some fields of a rule (the default rule too)",
    responses=_ERRORS,
)
def update_rule(rule_id: str, body: RulePatch, tenant: TargetDep, store: AlertStoreDep) -> RuleOut:
    return _rule_out(store.update_rule(tenant, rule_id, body))


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a rule (deleting `default` turns the default cost alert off)",
    responses=_ERRORS,
)
def delete_rule(rule_id: str, tenant: TargetDep, store: AlertStoreDep) -> None:
    store.delete_rule(tenant, rule_id)


# -- destinations --------------------------------------------------------------------------


@router.post(
    "/destinations",
    response_model=DestinationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Add a Slack incoming webhook or a signed generic webhook",
    description="The URL must be https (unless LLMTEL_ALERT_ALLOWED_URLS allows it) and "
    "must not resolve to a link-local or metadata address (checked now and before every "
    "send). URL and secret are write-only.",
    responses=_ERRORS,
)
async def create_destination(
    body: DestinationSpec, tenant: TargetDep, store: AlertStoreDep, request: Request
) -> DestinationOut:
    allowed = getattr(request.app.state, "alert_allowed_urls", ())
    await asyncio.to_thread(check_url, body.url, allowed)
    created = await asyncio.to_thread(store.create_destination, tenant, body)
    return _destination_out(created)


@router.get(
    "/destinations",
    response_model=list[DestinationOut],
    summary="Destinations (URLs masked)",
    responses=_ERRORS,
)
def list_destinations(tenant: ScopeDep, store: AlertStoreDep) -> list[DestinationOut]:
    return [_destination_out(d) for d in store.list_destinations(tenant)]


@router.delete(
    "/destinations/{destination_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a destination",
    responses=_ERRORS,
)
def delete_destination(destination_id: str, tenant: TargetDep, store: AlertStoreDep) -> None:
    store.delete_destination(tenant, destination_id)


# -- deliveries ----------------------------------------------------------------------------


@router.get(
    "/deliveries",
    response_model=DeliveryList,
    summary="Every delivery attempt, newest first",
    description="Selected by attempt time. Default range: the last 24 hours.",
    responses=_ERRORS,
)
def list_deliveries(
    tenant: ScopeDep,
    store: AlertStoreDep,
    rule_id: Annotated[str | None, Query(description="Only this rule.")] = None,
    destination_id: Annotated[str | None, Query(description="Only this destination.")] = None,
    alert_id: Annotated[str | None, Query(description="Only this alert.")] = None,
    start: Annotated[str | None, Query(description=f"Default: end - 24 h. {TIME_HELP}")] = None,
    end: Annotated[str | None, Query(description=f"Exclusive; default: now. {TIME_HELP}")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> DeliveryList:
    start_ns, end_ns = time_range(start, end)
    rows = store.list_deliveries(
        tenant, start_ns, end_ns, rule_id=rule_id, destination_id=destination_id,
        alert_id=alert_id, limit=limit,
    )  # fmt: skip
    return DeliveryList(
        tenant=tenant,
        deliveries=[
            DeliveryOut(
                tenant=row["tenant"],
                alert_id=row["alert_id"],
                rule_id=row["rule_id"],
                destination_id=row["destination_id"],
                kind=row["kind"],
                window_start=format_ns(int(row["window_start_unix_nano"])),
                window_end=format_ns(int(row["window_end_unix_nano"])),
                attempt=int(row["attempt"]),
                status=row["status"],
                http_status=int(row["http_status"]) or None,
                latency_ms=float(row["latency_ms"]),
                error=row["error"],
                attempted_at=datetime.fromtimestamp(int(row["attempted_at_ms"]) / 1000, tz=UTC),
            )
            for row in rows
        ],
    )
