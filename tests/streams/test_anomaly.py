"""The anomaly rule on closed windows: value > factor x rolling average, and its guards."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams.anomaly import AnomalyDetector
from streams.windows import WindowConfig, WindowStateError

S = 1_000_000_000
CONFIG = WindowConfig(window_s=1, history=10, min_history=5, min_rate_requests=20)


def window(
    index: int,
    *,
    requests: int = 10,
    errors: int = 0,
    cost: str = "0",
    input_tokens: int = 0,
    output_tokens: int = 0,
    p95_s: float = 0.0,
    tenant: str = "t1",
    scope: Scope = Scope.TENANT,
    key: str = "",
) -> WindowRecord:
    return WindowRecord(
        tenant=tenant,
        scope=scope,
        key=key,
        window_start_ns=index * S,
        window_end_ns=(index + 1) * S,
        requests=requests,
        errors=errors,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=Decimal(cost),
        unpriced=0,
        latency_p95_ns=round(p95_s * S) if requests else 0,
    )


def feed(detector: AnomalyDetector, windows: list[WindowRecord]) -> list[AnomalyRecord]:
    """Observe all windows; return the anomalies of the last one (history must stay quiet)."""
    *history, last = windows
    assert detector.observe_all(history) == []
    return detector.observe(last)


def metrics(anomalies: list[AnomalyRecord]) -> list[Metric]:
    return [a.metric for a in anomalies]


def test_no_history_no_anomaly() -> None:
    detector = AnomalyDetector(CONFIG)
    assert detector.observe(window(0, requests=10_000, cost="1000")) == []


def test_history_shorter_than_min_history_no_anomaly() -> None:
    short = [window(i) for i in range(4)] + [window(4, requests=100)]
    assert feed(AnomalyDetector(CONFIG), short) == []
    enough = [window(i) for i in range(5)] + [window(5, requests=100)]
    assert metrics(feed(AnomalyDetector(CONFIG), enough)) == [Metric.REQUESTS]


def test_below_minimum_baseline_no_anomaly() -> None:
    # "3 requests after 1" pages nobody: the requests baseline (5) is not reached
    quiet = [window(i, requests=1) for i in range(8)] + [window(8, requests=3)]
    assert feed(AnomalyDetector(CONFIG), quiet) == []
    huge = [window(i, requests=4) for i in range(8)] + [window(8, requests=1000)]
    assert feed(AnomalyDetector(CONFIG), huge) == []
    at_baseline = [window(i, requests=5) for i in range(8)] + [window(8, requests=16)]
    assert metrics(feed(AnomalyDetector(CONFIG), at_baseline)) == [Metric.REQUESTS]


def test_zero_baseline_never_fires_even_with_no_minimum() -> None:
    config = WindowConfig(history=10, min_history=5, min_baseline={"errors": Decimal(0)})
    windows = [window(i, requests=10) for i in range(8)] + [window(8, requests=10, errors=9)]
    assert feed(AnomalyDetector(config), windows) == []


def test_exactly_factor_times_average_is_not_an_anomaly() -> None:
    windows = [window(i, requests=10) for i in range(5)]
    assert feed(AnomalyDetector(CONFIG), [*windows, window(5, requests=30)]) == []
    anomalies = feed(AnomalyDetector(CONFIG), [*windows, window(5, requests=31)])
    assert len(anomalies) == 1
    anomaly = anomalies[0]
    assert (anomaly.metric, anomaly.value, anomaly.average) == (
        Metric.REQUESTS,
        Decimal(31),
        Decimal(10),
    )
    assert (anomaly.factor, anomaly.history) == (3.0, 5)
    assert (anomaly.tenant, anomaly.scope, anomaly.key) == ("t1", Scope.TENANT, "")
    assert (anomaly.window_start_ns, anomaly.window_end_ns) == (5 * S, 6 * S)


def test_the_comparison_is_exact_for_money() -> None:
    costs = ["0.1", "0.1", "0.1", "0.1", "0.11"]  # average 0.102; 3x = 0.306
    windows = [window(i, cost=c) for i, c in enumerate(costs)]
    assert feed(AnomalyDetector(CONFIG), [*windows, window(5, cost="0.306")]) == []
    anomalies = feed(AnomalyDetector(CONFIG), [*windows, window(5, cost="0.306000000001")])
    assert [(a.metric, a.value, a.average) for a in anomalies] == [
        (Metric.COST_USD, Decimal("0.306000000001"), Decimal("0.102"))
    ]


def test_factor_and_history_length_are_settings() -> None:
    config = WindowConfig(history=5, min_history=5, factor=2.5)
    old = [window(i, requests=1000) for i in range(3)]
    recent = [window(i, requests=10) for i in range(3, 8)]
    assert feed(AnomalyDetector(config), [*old, *recent, window(8, requests=25)]) == []
    anomalies = feed(AnomalyDetector(config), [*old, *recent, window(8, requests=26)])
    assert [(a.metric, a.factor, a.history) for a in anomalies] == [(Metric.REQUESTS, 2.5, 5)]


def test_zero_windows_pull_the_average_down() -> None:
    windows = [window(i, requests=10) for i in range(5)]
    windows += [window(i, requests=0) for i in range(5, 10)]
    anomalies = feed(AnomalyDetector(CONFIG), [*windows, window(10, requests=16)])
    assert [(a.metric, a.average, a.history) for a in anomalies] == [
        (Metric.REQUESTS, Decimal(5), 10)
    ]


def test_tokens_and_errors() -> None:
    windows = [window(i, input_tokens=2000, output_tokens=500, errors=1) for i in range(6)]
    spike = window(6, input_tokens=6001, output_tokens=5000, errors=4)
    # output tokens' average (500) is below the 1000 baseline; errors 4 > 3 x 1
    anomalies = feed(AnomalyDetector(CONFIG), [*windows, spike])
    assert metrics(anomalies) == [Metric.INPUT_TOKENS, Metric.ERRORS]


def test_error_rate_uses_the_same_rule_and_needs_enough_requests() -> None:
    history = [window(i, requests=100, errors=2) for i in range(6)]  # 2 %
    # fewer requests, same errors: only the rate spikes (8 % > 6 %)
    assert metrics(feed(AnomalyDetector(CONFIG), [*history, window(6, requests=25, errors=2)])) == [
        Metric.ERROR_RATE
    ]
    anomaly = feed(AnomalyDetector(CONFIG), [*history, window(6, requests=25, errors=2)])[0]
    assert (anomaly.value, anomaly.average) == (Decimal("0.08"), Decimal("0.02"))
    # exactly 3x is not enough
    assert feed(AnomalyDetector(CONFIG), [*history, window(6, requests=50, errors=3)]) == []
    # too few requests in the window to judge a rate
    assert feed(AnomalyDetector(CONFIG), [*history, window(6, requests=19, errors=2)]) == []


def test_error_rate_baseline() -> None:
    history = [window(i, requests=1000, errors=5) for i in range(6)]  # 0.5 % < 1 %
    assert feed(AnomalyDetector(CONFIG), [*history, window(6, requests=100, errors=5)]) == []


def test_latency_p95_uses_the_same_rule() -> None:
    history = [window(i, requests=30, p95_s=1.0) for i in range(6)]
    assert feed(AnomalyDetector(CONFIG), [*history, window(6, requests=30, p95_s=3.0)]) == []
    anomalies = feed(AnomalyDetector(CONFIG), [*history, window(6, requests=30, p95_s=3.000001)])
    assert [(a.metric, a.value, a.average) for a in anomalies] == [
        (Metric.LATENCY_P95_NS, Decimal(3_000_001_000), Decimal(S))
    ]
    too_few = window(6, requests=10, p95_s=30.0)
    assert feed(AnomalyDetector(CONFIG), [*history, too_few]) == []


def test_latency_baseline() -> None:
    history = [window(i, requests=30, p95_s=0.05) for i in range(6)]  # 50 ms < 100 ms
    assert feed(AnomalyDetector(CONFIG), [*history, window(6, requests=30, p95_s=1.0)]) == []


def test_ratio_metrics_leave_empty_windows_out_of_their_average() -> None:
    windows = []
    for i in range(10):  # busy, empty, busy, empty...
        windows.append(window(i, requests=30 if i % 2 == 0 else 0, p95_s=1.0))
    # were empty windows zeros, the average would be 0.5 s and 2 s would fire
    assert feed(AnomalyDetector(CONFIG), [*windows, window(10, requests=30, p95_s=2.0)]) == []
    anomalies = feed(AnomalyDetector(CONFIG), [*windows, window(10, requests=30, p95_s=3.5)])
    assert [(a.metric, a.average, a.history) for a in anomalies] == [
        (Metric.LATENCY_P95_NS, Decimal(S), 5)
    ]


def test_keys_are_judged_separately() -> None:
    detector = AnomalyDetector(CONFIG)
    for i in range(6):
        detector.observe(window(i, requests=10, tenant="a"))
        detector.observe(window(i, requests=10, tenant="b"))
        detector.observe(window(i, requests=10, tenant="a", scope=Scope.MODEL, key="m1"))
    assert detector.observe(window(6, requests=10, tenant="a")) == []
    assert detector.observe(window(6, requests=10, tenant="b")) == []
    spike = window(6, requests=50, tenant="a", scope=Scope.MODEL, key="m1")
    assert [(a.tenant, a.scope, a.key) for a in detector.observe(spike)] == [
        ("a", Scope.MODEL, "m1")
    ]
    # a model never seen is a new key without history
    assert detector.observe(window(6, requests=50, tenant="a", scope=Scope.MODEL, key="m2")) == []


def test_replayed_windows_are_ignored() -> None:
    detector = AnomalyDetector(CONFIG)
    detector.observe_all([window(i) for i in range(6)])
    before = detector.state()
    assert detector.observe(window(5, requests=1000)) == []
    assert detector.observe(window(2, requests=1000)) == []
    assert detector.state() == before


def test_keys_idle_for_a_whole_history_are_forgotten() -> None:
    detector = AnomalyDetector(WindowConfig(history=3, min_history=1))
    detector.observe(window(0, tenant="a"))
    detector.observe_all([window(i, requests=0, tenant="a") for i in (1, 2)])
    assert detector.tenants() == ["a"]
    detector.observe(window(3, requests=0, tenant="a"))
    assert detector.tenants() == []
    # zero windows of a key without history create nothing
    detector.observe(window(4, requests=0, tenant="b"))
    assert detector.tenants() == []
    assert detector.pop_dirty() == {"a"}


def test_detector_state_restores_mid_stream_exactly() -> None:
    windows = [
        window(i, requests=10 + (i % 3), errors=i % 2, cost=f"0.0{i % 7 + 1}", p95_s=0.25 + i / 7)
        for i in range(12)
    ]
    windows += [window(12, requests=40, errors=20, cost="0.5", p95_s=9.0)]
    straight = AnomalyDetector(CONFIG)
    expected = [straight.observe(w) for w in windows]
    assert expected[-1]  # the spike fires
    restored_run = []
    detector = AnomalyDetector(CONFIG)
    for w in windows:
        restored_run.append(detector.observe(w))
        saved = orjson.loads(orjson.dumps(detector.state()))
        detector = AnomalyDetector.from_state(saved, CONFIG)
    assert restored_run == expected
    assert detector.state() == straight.state()


def test_invalid_detector_state_is_refused() -> None:
    detector = AnomalyDetector(CONFIG)
    with pytest.raises(WindowStateError, match="version"):
        detector.load_tenant_state("t1", {"v": 2})
    with pytest.raises(WindowStateError, match="other metrics"):
        detector.load_tenant_state("t1", {"v": 1, "metrics": ["requests"], "keys": []})
    good = AnomalyDetector(CONFIG)
    good.observe(window(0))
    state = good.tenant_state("t1")
    assert state is not None
    state["keys"][0]["rows"][0] = ["1"]
    with pytest.raises(WindowStateError, match="wrong number"):
        detector.load_tenant_state("t1", state)
