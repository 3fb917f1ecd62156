"""How the rollups are presented as Prometheus series (shared by /metrics and PromQL)."""

from __future__ import annotations

from dataclasses import dataclass

LOOKBACK_S = 300.0  # Prometheus' default lookback delta
MAX_POINTS = 11_000  # Prometheus' limit of points per series in query_range


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`top_models`: models per tenant with their own series (the rest are `model="other"`).

    `sample_interval_s`: the spacing of the virtual samples PromQL evaluates, which should
    equal Prometheus' scrape interval of `/metrics` for both to agree (default 15 s).
    """

    top_models: int = 10
    sample_interval_s: float = 15.0

    def __post_init__(self) -> None:
        if self.top_models < 1:
            raise ValueError(f"top_models must be at least 1, got {self.top_models}")
        if not 0 < self.sample_interval_s <= 60:
            raise ValueError(f"sample_interval_s must be in (0, 60], got {self.sample_interval_s}")
