"""Pure rule evaluation: anomaly and threshold rules, dedupe, cooldown, resolve, budgets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schema.alerts import AlertKind, AlertMetric
from schema.windows import AnomalyRecord, Metric, Scope
from streams.notify.budget import budget_alerts, month_bounds
from streams.notify.evaluate import RuleEvaluator
from tests.alerts.helpers import W, baseline_then, rule, window

BASE = ["0.05"] * 5


def run(values: list[str], *rules_: object, history: int = 30, min_history: int = 5) -> list:
    evaluator = RuleEvaluator(history, min_history)
    rules = list(rules_) or [rule()]
    return [a for w in baseline_then(values) for a in evaluator.observe(w, rules)]  # type: ignore[arg-type]


def test_a_5x_cost_spike_fires_the_default_rule_once_with_its_context() -> None:
    (alert,) = run([*BASE, "0.25"])
    assert alert.kind is AlertKind.FIRING
    assert alert.metric is AlertMetric.COST
    assert (alert.value, alert.average, alert.factor, alert.history) == (
        Decimal("0.25"), Decimal("0.05"), 3.0, 5,
    )  # fmt: skip
    assert alert.window_end_ns - alert.window_start_ns == W


@pytest.mark.parametrize("spike", ["0.10", "0.15"])
def test_a_2x_or_exactly_3x_rise_does_not_fire_at_3x(spike: str) -> None:
    assert run([*BASE, spike]) == []


def test_a_rule_with_factor_2_fires_on_a_2_5x_rise() -> None:
    (alert,) = run([*BASE, "0.125"], rule("r2", factor=2.0))
    assert alert.rule_id == "r2" and alert.factor == 2.0


def test_no_alert_before_min_history_or_below_the_baseline() -> None:
    assert run(["0.05", "0.05", "0.5"]) == []
    assert run(["0.001"] * 5 + ["0.5"]) == []  # average $0.001 < $0.01 baseline
    assert len(run(["0.001"] * 5 + ["0.5"], rule(min_baseline="0.0005"))) == 1


def test_threshold_rule_fires_above_and_resolves_at_or_below() -> None:
    alerts = run(
        ["0.5", "1.5", "2", "1.0", "0.2"], rule("t", comparison="threshold", threshold="1")
    )
    assert [(a.kind, a.value) for a in alerts] == [
        (AlertKind.FIRING, Decimal("1.5")),
        (AlertKind.RESOLVED, Decimal("1.0")),
    ]
    assert alerts[0].threshold == Decimal(1) and alerts[0].average is None


def test_resolved_once_when_the_metric_returns_under_the_limit() -> None:
    alerts = run([*BASE, "0.25", "0.30", "0.05", "0.05"])
    assert [a.kind for a in alerts] == [AlertKind.FIRING, AlertKind.RESOLVED]
    assert len({a.alert_id for a in alerts}) == 2


def test_cooldown_suppresses_a_new_firing_soon_after_the_last() -> None:
    values = [*BASE, "0.5", "0.05", "0.05", "5"]
    kinds = [a.kind for a in run(values, rule(cooldown_s=60))]
    assert kinds == [AlertKind.FIRING, AlertKind.RESOLVED]
    kinds = [a.kind for a in run(values, rule(cooldown_s=0))]
    assert kinds == [AlertKind.FIRING, AlertKind.RESOLVED, AlertKind.FIRING]


def test_the_same_window_twice_is_judged_once_and_ids_are_stable() -> None:
    evaluator = RuleEvaluator()
    windows = baseline_then([*BASE, "0.25"])
    first = [a for w in windows for a in evaluator.observe(w, [rule()])]
    again = [a for w in windows for a in evaluator.observe(w, [rule()])]
    assert len(first) == 1 and again == []
    replayed = RuleEvaluator()
    assert [a for w in windows for a in replayed.observe(w, [rule()])] == first


def test_an_anomaly_record_fires_the_same_alert_as_its_window_and_only_once() -> None:
    spike = window(5, cost="0.25")
    record = AnomalyRecord(
        "acme", Scope.TENANT, "", Metric.COST_USD, spike.window_start_ns, spike.window_end_ns,
        Decimal("0.25"), Decimal("0.05"), 3.0, 5,
    )  # fmt: skip
    from_windows = run([*BASE, "0.25"])
    evaluator = RuleEvaluator()
    for w in baseline_then(BASE):
        evaluator.observe(w, [rule()])
    (alert,) = evaluator.observe_anomaly(record, [rule()])
    assert alert.alert_id == from_windows[0].alert_id
    assert evaluator.observe_anomaly(record, [rule()]) == []
    assert evaluator.observe(spike, [rule()]) == []  # the window itself: judged already


def test_rules_apply_only_to_their_tenant_scope_and_model() -> None:
    evaluator = RuleEvaluator()
    model_rule = rule("m", scope="model", key="gpt-4o")
    other = [window(i, scope=Scope.MODEL, key="claude", cost=c) for i, c in enumerate([*BASE, "1"])]
    mine = [window(i, scope=Scope.MODEL, key="gpt-4o", cost=c) for i, c in enumerate([*BASE, "1"])]
    globex = [window(i, tenant="globex", cost=c) for i, c in enumerate([*BASE, "1"])]
    rules = [model_rule, rule()]
    assert [a for w in other + globex for a in evaluator.observe(w, rules)] == []
    (alert,) = [a for w in mine for a in evaluator.observe(w, rules)]
    assert (alert.scope.value, alert.key, alert.rule_id) == ("model", "gpt-4o", "m")


def test_a_service_rule_judges_that_service_s_windows_only() -> None:
    evaluator = RuleEvaluator()
    rules = [rule("s", scope="service", key="checkout")]
    other = [
        window(i, scope=Scope.SERVICE, key="search", cost=c) for i, c in enumerate([*BASE, "1"])
    ]
    model = [
        window(i, scope=Scope.MODEL, key="checkout", cost=c) for i, c in enumerate([*BASE, "1"])
    ]
    mine = [
        window(i, scope=Scope.SERVICE, key="checkout", cost=c) for i, c in enumerate([*BASE, "1"])
    ]
    assert [a for w in other + model for a in evaluator.observe(w, rules)] == []
    (alert,) = [a for w in mine for a in evaluator.observe(w, rules)]
    assert (alert.scope.value, alert.key, alert.rule_id) == ("service", "checkout", "s")


def test_error_rate_needs_enough_requests_and_skips_empty_windows() -> None:
    evaluator = RuleEvaluator(min_history=3)
    rate = rule("e", metric="error_rate", comparison="threshold", threshold="0.5")
    few = window(0, requests=5, errors=5)
    many = window(1, requests=40, errors=30)
    assert evaluator.observe(few, [rate]) == []
    (alert,) = evaluator.observe(many, [rate])
    assert alert.value == Decimal("0.75")


def test_tokens_and_latency_are_judged_in_their_units() -> None:
    evaluator = RuleEvaluator(min_history=3)
    tokens = rule("tk", metric="tokens", comparison="threshold", threshold="5000")
    latency = rule("lat", metric="latency_p95", comparison="threshold", threshold="2000")
    alerts = evaluator.observe(window(0, tokens=6000, p95_ms=2500, requests=30), [tokens, latency])
    assert {(a.rule_id, a.value) for a in alerts} == {
        ("tk", Decimal(6000)), ("lat", Decimal(2500)),
    }  # fmt: skip


def test_disabled_rules_do_not_fire() -> None:
    assert run([*BASE, "1"], rule(enabled=False)) == []


def test_budget_levels_one_alert_each_highest_first() -> None:
    now = month_bounds(0)[0] + 10 * W  # 1970-01-01
    assert budget_alerts("acme", Decimal("49.99"), Decimal(100), now) == []
    assert [a.budget_percent for a in budget_alerts("acme", Decimal(50), Decimal(100), now)] == [50]
    reached = budget_alerts("acme", Decimal(120), Decimal(100), now)
    assert [a.budget_percent for a in reached] == [100, 80, 50]
    assert reached[0].threshold == Decimal(100)
    again = budget_alerts("acme", Decimal(130), Decimal(100), now + W)
    assert [a.alert_id for a in again] == [a.alert_id for a in reached]  # same month, same ids
    next_month = budget_alerts("acme", Decimal(130), Decimal(100), month_bounds(now)[1])
    assert {a.alert_id for a in next_month}.isdisjoint(a.alert_id for a in reached)


def test_month_bounds_cover_december() -> None:
    start, end = month_bounds(1_733_000_000 * W)  # 2024-11-30 -> November
    assert (end - start) // W == 30 * 86400
    start, end = month_bounds(1_734_000_000 * W)  # December 2024
    assert (end - start) // W == 31 * 86400
