"""The query and admin API: `create_app(db, tenants)`; OpenAPI docs at `/docs`.

Errors are raised as types by the layers below and mapped to HTTP statuses here, once;
every error body is `{"detail": "<what was wrong and what to do>"}`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib import metadata

from clickhouse_connect.driver.exceptions import OperationalError
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from api.params import InvalidParameter
from api.promql.errors import PrometheusError
from api.queries.spans import TraceNotFound
from api.routers import alerts as alert_admin
from api.routers import anomalies, billing, dashboard, health, spans, traces, usage, whoami, windows
from api.routers import metrics as metrics_router
from api.routers import prometheus as prometheus_api
from api.routers import tenants as tenant_admin
from schema.alerts import DestinationNotFound, InvalidAlertConfig, RuleNotFound
from schema.clickhouse import Database
from schema.prices import PriceLookup
from schema.tenants import (
    InvalidTenantName,
    KeyNotFound,
    LastAdminKey,
    TenantExists,
    TenantNotFound,
    TenantStore,
)

log = logging.getLogger(__name__)

_STATUS: dict[type[Exception], int] = {
    InvalidParameter: status.HTTP_400_BAD_REQUEST,
    InvalidTenantName: status.HTTP_400_BAD_REQUEST,
    TenantNotFound: status.HTTP_404_NOT_FOUND,
    TraceNotFound: status.HTTP_404_NOT_FOUND,
    KeyNotFound: status.HTTP_404_NOT_FOUND,
    TenantExists: status.HTTP_409_CONFLICT,
    LastAdminKey: status.HTTP_409_CONFLICT,
    InvalidAlertConfig: status.HTTP_400_BAD_REQUEST,
    RuleNotFound: status.HTTP_404_NOT_FOUND,
    DestinationNotFound: status.HTTP_404_NOT_FOUND,
}


def create_app(
    db: Database,
    tenants: TenantStore,
    *,
    no_auth: bool = False,
    ready: Callable[[], bool] | None = None,
    prices: PriceLookup | None = None,
    alert_allowed_urls: Sequence[str] = (),
) -> FastAPI:
    """The API over `db`; `ready` adds a condition to `/readyz` (e.g. the bus is open).

    `no_auth=True` treats every request as an admin of tenant `default`: it reads and
    manages every tenant. Only for a local, single-user setup.
    """
    app = FastAPI(
        title="llmtel",
        version=_version(),
        description="Traces, spans, LLM usage and cost per tenant; tenant administration.",
    )
    app.state.db = db
    app.state.tenants = tenants
    app.state.no_auth = no_auth
    app.state.ready = ready or (lambda: True)
    app.state.prices = prices  # unit prices shown on invoices; None: not shown
    app.state.alert_allowed_urls = tuple(alert_allowed_urls)  # non-https destination prefixes

    for router in (health.router, tenant_admin.router, traces.router, spans.router, usage.router):
        app.include_router(router)
    app.include_router(whoami.router)
    app.include_router(windows.router)
    app.include_router(anomalies.router)
    app.include_router(dashboard.router)
    app.include_router(billing.router)
    app.include_router(alert_admin.router)
    app.include_router(metrics_router.router)
    app.include_router(prometheus_api.router)

    async def known_error(_: Request, exc: Exception) -> JSONResponse:
        code = next(c for kind, c in _STATUS.items() if isinstance(exc, kind))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    async def clickhouse_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("ClickHouse unavailable", exc_info=exc)
        return JSONResponse(
            {"detail": "ClickHouse is unavailable; retry shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )

    for kind in _STATUS:
        app.add_exception_handler(kind, known_error)
    app.add_exception_handler(OperationalError, clickhouse_down)
    app.add_exception_handler(PrometheusError, prometheus_api.error_response)
    return app


def _version() -> str:
    try:
        return metadata.version("llmtel")
    except metadata.PackageNotFoundError:
        return "0+unknown"
