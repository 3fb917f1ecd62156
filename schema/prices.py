"""The unit-price contract: what an invoice shows as "the price applied" to a model.

The API may not import the pricing engine (`streams/`), so it asks a `PriceLookup` given to
`create_app`; `llmtel` wires in the genai-prices implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from schema.models import ModelPriceOverride


@dataclass(frozen=True, slots=True)
class UnitPrices:
    """USD per million tokens; None where the model has no separate price for that kind.

    Unset kinds are charged as their parent kind: cache reads as input, reasoning as output.
    `tiered`: larger requests pay other prices (the base tier is shown); `time_of_day`: the
    price also changes within a day (e.g. off-peak; the price at 00:00 UTC is shown).
    """

    input_mtok: Decimal | None
    output_mtok: Decimal | None
    cache_read_mtok: Decimal | None = None
    reasoning_mtok: Decimal | None = None
    tiered: bool = False
    time_of_day: bool = False


class PriceLookup(Protocol):
    """Published unit prices of a model on a day (UTC); None if nobody knows them."""

    def unit_prices(self, provider: str, model: str, day: date) -> UnitPrices | None: ...


def override_unit_prices(override: ModelPriceOverride) -> UnitPrices:
    """A tenant's own prices in the same shape as published ones."""
    return UnitPrices(
        input_mtok=override.input_mtok,
        output_mtok=override.output_mtok,
        cache_read_mtok=override.cache_read_mtok,
        reasoning_mtok=override.reasoning_mtok,
    )
