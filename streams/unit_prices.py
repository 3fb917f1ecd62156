"""genai-prices' published unit prices per model and day: the `PriceLookup` invoices show.

Costs themselves are computed per span by `streams.pricing.Pricer`; this only answers "which
price list applied", resolving the model the same way (provider id mapping, unknown
providers fall back to the model name alone).
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from genai_prices import data_snapshot as _data_snapshot
from genai_prices import types as _gp

from schema.prices import UnitPrices
from streams.pricing import find_model_info

_MAX_CACHED = 4096


def _base(value: Any) -> Decimal | None:
    if isinstance(value, _gp.TieredPrices):
        return Decimal(value.base)
    if isinstance(value, Decimal):
        return value
    return None


def unit_prices_of(info: _gp.ModelInfo, day: date) -> UnitPrices:
    """The prices of `info` in force at 00:00 UTC of `day`."""
    model_price = info.get_prices(datetime.combine(day, time(0), tzinfo=UTC))
    values = {
        key: getattr(model_price, key, None)
        for key in ("input_mtok", "output_mtok", "cache_read_mtok", "output_reasoning_mtok")
    }
    conditional = [] if isinstance(info.prices, _gp.ModelPrice) else info.prices
    return UnitPrices(
        input_mtok=_base(values["input_mtok"]),
        output_mtok=_base(values["output_mtok"]),
        cache_read_mtok=_base(values["cache_read_mtok"]),
        reasoning_mtok=_base(values["output_reasoning_mtok"]),
        tiered=any(isinstance(v, _gp.TieredPrices) for v in values.values()),
        time_of_day=any(isinstance(c.constraint, _gp.TimeOfDateConstraint) for c in conditional),
    )


class GenaiUnitPrices:
    """`schema.prices.PriceLookup` over genai-prices' data; models resolved once and cached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], _gp.ModelInfo | None] = {}

    def unit_prices(self, provider: str, model: str, day: date) -> UnitPrices | None:
        key = (provider, model)
        if key not in self._models:
            found = _resolve(provider, model)
            with self._lock:
                if len(self._models) >= _MAX_CACHED:
                    self._models = {}
                self._models[key] = found
        info = self._models.get(key)
        return None if info is None else unit_prices_of(info, day)


def _resolve(provider: str, model: str) -> _gp.ModelInfo | None:
    info: _gp.ModelInfo | None = find_model_info(_data_snapshot.get_snapshot(), provider, model)
    return info
