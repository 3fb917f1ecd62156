"""Monthly invoices per tenant, as JSON or CSV."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import DbDep, PrincipalDep, TenantsDep
from api.models import Invoice
from api.queries.billing import invoice, invoice_csv
from api.queries.months import month_of, parse_month
from schema.prices import PriceLookup
from schema.tenants import TenantNotFound

router = APIRouter(prefix="/api/v1/billing", tags=["billing"])

CSV_TYPE = "text/csv"


def wants_csv(accept: str | None) -> bool:
    """True when `Accept` ranks text/csv at least as high as JSON (and above zero)."""
    if not accept:
        return False
    quality: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(q, quality.get(media.lower(), 0.0))
    csv_q = quality.get(CSV_TYPE, 0.0)
    json_q = max(quality.get("application/json", 0.0), quality.get("*/*", 0.0) - 0.001)
    return csv_q > 0 and csv_q >= json_q


@router.get(
    "/invoices/{tenant}",
    response_model=Invoice,
    summary="A tenant's invoice for a calendar month (UTC)",
    description="Line items per model, provider and cost source with tokens by kind, the "
    "unit prices applied (USD per million tokens) and exact subtotals; the total is the exact "
    "sum of the tenant's span costs in the month. `Accept: text/csv` answers CSV. A tenant "
    "key reads only its own invoices: another tenant's answers 404, like a missing tenant.",
    responses={
        200: {"content": {CSV_TYPE: {}}},
        400: {"description": "Invalid month"},
        404: {"description": "No such tenant (or not yours)"},
    },
)
def read_invoice(
    tenant: str,
    request: Request,
    db: DbDep,
    tenants: TenantsDep,
    principal: PrincipalDep,
    month: Annotated[
        str | None, Query(description="YYYY-MM (UTC); default: the current month.")
    ] = None,
    accept: Annotated[str | None, Header()] = None,
) -> Invoice | Response:
    if not principal.is_admin and tenant != principal.tenant_id:
        raise TenantNotFound(f"tenant {tenant!r} does not exist")
    first_day = month_of(time.time_ns()) if month is None else parse_month(month)
    settings = tenants.get_tenant(tenant).settings
    prices: PriceLookup | None = getattr(request.app.state, "prices", None)
    bill = invoice(db, tenant, first_day, settings, prices)
    if wants_csv(accept):
        return Response(
            invoice_csv(bill),
            media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="llmtel-invoice-{tenant}-'
                f'{bill.month}.csv"'
            },
        )
    return bill
