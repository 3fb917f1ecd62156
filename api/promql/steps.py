"""PromQL's per-step functions over sampled counters, for every series at once (pure).

A series is known by its cumulative value after each minute of a window (`C`, minute
`k0 + i` ending at index i; everything before `k0` folded into index 0) and `fe`, the end
of its first minute (it exists from then on). The grid samples of a step are read from C
at the minute a sample time falls into (`minute_index`). Only C at the indexes the steps
need (`Plan.positions`) is computed, plus per series the value at its first grid sample
(`first_value`: the increment of its first minute, as that sample comes less than a minute
after the minute ends); the formulas below are Prometheus' `extrapolatedRate` (rate,
increase), `instantValue` (irate) and a plain lookup (instant selectors), applied to a
(series x steps) array with numpy: the same IEEE operations, in the same order, as
Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Function = Literal["value", "rate", "increase", "irate"]
Floats = npt.NDArray[np.float64]


def minute_index(x: Floats, k0: int, n: int) -> npt.NDArray[np.int64]:
    """0-based indexes into C of the values at times x (minutes ending at or before x)."""
    return np.clip(np.floor(x / 60).astype(np.int64) - 1 - k0, 0, n - 1)


@dataclass(frozen=True, slots=True)
class Plan:
    """Which values of C the steps read: `positions` (sorted, 0-based) and per step the
    column in that list of the last sample (`last`), the sample before it (`prev`, irate)
    and the first sample in the range when the series is older than the range (`first`)."""

    positions: list[int]
    last: list[int]
    prev: list[int]
    first: list[int]


def plan(steps: list[float], k0: int, n: int, interval: float, range_s: float) -> Plan:
    """The C values `steps` need, independent of any series."""
    s = interval
    u = np.asarray(steps, dtype=np.float64)
    lasts = np.floor(u / s) * s
    wanted = [
        minute_index(lasts, k0, n),
        minute_index(lasts - s, k0, n),
        minute_index(np.ceil((u - range_s) / s) * s, k0, n),
    ]
    positions = np.unique(np.concatenate(wanted))
    last, prev, first = (np.searchsorted(positions, found).tolist() for found in wanted)
    return Plan(positions.tolist(), last, prev, first)


def values(
    fn: Function,
    steps: list[float],
    p: Plan,
    interval: float,
    range_s: float,
    sampled: Floats,
    fe: Floats,
    first_value: Floats,
) -> Floats:
    """(series x steps) values of `fn`; NaN where a series has no value.

    `sampled` is (series x positions) of C, `fe` and `first_value` one per series.
    """
    s = interval
    u = np.asarray(steps, dtype=np.float64)[None, :]
    fe2 = fe[:, None]
    last_t = np.floor(u / s) * s
    v_last = sampled[:, p.last]
    with np.errstate(divide="ignore", invalid="ignore"):
        if fn == "value":
            return np.where(last_t >= fe2, v_last, np.nan)
        if fn == "irate":
            lo = np.maximum(u - range_s, fe2)
            prev_t = last_t - s
            v_prev = sampled[:, p.prev]
            rate = np.where(v_last >= v_prev, v_last - v_prev, v_last) / s
            return np.where((last_t < lo) | (prev_t < lo), np.nan, rate)
        newer = fe2 > u - range_s  # the series starts inside the range: its first sample
        first_t = np.ceil(np.maximum(u - range_s, fe2) / s) * s
        v_first = np.where(newer, first_value[:, None], sampled[:, p.first])
        count = np.round((last_t - first_t) / s) + 1
        delta = v_last - v_first
        span = last_t - first_t
        average = span / np.maximum(count - 1, 1)
        to_start = first_t - (u - range_s)
        to_zero = np.where(
            (delta > 0) & (v_first >= 0), np.minimum(to_start, span * v_first / delta), to_start
        )
        to_end = u - last_t
        threshold = average * 1.1
        result = (
            delta
            * (
                span
                + np.where(to_zero < threshold, to_zero, average / 2)
                + np.where(to_end < threshold, to_end, average / 2)
            )
            / span
        )
        if fn == "rate":
            result = result / range_s
        return np.where(count < 2, np.nan, result)
