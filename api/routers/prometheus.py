"""The Prometheus HTTP API at /prometheus/api/v1/, over the rollups (Grafana's Prometheus
datasource can use llmtel directly). Tenant keys see their own tenant only, whatever the
query says; errors use Prometheus' format `{"status": "error", "errorType", "error"}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import promql_parser as pp
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import DbDep, PrincipalDep
from api.promql import engine
from api.promql import format as fmt
from api.promql.catalogue import FAMILIES
from api.promql.config import MetricsConfig
from api.promql.errors import STATUS, BadData, ExecutionError, PrometheusError
from api.promql.params import parse_duration, parse_time, range_steps
from api.promql.rollup_sql import series_labels
from api.promql.selectors import LabelMatcher
from schema.clickhouse import Database
from schema.models import Principal

router = APIRouter(prefix="/prometheus/api/v1", tags=["prometheus"])

Params = dict[str, list[str]]

# what Grafana's Prometheus datasource reads to pick its features; llmtel answers PromQL
# like Prometheus 2.42 (range selection closed on both ends, lookback 5 m)
BUILD_INFO = {
    "version": "2.42.0",
    "revision": "llmtel",
    "branch": "llmtel",
    "buildUser": "llmtel",
    "buildDate": "",
    "goVersion": "",
}


def metrics_config(request: Request) -> MetricsConfig:
    config: MetricsConfig | None = getattr(request.app.state, "metrics_config", None)
    return config or MetricsConfig()


def scope(principal: Principal) -> str | None:
    """The tenant every query is confined to (None: all tenants, admin keys only)."""
    return None if principal.is_admin else principal.tenant_id


async def read_params(request: Request) -> Params:
    """Query-string and form-encoded body parameters (Grafana POSTs by default)."""
    params: Params = {k: request.query_params.getlist(k) for k in request.query_params}
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            body = (await request.body()).decode("utf-8", errors="replace")
            for key, values in parse_qs(body, keep_blank_values=True).items():
                params.setdefault(key, []).extend(values)
    return params


def _one(params: Params, name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _required(params: Params, name: str) -> str:
    value = _one(params, name)
    if value is None:
        raise BadData(f'invalid parameter "{name}": missing')
    return value


def success(data: Any) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


def error_response(_: Request, exc: Exception) -> JSONResponse:
    kind = exc.error_type if isinstance(exc, PrometheusError) else "internal"
    return JSONResponse(
        {"status": "error", "errorType": kind, "error": str(exc)}, status_code=STATUS[kind]
    )


async def _run(fn: Callable[[], Any]) -> JSONResponse:
    try:
        return success(await run_in_threadpool(fn))
    except OperationalError:
        raise
    except DatabaseError as exc:
        raise ExecutionError(f"ClickHouse could not evaluate the query: {exc}") from exc


def _matcher_sets(params: Params, *, required: bool) -> list[list[LabelMatcher]]:
    selectors = params.get("match[]", [])
    if required and not selectors:
        raise BadData("no match[] parameter provided")
    found = []
    for text in selectors:
        expr = engine.parse(text)
        if not isinstance(expr, pp.VectorSelector):
            raise BadData(f'invalid parameter "match[]": {text!r} is not a series selector')
        found.append(engine.matchers_of(expr))
    return found or [[]]


def _end(params: Params) -> float | None:
    end = _one(params, "end")
    return parse_time(end, "end") if end is not None else None


@router.get("/query", summary="PromQL instant query")
@router.post(
    "/query",
    summary="PromQL instant query (form-encoded POST, as Grafana sends)",
    operation_id="query_post",
)
async def query(request: Request, db: DbDep, principal: PrincipalDep) -> JSONResponse:
    params = await read_params(request)
    expr = engine.parse(_required(params, "query"))
    when = _one(params, "time")
    t = parse_time(when, "time") if when else round(time.time(), 3)
    ctx = engine.Context(db, [t], metrics_config(request), scope(principal))

    def evaluate() -> dict[str, Any]:
        is_scalar, value = engine.run(ctx, expr)
        return fmt.instant(is_scalar, value, t)

    return await _run(evaluate)


@router.get("/query_range", summary="PromQL range query")
@router.post(
    "/query_range",
    summary="PromQL range query (form-encoded POST, as Grafana sends)",
    operation_id="query_range_post",
)
async def query_range(request: Request, db: DbDep, principal: PrincipalDep) -> JSONResponse:
    params = await read_params(request)
    expr = engine.parse(_required(params, "query"))
    start = parse_time(_required(params, "start"), "start")
    end = parse_time(_required(params, "end"), "end")
    step = parse_duration(_required(params, "step"), "step")
    steps = range_steps(start, end, step)
    ctx = engine.Context(db, steps, metrics_config(request), scope(principal))

    def evaluate() -> dict[str, Any]:
        is_scalar, value = engine.run(ctx, expr)
        return fmt.matrix(is_scalar, value, steps)

    return await _run(evaluate)


def _series(
    request: Request, db: Database, principal: Principal, params: Params, required: bool
) -> Callable[[], list[dict[str, str]]]:
    sets = _matcher_sets(params, required=required)
    end = _end(params)
    config = metrics_config(request)
    return lambda: series_labels(db, sets, end, config.top_models, scope(principal))


@router.get("/series", summary="Series matching selectors")
@router.post(
    "/series",
    summary="Series matching selectors (form-encoded POST, as Grafana sends)",
    operation_id="series_post",
)
async def series(request: Request, db: DbDep, principal: PrincipalDep) -> JSONResponse:
    params = await read_params(request)
    return await _run(_series(request, db, principal, params, True))


@router.get("/labels", summary="Label names")
@router.post(
    "/labels",
    summary="Label names (form-encoded POST, as Grafana sends)",
    operation_id="labels_post",
)
async def labels(request: Request, db: DbDep, principal: PrincipalDep) -> JSONResponse:
    params = await read_params(request)
    found = _series(request, db, principal, params, False)
    return await _run(lambda: sorted({name for s in found() for name in s}))


@router.get("/label/{name}/values", summary="Values of one label")
async def label_values(
    request: Request, name: str, db: DbDep, principal: PrincipalDep
) -> JSONResponse:
    params = await read_params(request)
    found = _series(request, db, principal, params, False)
    return await _run(lambda: sorted({s[name] for s in found() if name in s}))


@router.get("/metadata", summary="Type, help and unit per metric family")
async def metadata(request: Request, _: PrincipalDep) -> JSONResponse:
    params = await read_params(request)
    wanted = _one(params, "metric")
    data = {
        f.name: [{"type": f.kind, "help": f.help, "unit": f.unit}]
        for f in FAMILIES
        if wanted in (None, "", f.name)
    }
    return success(data)


@router.get("/status/buildinfo", summary="Build information (Prometheus compatible)")
async def buildinfo(_: PrincipalDep) -> JSONResponse:
    return success(BUILD_INFO)


@router.get("/query_exemplars", summary="No exemplars")
@router.post(
    "/query_exemplars",
    summary="No exemplars (form-encoded POST, as Grafana sends)",
    operation_id="query_exemplars_post",
)
async def query_exemplars(_: PrincipalDep) -> JSONResponse:
    return success([])
