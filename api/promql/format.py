"""Result JSON exactly as Prometheus writes it: string sample values, unix-second stamps."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from api.promql.rollup_sql import Series


def format_value(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest round-trip digits, no exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)  # the shortest digits that round-trip, as Go's
    if "e" not in text:  # Python writes them without an exponent from 1e-4 to 1e16
        text = text.removesuffix(".0")
        return "0" if text == "-0" else text
    text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def format_time(seconds: float) -> int | float:
    """Millisecond precision; a whole second is written as an integer, as Prometheus does."""
    ms = round(seconds * 1000)
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _point(t: float, value: float | None) -> list[Any]:
    assert value is not None
    return [format_time(t), format_value(value)]


def instant(is_scalar: bool, value: list[Any], t: float) -> dict[str, Any]:
    """`data` of /query."""
    if is_scalar:
        return {"resultType": "scalar", "result": _point(t, value[0])}
    return {
        "resultType": "vector",
        "result": [
            {"metric": s.labels, "value": _point(t, s.values[0])}
            for s in value
            if s.values[0] is not None
        ],
    }


def matrix(is_scalar: bool, value: list[Any], steps: list[float]) -> dict[str, Any]:
    """`data` of /query_range: a matrix (a scalar expression becomes one series `{}`)."""
    series: list[Series] = [Series({}, value)] if is_scalar else value
    times = [format_time(t) for t in steps]
    result = []
    for s in sorted(series, key=lambda s: sorted(s.labels.items())):
        points = [
            [t, format_value(v)] for t, v in zip(times, s.values, strict=True) if v is not None
        ]
        if points:
            result.append({"metric": s.labels, "values": points})
    return {"resultType": "matrix", "result": result}
