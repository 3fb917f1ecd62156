"""Pure rule evaluation: closed windows (and anomaly records) in, alerts out.

The default 3x detector emits only its own anomalies; rules with another factor, fixed
thresholds and "resolved" notifications need every closed window. So the evaluator keeps,
per (tenant, scope, key), the metric values of the last `history` windows (gaps count as
zeros: the aggregator emits zero windows for idle keys) and judges each new window against
each rule of its tenant:

    anomaly:    value > factor x average   (exact decimals; the average over at least
                                            `min_history` windows and >= the rule's baseline)
    threshold:  value > threshold

`error_rate` and `latency_p95` are judged only in windows with `min_rate_requests`
requests, and their averages leave out windows without requests (as in streams/anomaly.py).

Per (tenant, rule, scope, key) a small state machine turns verdicts into notifications:
- breach while not notified -> `firing`, unless a firing notification was sent less than
  `cooldown_s` (window time) before this window started;
- no breach after a firing notification -> `resolved` (once);
- a window at or before the last one judged for that rule and key is ignored, so the same
  window seen twice (redelivery, or once as a window and once as an anomaly record) is
  judged once.

Deterministic in the windows it is shown (no clock): replaying the same windows yields the
same alerts with the same ids, which the notification ledger then lets through once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

from schema.alerts import (
    RATIO_METRICS,
    Alert,
    AlertKind,
    AlertMetric,
    AlertRule,
    AlertScope,
    Comparison,
    alert_id,
)
from schema.windows import AnomalyRecord, Metric, WindowRecord

METRICS: tuple[AlertMetric, ...] = tuple(AlertMetric)
_INDEX = {metric: i for i, metric in enumerate(METRICS)}
_REQUESTS = _INDEX[AlertMetric.REQUESTS]
_DECIMALS = Context(prec=28)
_EXACT = Context(prec=100)
_ZERO = Decimal(0)
_NS_PER_MS = Decimal(1_000_000)

# anomaly records carry the detector's metric names; tokens are judged on windows only
FROM_DETECTOR: dict[Metric, AlertMetric] = {
    Metric.COST_USD: AlertMetric.COST,
    Metric.REQUESTS: AlertMetric.REQUESTS,
    Metric.ERRORS: AlertMetric.ERRORS,
    Metric.ERROR_RATE: AlertMetric.ERROR_RATE,
    Metric.LATENCY_P95_NS: AlertMetric.LATENCY_P95,
}

Row = tuple[Decimal | None, ...]


def window_values(window: WindowRecord) -> Row:
    """The window's value of every AlertMetric; None for ratios of a window without requests."""
    empty = window.requests == 0
    values: dict[AlertMetric, Decimal | None] = {
        AlertMetric.COST: window.cost_usd,
        AlertMetric.TOKENS: Decimal(window.input_tokens + window.output_tokens),
        AlertMetric.REQUESTS: Decimal(window.requests),
        AlertMetric.ERRORS: Decimal(window.errors),
        AlertMetric.ERROR_RATE: None
        if empty
        else _DECIMALS.divide(Decimal(window.errors), Decimal(window.requests)),
        AlertMetric.LATENCY_P95: None
        if empty
        else _DECIMALS.divide(Decimal(window.latency_p95_ns), _NS_PER_MS),
    }
    return tuple(values[metric] for metric in METRICS)


def detector_value(record: AnomalyRecord, value: Decimal) -> Decimal:
    """An anomaly record's value in the alert metric's unit (latency: ns -> ms)."""
    if record.metric is Metric.LATENCY_P95_NS:
        return _DECIMALS.divide(value, _NS_PER_MS)
    return value


@dataclass(frozen=True, slots=True)
class Verdict:
    breach: bool
    value: Decimal
    average: Decimal | None = None
    history: int = 0


def judge(
    rule: AlertRule,
    value: Decimal | None,
    samples: Sequence[Decimal],
    requests: int,
    min_history: int,
    min_rate_requests: int,
) -> Verdict | None:
    """The rule's verdict on one window's `value` given the earlier windows' `samples`;
    None when the window cannot be judged (no value, too few requests or windows)."""
    spec = rule.spec
    if value is None:
        return None
    if spec.metric in RATIO_METRICS and requests < min_rate_requests:
        return None
    if spec.comparison is Comparison.THRESHOLD:
        assert spec.threshold is not None  # RuleSpec guarantees it
        return Verdict(value > spec.threshold, value)
    count = len(samples)
    if count < min_history:
        return None
    with localcontext(_EXACT):
        total = sum(samples, _ZERO)
        average = _DECIMALS.divide(total, Decimal(count))
        if total <= 0 or total < spec.baseline() * count or value <= 0:
            return Verdict(False, value, average, count)
        breach = value * count > Decimal(repr(spec.factor)) * total
    return Verdict(breach, value, average, count)


def applies(rule: AlertRule, tenant: str, scope: AlertScope, key: str) -> bool:
    spec = rule.spec
    if not spec.enabled or rule.tenant != tenant or spec.scope is not scope:
        return False
    return spec.key is None or spec.key == key


@dataclass(slots=True)
class _RuleState:
    last_start: int
    open: bool = False  # a firing notification was sent and not resolved yet
    fired_end: int | None = None  # window end of the last firing notification


class _History:
    __slots__ = ("last_start", "rows")

    def __init__(self, last_start: int, size: int) -> None:
        self.last_start = last_start
        self.rows: deque[Row] = deque(maxlen=size)


StateKey = tuple[str, str, AlertScope, str]  # tenant, rule id, scope, key


class RuleEvaluator:
    """Rolling history per (tenant, scope, key) and notification state per rule."""

    def __init__(self, history: int = 30, min_history: int = 5, min_rate_requests: int = 20):
        if not 1 <= min_history <= history:
            raise ValueError("min_history must be between 1 and history")
        self.history = history
        self.min_history = min_history
        self.min_rate_requests = min_rate_requests
        self._histories: dict[tuple[str, AlertScope, str], _History] = {}
        self._states: dict[StateKey, _RuleState] = {}
        self.suppressed_cooldown = 0

    def observe(self, window: WindowRecord, rules: Iterable[AlertRule]) -> list[Alert]:
        """Judge a closed window with every rule that applies, then add it to the history."""
        scope = AlertScope(window.scope.value)
        hkey = (window.tenant, scope, window.key)
        history = self._histories.get(hkey)
        if history is None:
            if window.requests == 0:
                return []  # silence of a key without history teaches nothing
            history = self._histories[hkey] = _History(window.window_start_ns, self.history)
        elif window.window_start_ns <= history.last_start:
            return []  # replayed window
        values = window_values(window)
        alerts: list[Alert] = []
        for rule in rules:
            if not applies(rule, window.tenant, scope, window.key):
                continue
            index = _INDEX[rule.spec.metric]
            samples = [s for row in history.rows if (s := row[index]) is not None]
            verdict = judge(
                rule, values[index], samples, window.requests, self.min_history,
                self.min_rate_requests,
            )  # fmt: skip
            alerts.extend(self._step(rule, scope, window.key, window, verdict))
        history.rows.append(values)
        history.last_start = window.window_start_ns
        if len(history.rows) == self.history and not any(row[_REQUESTS] for row in history.rows):
            del self._histories[hkey]  # retired, as the aggregator retires the key
            for state_key in [k for k in self._states if (k[0], k[2], k[3]) == hkey]:
                del self._states[state_key]
        return alerts

    def observe_anomaly(self, record: AnomalyRecord, rules: Iterable[AlertRule]) -> list[Alert]:
        """An anomaly the detector found: it can only fire anomaly rules (never resolve),
        judged on the record's own value and average."""
        metric = FROM_DETECTOR.get(record.metric)
        if metric is None:
            return []
        scope = AlertScope(record.scope.value)
        value = detector_value(record, record.value)
        average = detector_value(record, record.average)
        alerts: list[Alert] = []
        for rule in rules:
            spec = rule.spec
            if spec.comparison is not Comparison.ANOMALY or spec.metric is not metric:
                continue
            if not applies(rule, record.tenant, scope, record.key):
                continue
            if record.history < self.min_history or average < spec.baseline() or average <= 0:
                continue
            with localcontext(_EXACT):
                breach = value > Decimal(repr(spec.factor)) * average
            if breach:
                verdict = Verdict(True, value, average, record.history)
                alerts.extend(self._step(rule, scope, record.key, record, verdict))
        return alerts

    def _step(
        self,
        rule: AlertRule,
        scope: AlertScope,
        key: str,
        window: WindowRecord | AnomalyRecord,
        verdict: Verdict | None,
    ) -> list[Alert]:
        skey = (rule.tenant, rule.rule_id, scope, key)
        state = self._states.get(skey)
        if state is not None and window.window_start_ns <= state.last_start:
            return []  # this rule already judged this window
        if state is None:
            state = self._states[skey] = _RuleState(window.window_start_ns)
        state.last_start = window.window_start_ns
        if verdict is None:
            return []
        if verdict.breach:
            if state.open:
                return []
            cooldown_ns = rule.spec.cooldown_s * 1_000_000_000
            fired = state.fired_end
            if fired is not None and window.window_start_ns < fired + cooldown_ns:
                self.suppressed_cooldown += 1
                return []
            state.open, state.fired_end = True, window.window_end_ns
            return [_alert(AlertKind.FIRING, rule, scope, key, window, verdict)]
        if state.open:
            state.open = False
            return [_alert(AlertKind.RESOLVED, rule, scope, key, window, verdict)]
        return []


def _alert(
    kind: AlertKind,
    rule: AlertRule,
    scope: AlertScope,
    key: str,
    window: WindowRecord | AnomalyRecord,
    verdict: Verdict,
) -> Alert:
    spec = rule.spec
    anomaly = spec.comparison is Comparison.ANOMALY
    return Alert(
        alert_id=alert_id(
            rule.tenant, rule.rule_id, scope.value, key, window.window_start_ns, kind.value
        ),
        kind=kind,
        tenant=rule.tenant,
        rule_id=rule.rule_id,
        rule_name=spec.name,
        metric=spec.metric,
        scope=scope,
        key=key,
        window_start_ns=window.window_start_ns,
        window_end_ns=window.window_end_ns,
        value=verdict.value,
        average=verdict.average,
        factor=spec.factor if anomaly else None,
        history=verdict.history,
        threshold=None if anomaly else spec.threshold,
        destinations=tuple(spec.destinations),
    )
