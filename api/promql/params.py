"""Prometheus HTTP API parameters: times, durations, steps (as Prometheus parses them)."""

from __future__ import annotations

import math
import re
from datetime import datetime

import promql_parser as pp

from api.promql.config import MAX_POINTS
from api.promql.errors import BadData

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _round_ms(seconds: float) -> float:
    """Prometheus' parseTime of a number, step by step: the fraction rounded to ms (halves
    away from zero), to whole ns, then the ms the query runs at (timestamp.FromTime)."""
    fraction, whole = math.modf(seconds)
    scaled = abs(fraction) * 1000
    ms = math.floor(scaled)
    if scaled - ms >= 0.5:
        ms += 1
    ns = int(whole) * 1_000_000_000 + int(math.copysign(ms, fraction) / 1000 * 1e9)
    return (ns // 1_000_000) / 1000


def parse_time(value: str, name: str) -> float:
    """Unix seconds (float; the fraction rounded to ms, as Prometheus) or RFC 3339
    (truncated to ms, as Prometheus) -> unix seconds."""
    text = value.strip()
    if _NUMBER.match(text):
        seconds = float(text)
        if not math.isfinite(seconds):
            raise BadData(
                f'invalid parameter "{name}": cannot parse "{value}" to a valid timestamp'
            )
        return _round_ms(seconds)
    try:
        seconds = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadData(
            f'invalid parameter "{name}": cannot parse "{value}" to a valid timestamp'
        ) from None
    if not math.isfinite(seconds):
        raise BadData(f'invalid parameter "{name}": cannot parse "{value}" to a valid timestamp')
    return math.floor(seconds * 1000) / 1000


def parse_duration(value: str, name: str) -> float:
    """Seconds (float) or a Prometheus duration (`1m30s`) -> seconds."""
    text = value.strip()
    if _NUMBER.match(text):
        seconds = float(text)
        if not math.isfinite(seconds):
            raise BadData(f'invalid parameter "{name}": cannot parse "{value}" to a valid duration')
        return seconds
    try:
        return pp.parse_duration(text).total_seconds()
    except Exception:
        raise BadData(
            f'invalid parameter "{name}": cannot parse "{value}" to a valid duration'
        ) from None


def range_steps(start: float, end: float, step: float) -> list[float]:
    """start, start + step, ... <= end, in whole milliseconds; no alignment (as Prometheus)."""
    if end < start:
        raise BadData('invalid parameter "end": end timestamp must not be before start time')
    if step <= 0:
        raise BadData(
            'invalid parameter "step": zero or negative query resolution step widths are '
            "not accepted. Try a positive integer"
        )
    if (end - start) / step > MAX_POINTS:
        raise BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)"
        )
    start_ms, end_ms, step_ms = round(start * 1000), round(end * 1000), max(round(step * 1000), 1)
    return [t / 1000 for t in range(start_ms, end_ms + 1, step_ms)]
