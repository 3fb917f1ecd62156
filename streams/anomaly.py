"""The anomaly rule: a closed window's metric above `factor` x its rolling average.

For every (tenant, scope, key) the detector keeps the metrics of the last `history` closed
windows it was shown (the `WindowAggregator` emits all-zero windows for idle keys, so gaps
count as zeros). When a window is observed, each metric is judged against the windows
before it, then the window joins the history. A metric is anomalous when

    value > factor x average            (strictly greater; exact decimal arithmetic)

and all of these hold, so that "3 requests after 1" pages nobody:
- the average is over at least `min_history` windows;
- the average is above zero and at least `config.baseline(metric)`;
- for the ratio-like metrics (`error_rate`, `latency_p95_ns`), the window has at least
  `min_rate_requests` requests.

`error_rate` and `latency_p95_ns` follow the same x factor rule as the sums, with one
difference: a window without requests has no error rate and no latency, so it is left out
of their averages instead of counting as zero (otherwise a key that is busy one window in
four would show a x4 "latency spike" every time it is busy). Their `history` in an
`AnomalyRecord` is the number of windows with requests that were averaged.

Replayed windows (start not after the last one seen for that key) are ignored, so a driver
that re-delivers windows after a restart does not distort the averages. A key is forgotten
once its last `history` windows were all empty, exactly when the aggregator retires it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import Any

from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams import metrics
from streams.windows import STATE_VERSION, WindowConfig, WindowStateError, check_state_version

_log = logging.getLogger(__name__)

METRICS: tuple[Metric, ...] = tuple(Metric)  # order of the values kept per window
_RATIO_METRICS = frozenset({Metric.ERROR_RATE, Metric.LATENCY_P95_NS})
_REQUESTS = METRICS.index(Metric.REQUESTS)
_DECIMALS = Context(prec=28)  # fixed, not the thread's context: results must not vary
# Sums and products of window values fit in 100 digits, so the comparison is exact.
_EXACT = Context(prec=100)
_ZERO = Decimal(0)

Row = tuple[Decimal | None, ...]  # one window's metric values in METRICS order


def metric_values(window: WindowRecord) -> Row:
    """The window's values in METRICS order; None for ratios of a window without requests."""
    empty = window.requests == 0
    values: dict[Metric, Decimal | None] = {
        Metric.COST_USD: window.cost_usd,
        Metric.INPUT_TOKENS: Decimal(window.input_tokens),
        Metric.OUTPUT_TOKENS: Decimal(window.output_tokens),
        Metric.REQUESTS: Decimal(window.requests),
        Metric.ERRORS: Decimal(window.errors),
        Metric.ERROR_RATE: None
        if empty
        else _DECIMALS.divide(Decimal(window.errors), Decimal(window.requests)),
        Metric.LATENCY_P95_NS: None if empty else Decimal(window.latency_p95_ns),
    }
    return tuple(values[metric] for metric in METRICS)


class _History:
    __slots__ = ("last_start", "rows")

    def __init__(self, last_start: int, rows: Iterable[Row], size: int) -> None:
        self.last_start = last_start
        self.rows: deque[Row] = deque(rows, maxlen=size)


Key = tuple[Scope, str]


class AnomalyDetector:
    """Keeps the last `history` closed windows per key; judges each new one against them."""

    def __init__(self, config: WindowConfig | None = None) -> None:
        self.config = config if config is not None else WindowConfig()
        self._factor = Decimal(repr(self.config.factor))  # the decimal the operator wrote
        self._baselines = tuple(self.config.baseline(metric) for metric in METRICS)
        self._tenants: dict[str, dict[Key, _History]] = {}
        self._dirty: set[str] = set()

    def observe(self, window: WindowRecord) -> list[AnomalyRecord]:
        """Judge a closed window against its key's history, then add it to that history."""
        key = (window.scope, window.key)
        keys = self._tenants.get(window.tenant, {})
        history = keys.get(key)
        if history is None:
            if window.requests == 0:
                return []  # silence of a key without history teaches nothing
            keys = self._tenants.setdefault(window.tenant, keys)
            history = keys[key] = _History(window.window_start_ns, (), self.config.history)
        elif window.window_start_ns <= history.last_start:
            return []  # replayed window
        values = metric_values(window)
        anomalies = self._judge(window, values, history.rows)
        history.rows.append(values)
        history.last_start = window.window_start_ns
        if len(history.rows) == self.config.history and not any(
            row[_REQUESTS] for row in history.rows
        ):
            del keys[key]
            if not keys:
                del self._tenants[window.tenant]
        self._dirty.add(window.tenant)
        return anomalies

    def observe_all(self, windows: Iterable[WindowRecord]) -> list[AnomalyRecord]:
        return [anomaly for window in windows for anomaly in self.observe(window)]

    def _judge(self, window: WindowRecord, values: Row, rows: Iterable[Row]) -> list[AnomalyRecord]:
        config = self.config
        rows = list(rows)
        if len(rows) < config.min_history:
            return []
        anomalies: list[AnomalyRecord] = []
        with localcontext(_EXACT):
            for index, metric in enumerate(METRICS):
                value = values[index]
                if value is None or value <= 0:
                    continue
                if metric in _RATIO_METRICS and window.requests < config.min_rate_requests:
                    continue
                samples = [sample for row in rows if (sample := row[index]) is not None]
                count = len(samples)
                if count < config.min_history:
                    continue
                total = sum(samples, _ZERO)
                if total <= 0 or total < self._baselines[index] * count:
                    continue
                if value * count <= self._factor * total:
                    continue
                anomalies.append(
                    AnomalyRecord(
                        tenant=window.tenant,
                        scope=window.scope,
                        key=window.key,
                        metric=metric,
                        window_start_ns=window.window_start_ns,
                        window_end_ns=window.window_end_ns,
                        value=value,
                        average=_DECIMALS.divide(total, Decimal(count)),
                        factor=config.factor,
                        history=count,
                    )
                )
        return anomalies

    def pop_dirty(self) -> set[str]:
        """Tenants whose state changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def tenant_state(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's histories as plain JSON-able data; None if it has none."""
        keys = self._tenants.get(tenant_id)
        if keys is None:
            return None
        return {
            "v": STATE_VERSION,
            "metrics": [metric.value for metric in METRICS],
            "keys": [
                {
                    "scope": key[0].value,
                    "key": key[1],
                    "last_start": history.last_start,
                    "rows": [
                        [None if value is None else format(value, "f") for value in row]
                        for row in history.rows
                    ],
                }
                for key, history in sorted(keys.items())
            ],
        }

    def load_tenant_state(self, tenant_id: str, state: Mapping[str, Any] | None) -> None:
        """Replace the tenant's histories with ones saved by `tenant_state` (None: drop)."""
        self._dirty.discard(tenant_id)
        if state is None:
            self._tenants.pop(tenant_id, None)
            return
        check_state_version(state)
        if state.get("metrics") != [metric.value for metric in METRICS]:
            raise WindowStateError(f"detector state of tenant {tenant_id!r} has other metrics")
        keys: dict[Key, _History] = {}
        try:
            for saved in state["keys"]:
                rows = [
                    tuple(None if value is None else Decimal(value) for value in row)
                    for row in saved["rows"]
                ]
                if any(len(row) != len(METRICS) for row in rows):
                    raise ValueError("a history row has the wrong number of values")
                key = (Scope(saved["scope"]), str(saved["key"]))
                keys[key] = _History(int(saved["last_start"]), rows, self.config.history)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise WindowStateError(
                f"detector state of tenant {tenant_id!r} is invalid: {exc}"
            ) from exc
        if keys:
            self._tenants[tenant_id] = keys
        else:
            self._tenants.pop(tenant_id, None)

    def drop_tenant(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)
        self._dirty.discard(tenant_id)

    def state(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "tenants": {tenant_id: self.tenant_state(tenant_id) for tenant_id in self.tenants()},
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], config: WindowConfig | None = None
    ) -> AnomalyDetector:
        check_state_version(state)
        detector = cls(config)
        for tenant_id, tenant_state in state.get("tenants", {}).items():
            detector.load_tenant_state(tenant_id, tenant_state)
        return detector


def report(windows: int, anomalies: Sequence[AnomalyRecord]) -> None:
    """Count emitted windows and anomalies and log each anomaly (both drivers call this)."""
    metrics.WINDOWS_EMITTED.inc(windows)
    metrics.ANOMALIES_EMITTED.inc(len(anomalies))
    for anomaly in anomalies:
        _log.warning(
            "anomaly",
            extra={
                "tenant": anomaly.tenant,
                "scope": anomaly.scope.value,
                "key": anomaly.key,
                "metric": anomaly.metric.value,
                "value": str(anomaly.value),
                "average": str(anomaly.average),
                "window_start_ns": anomaly.window_start_ns,
            },
        )
