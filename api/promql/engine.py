"""Evaluate a parsed PromQL expression at a list of steps (instant query: one step).

Leaves (selectors and rate/irate/increase over range selectors) are evaluated by
ClickHouse (rollup_sql); everything above them by the pure vector algebra (vectors).
Anything else is refused with a `bad_data` error that names the construct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import promql_parser as pp

from api.promql import vectors as vx
from api.promql.config import MetricsConfig
from api.promql.errors import BadData, unsupported
from api.promql.rollup_sql import Function, ModelRanking, Selection, evaluate
from api.promql.selectors import LabelMatcher, Op
from schema.clickhouse import Database

Value = vx.Scalar | vx.Vector

_OPS: list[tuple[Any, Op]] = [  # MatchOp values are not hashable
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
]


def _op(match_op: Any) -> Op:
    return next(op for kind, op in _OPS if kind == match_op)


_RANGE_FUNCTIONS: dict[str, Function] = {"rate": "rate", "irate": "irate", "increase": "increase"}
_AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count"})


@dataclass(frozen=True, slots=True)
class Context:
    db: Database
    steps: list[float]
    config: MetricsConfig
    tenant: str | None  # None: every tenant (admin)
    ranking: ModelRanking = field(default_factory=ModelRanking)  # read once per request


def parse(query: str) -> pp.Expr:
    """promql-parser's AST, or bad_data with the parser's message."""
    if not query.strip():
        raise BadData('invalid parameter "query": empty query')
    try:
        return pp.parse(query)
    except Exception as exc:  # the parser raises plain exceptions with its message
        raise BadData(f'invalid parameter "query": {exc}') from exc


def matchers_of(selector: pp.VectorSelector) -> list[LabelMatcher]:
    if selector.matchers.or_matchers:
        raise unsupported("'or' inside a label matcher list")
    if selector.at is not None:
        raise unsupported("@ modifier")
    found = [LabelMatcher(m.name, _op(m.op), m.value) for m in selector.matchers.matchers]
    if selector.name:
        found.append(LabelMatcher("__name__", "=", selector.name))
    return found


def _offset(selector: pp.VectorSelector) -> float:
    return selector.offset.total_seconds() if selector.offset is not None else 0.0


def _leaf(ctx: Context, selection: Selection, fn: Function) -> vx.Vector:
    result = evaluate(
        ctx.db, selection, fn, ctx.steps, ctx.config.sample_interval_s,
        ctx.config.top_models, ctx.tenant, ctx.ranking,
    )  # fmt: skip
    if fn != "value":
        vx.check_unique_labels(result)
    return result


def _vector(ctx: Context, expr: pp.Expr, what: str) -> vx.Vector:
    if result_is_scalar(expr):
        raise BadData(f"expected an instant vector for {what}, got a scalar")
    return evaluate_expr(ctx, expr)  # type: ignore[return-value]


def _scalar(ctx: Context, expr: pp.Expr, what: str) -> vx.Scalar:
    if not result_is_scalar(expr):
        raise unsupported(f"a non-literal scalar for {what}")
    return evaluate_expr(ctx, expr)  # type: ignore[return-value]


def _call(ctx: Context, call: pp.Call) -> Value:
    name = call.func.name
    if name in _RANGE_FUNCTIONS:
        arg = call.args[0]
        if not isinstance(arg, pp.MatrixSelector):
            raise unsupported(f"{name}() of anything but a range vector selector (e.g. a subquery)")
        selector = arg.vector_selector
        selection = Selection(matchers_of(selector), _offset(selector), arg.range.total_seconds())
        return _leaf(ctx, selection, _RANGE_FUNCTIONS[name])
    if name == "histogram_quantile":
        q = _scalar(ctx, call.args[0], "histogram_quantile's quantile")
        buckets = _vector(ctx, call.args[1], "histogram_quantile")
        return vx.histogram_quantile(q, buckets, len(ctx.steps))
    raise unsupported(f"function {name}()")


def _aggregate(ctx: Context, expr: pp.AggregateExpr) -> vx.Vector:
    op = str(expr.op)
    modifier = expr.modifier
    grouping = vx.Grouping()
    if modifier is not None:
        grouping = vx.Grouping(tuple(modifier.labels), modifier.type == pp.AggModifierType.Without)
    vector = _vector(ctx, expr.expr, f"{op}()")
    if op in _AGGREGATIONS:
        return vx.aggregate(op, vector, grouping, len(ctx.steps))
    if op in ("topk", "bottomk"):
        if expr.param is None:
            raise BadData(f"{op}() needs a parameter k")
        k = _scalar(ctx, expr.param, f"{op}'s k")
        return vx.top(op, k, vector, grouping, len(ctx.steps))
    raise unsupported(f"aggregation {op}()")


def _binary(ctx: Context, expr: pp.BinaryExpr) -> Value:
    op = str(expr.op)
    modifier = expr.modifier
    return_bool = bool(modifier and modifier.return_bool)
    matching = vx.Matching()
    if modifier is not None:
        if modifier.card in (
            pp.VectorMatchCardinality.ManyToOne,
            pp.VectorMatchCardinality.OneToMany,
        ):
            raise unsupported("group_left / group_right")
        fill = modifier.fill_values
        if fill is not None and (fill.lhs is not None or fill.rhs is not None):
            raise unsupported("fill() in vector matching")
        if modifier.matching is not None:
            matching = vx.Matching(
                tuple(modifier.matching.labels),
                modifier.matching.type == pp.LabelModifierType.Include,
            )
    lhs, rhs = evaluate_expr(ctx, expr.lhs), evaluate_expr(ctx, expr.rhs)
    lhs_scalar, rhs_scalar = result_is_scalar(expr.lhs), result_is_scalar(expr.rhs)
    steps = len(ctx.steps)
    if op in vx.SET_OPERATORS:
        if lhs_scalar or rhs_scalar:
            raise BadData(f"set operator {op!r} not allowed in binary scalar expression")
        return vx.set_operation(op, lhs, rhs, matching, steps)  # type: ignore[arg-type]
    if lhs_scalar and rhs_scalar:
        return vx.scalar_binary(op, lhs, rhs)  # type: ignore[arg-type]
    if rhs_scalar:
        return vx.vector_scalar(op, lhs, rhs, swap=False, return_bool=return_bool)  # type: ignore[arg-type]
    if lhs_scalar:
        return vx.vector_scalar(op, rhs, lhs, swap=True, return_bool=return_bool)  # type: ignore[arg-type]
    return vx.vector_vector(op, lhs, rhs, matching, return_bool=return_bool, steps=steps)  # type: ignore[arg-type]


def evaluate_expr(ctx: Context, expr: pp.Expr) -> Value:
    """The value of `expr` at every step of `ctx`."""
    if isinstance(expr, pp.NumberLiteral):
        return [float(expr.val)] * len(ctx.steps)
    if isinstance(expr, pp.ParenExpr):
        return evaluate_expr(ctx, expr.expr)
    if isinstance(expr, pp.UnaryExpr):
        inner = evaluate_expr(ctx, expr.expr)
        if result_is_scalar(expr.expr):
            return [-v for v in inner]  # type: ignore[operator]
        return vx.negate(inner)  # type: ignore[arg-type]
    if isinstance(expr, pp.VectorSelector):
        return _leaf(ctx, Selection(matchers_of(expr), _offset(expr)), "value")
    if isinstance(expr, pp.Call):
        return _call(ctx, expr)
    if isinstance(expr, pp.AggregateExpr):
        return _aggregate(ctx, expr)
    if isinstance(expr, pp.BinaryExpr):
        return _binary(ctx, expr)
    if isinstance(expr, pp.MatrixSelector):
        raise unsupported("range vector selector outside rate(), irate() or increase()")
    if isinstance(expr, pp.SubqueryExpr):
        raise unsupported("subquery")
    if isinstance(expr, pp.StringLiteral):
        raise unsupported("string literal")
    raise unsupported(type(expr).__name__)


def result_is_scalar(expr: pp.Expr) -> bool:
    """Whether the whole expression's type is scalar (drives resultType)."""
    while isinstance(expr, pp.ParenExpr):
        expr = expr.expr
    if isinstance(expr, pp.NumberLiteral):
        return True
    if isinstance(expr, pp.UnaryExpr):
        return result_is_scalar(expr.expr)
    if isinstance(expr, pp.BinaryExpr):
        return result_is_scalar(expr.lhs) and result_is_scalar(expr.rhs)
    return False


def run(ctx: Context, expr: pp.Expr) -> tuple[bool, Value]:
    """(is scalar, value) of `expr`; NaN marks absent samples of a vector."""
    value = evaluate_expr(ctx, expr)
    return result_is_scalar(expr), value
