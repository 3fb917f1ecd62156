"""PromQL's vector algebra over step-aligned series (pure; no I/O).

A vector is a list of `Series`, each with one value per step (None: no sample at that
step; NaN is a value); a scalar is one float per step. The functions follow
Prometheus' engine.go and quantile.go: label handling, matching, filtering comparisons
and bucket interpolation.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from api.promql.errors import BadData
from api.promql.rollup_sql import Series

NAME = "__name__"
NAN = float("nan")
Scalar = list[float]
Vector = list[Series]


def present(value: float | None) -> bool:
    return value is not None


def without_name(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != NAME}


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


@dataclass(frozen=True, slots=True)
class Grouping:
    """`by (labels)` (without=False) or `without (labels)`; no clause is `by ()`."""

    labels: tuple[str, ...] = ()
    without: bool = False

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        if self.without:
            drop = {*self.labels, NAME}
            return {k: v for k, v in labels.items() if k not in drop}
        return {k: labels[k] for k in self.labels if k in labels}


def _groups(
    vector: Vector, grouping: Grouping
) -> dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[Series]]]:
    groups: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[Series]]] = {}
    for series in vector:
        labels = grouping.group_labels(series.labels)
        groups.setdefault(_key(labels), (labels, []))[1].append(series)
    return groups


_REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "avg": lambda values: math.fsum(values) / len(values),
    "min": min,
    "max": max,
    "count": lambda values: float(len(values)),
}


def aggregate(op: str, vector: Vector, grouping: Grouping, steps: int) -> Vector:
    """sum, avg, min, max or count per group and step."""
    reduce = _REDUCERS[op]
    result = []
    for labels, members in _groups(vector, grouping).values():
        values: list[float | None] = []
        for at_step in zip(*(s.values for s in members), strict=True):
            found = [v for v in at_step if v is not None]
            values.append(reduce(found) if found else None)
        if any(present(v) for v in values):
            result.append(Series(labels, values))
    return result


def top(op: str, k: Scalar, vector: Vector, grouping: Grouping, steps: int) -> Vector:
    """topk / bottomk: the k largest (smallest) per group and step, labels kept."""
    keep: list[list[float | None]] = [[None] * steps for _ in vector]
    index = {id(s): n for n, s in enumerate(vector)}
    for _, members in _groups(vector, grouping).values():
        for i in range(steps):
            count = int(k[i]) if present(k[i]) else 0
            if count < 1:
                continue
            found = [s for s in members if present(s.values[i])]
            found.sort(key=lambda s: s.values[i] or 0.0, reverse=op == "topk")
            for s in found[:count]:
                keep[index[id(s)]][i] = s.values[i]
    result = [Series(s.labels, values) for s, values in zip(vector, keep, strict=True)]
    result = [s for s in result if any(present(v) for v in s.values)]
    if steps == 1:
        result.sort(key=lambda s: s.values[0] or 0.0, reverse=op == "topk")
    return result


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' bucketQuantile over (upper bound, cumulative count) pairs."""
    if math.isnan(q):
        return NAN
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return NAN
    merged: list[list[float]] = []
    for bound, count in buckets:  # coalesce equal bounds
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    for i in range(1, len(merged)):  # ensure monotonic counts
        merged[i][1] = max(merged[i][1], merged[i - 1][1])
    if len(merged) < 2:
        return NAN
    observations = merged[-1][1]
    if observations == 0:
        return NAN
    rank = q * observations
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[b][0], merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def _bound(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def histogram_quantile(q: Scalar, vector: Vector, steps: int) -> Vector:
    """The q-quantile per label set (without `le` and the name) from `_bucket` series."""
    groups: dict[
        tuple[tuple[str, str], ...], tuple[dict[str, str], list[tuple[float, Series]]]
    ] = {}
    for series in vector:
        bound = _bound(series.labels.get("le", ""))
        if bound is None:
            continue
        labels = {k: v for k, v in series.labels.items() if k not in ("le", NAME)}
        groups.setdefault(_key(labels), (labels, []))[1].append((bound, series))
    result = []
    for labels, members in groups.values():
        values: list[float | None] = []
        for i in range(steps):
            buckets = [(b, v) for b, s in members if (v := s.values[i]) is not None]
            values.append(bucket_quantile(q[i], buckets) if buckets else None)
        if any(present(v) for v in values):
            result.append(Series(labels, values))
    return result


# -- binary operators ------------------------------------------------------------------

COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
SET_OPERATORS = frozenset({"and", "or", "unless"})


def _divide(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return NAN
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _modulo(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:
        return NAN


def _power(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return math.inf
    except ValueError:
        return NAN


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
    "%": _modulo,
    "^": _power,
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def element(op: str, a: float, b: float) -> tuple[float, bool]:
    """(value, keep) of `a op b` for one pair of samples (vectorElemBinop)."""
    if op in _ARITHMETIC:
        return _ARITHMETIC[op](a, b), True
    return a, _COMPARE[op](a, b)


def scalar_binary(op: str, lhs: Scalar, rhs: Scalar) -> Scalar:
    """scalar op scalar (comparisons need `bool`, which the parser enforces)."""
    if op in _COMPARE:
        return [float(_COMPARE[op](a, b)) for a, b in zip(lhs, rhs, strict=True)]
    return [_ARITHMETIC[op](a, b) for a, b in zip(lhs, rhs, strict=True)]


def vector_scalar(
    op: str, vector: Vector, scalar: Scalar, *, swap: bool, return_bool: bool
) -> Vector:
    """vector op scalar, or scalar op vector when `swap`; comparisons keep the vector's value."""
    result = []
    drop_name = op in _ARITHMETIC or return_bool
    for series in vector:
        values: list[float | None] = []
        for v, s in zip(series.values, scalar, strict=True):
            if v is None:
                values.append(None)
                continue
            a, b = (s, v) if swap else (v, s)
            value, keep = element(op, a, b)
            if op in _COMPARE and swap:
                value = v
            if return_bool:
                value, keep = float(keep), True
            values.append(value if keep else None)
        if any(present(x) for x in values):
            labels = without_name(series.labels) if drop_name else series.labels
            result.append(Series(labels, values))
    return result


@dataclass(frozen=True, slots=True)
class Matching:
    """`on (labels)` (on=True) or `ignoring (labels)`; neither is `ignoring ()`."""

    labels: tuple[str, ...] = ()
    on: bool = False

    def signature(self, labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        if self.on:
            return tuple(sorted((k, labels[k]) for k in self.labels if k in labels))
        drop = {*self.labels, NAME}
        return tuple(sorted((k, v) for k, v in labels.items() if k not in drop))

    def result_labels(self, labels: dict[str, str], drop_name: bool) -> dict[str, str]:
        if self.on:
            kept = {k: labels[k] for k in self.labels if k in labels}
            if not drop_name and NAME in labels and NAME in self.labels:
                kept[NAME] = labels[NAME]
            return kept
        drop = set(self.labels) | ({NAME} if drop_name else set())
        return {k: v for k, v in labels.items() if k not in drop}


def _unique(
    side: Vector, matching: Matching, i: int, which: str
) -> dict[tuple[tuple[str, str], ...], Series]:
    found: dict[tuple[tuple[str, str], ...], Series] = {}
    for series in side:
        if not present(series.values[i]):
            continue
        sig = matching.signature(series.labels)
        if sig in found:
            raise BadData(
                "found duplicate series for the match group "
                f"{dict(sig)} on the {which} hand-side of the operation: "
                "many-to-many matching not allowed: matching labels must be unique on one side"
            )
        found[sig] = series
    return found


def vector_vector(
    op: str, lhs: Vector, rhs: Vector, matching: Matching, *, return_bool: bool, steps: int
) -> Vector:
    """One-to-one vector matching (VectorBinop)."""
    drop_name = op in _ARITHMETIC or return_bool
    out: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[float | None]]] = {}
    for i in range(steps):
        right = _unique(rhs, matching, i, "right")
        _unique(lhs, matching, i, "left")
        for series in lhs:
            a = series.values[i]
            if a is None:
                continue
            other = right.get(matching.signature(series.labels))
            if other is None:
                continue
            value, keep = element(op, a, other.values[i] or 0.0)
            if return_bool:
                value, keep = float(keep), True
            if not keep:
                continue
            labels = matching.result_labels(series.labels, drop_name)
            out.setdefault(_key(labels), (labels, [None] * steps))[1][i] = value
    return [Series(labels, values) for labels, values in out.values()]


def set_operation(op: str, lhs: Vector, rhs: Vector, matching: Matching, steps: int) -> Vector:
    """and, or, unless (many-to-many), per step."""

    def signatures(side: Vector, i: int) -> set[tuple[tuple[str, str], ...]]:
        return {matching.signature(s.labels) for s in side if present(s.values[i])}

    left = [list(s.values) for s in lhs]
    right = [list(s.values) for s in rhs] if op == "or" else []
    for i in range(steps):
        rsigs, lsigs = signatures(rhs, i), signatures(lhs, i)
        for n, series in enumerate(lhs):
            inside = matching.signature(series.labels) in rsigs
            if (op == "and" and not inside) or (op == "unless" and inside):
                left[n][i] = None
        for n, series in enumerate(rhs if op == "or" else []):
            if matching.signature(series.labels) in lsigs:
                right[n][i] = None
    result = [Series(s.labels, v) for s, v in zip(lhs, left, strict=True)]
    result += [Series(s.labels, v) for s, v in zip(rhs, right, strict=False)]
    return [s for s in result if any(present(v) for v in s.values)]


def negate(vector: Vector) -> Vector:
    return [
        Series(without_name(s.labels), [None if v is None else -v for v in s.values])
        for s in vector
    ]


def check_unique_labels(vector: Sequence[Series]) -> None:
    """Prometheus refuses a result with two series of the same labels (after dropping names)."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    for series in vector:
        key = _key(series.labels)
        if key in seen:
            raise BadData("vector cannot contain metrics with the same labelset")
        seen.add(key)
