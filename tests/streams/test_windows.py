"""Tumbling windows from span batches: boundaries, lateness, zero windows, metrics, state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
import pytest

from schema.spans import SPAN_COLUMNS, SpanBatch
from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams.anomaly import AnomalyDetector
from streams.windows import (
    AddResult,
    WindowAggregator,
    WindowConfig,
    WindowStateError,
    p95_rank,
    partial_windows,
)

S = 1_000_000_000
MS = 1_000_000
CONFIG = WindowConfig(window_s=1, lateness_s=0.5, history=10, min_history=5)

_DEFAULTS: dict[str, Any] = {
    "Timestamp": 0,
    "TraceId": "0" * 32,
    "SpanId": "0" * 16,
    "ParentSpanId": "",
    "TraceState": "",
    "SpanName": "chat",
    "SpanKind": "Client",
    "ServiceName": "svc",
    "ResourceAttributes": {},
    "ScopeName": "",
    "ScopeVersion": "",
    "SpanAttributes": {},
    "Duration": 0,
    "StatusCode": "Unset",
    "StatusMessage": "",
    "Events.Timestamp": [],
    "Events.Name": [],
    "Events.Attributes": [],
    "Links.TraceId": [],
    "Links.SpanId": [],
    "Links.TraceState": [],
    "Links.Attributes": [],
    "TenantId": "t1",
    "IsLlm": False,
    "LlmProvider": "",
    "LlmOperation": "",
    "LlmRequestModel": "",
    "LlmResponseModel": "",
    "LlmInputTokens": 0,
    "LlmOutputTokens": 0,
    "LlmCacheReadTokens": 0,
    "LlmReasoningTokens": 0,
    "LlmCostUsd": None,
    "LlmCostSource": "",
    "LlmTimeToFirstTokenMs": None,
}
assert set(_DEFAULTS) == set(SPAN_COLUMNS)


def span(
    end_ns: int,
    tenant: str = "t1",
    model: str = "m1",
    *,
    duration_ns: int = 100 * MS,
    cost: str | None = "0.01",
    input_tokens: int = 100,
    output_tokens: int = 10,
    error: bool = False,
    llm: bool = True,
    request_model: str | None = None,
    service: str = "svc",
) -> dict[str, Any]:
    """An LLM span ending at `end_ns` (model is the response model unless request_model)."""
    return {
        "Timestamp": end_ns - duration_ns,
        "Duration": duration_ns,
        "TenantId": tenant,
        "IsLlm": llm,
        "LlmResponseModel": "" if request_model is not None else model,
        "LlmRequestModel": request_model if request_model is not None else model,
        "LlmInputTokens": input_tokens,
        "LlmOutputTokens": output_tokens,
        "LlmCostUsd": None if cost is None else Decimal(cost),
        "StatusCode": "Error" if error else "Ok",
        "ServiceName": service,
    }


def batch(*spans: dict[str, Any]) -> SpanBatch:
    out = SpanBatch()
    for overrides in spans:
        row = {**_DEFAULTS, **overrides}
        for name, column in zip(SPAN_COLUMNS, out.columns, strict=True):
            column.append(row[name])
    return out


def keyed(records: Sequence[WindowRecord]) -> dict[tuple[int, str, Scope, str], WindowRecord]:
    """Records by (window index, tenant, scope, key) for a 1 s window."""
    out = {(r.window_start_ns // S, r.tenant, r.scope, r.key): r for r in records}
    assert len(out) == len(records), "one record per window and key"
    return out


def test_span_ending_exactly_on_a_boundary_belongs_to_the_next_window() -> None:
    agg = WindowAggregator(WindowConfig(window_s=1, lateness_s=0))
    # event time is the span's end: started in window 0, ended in window 1
    agg.add(batch(span(S - 1), span(S), span(S + 100, duration_ns=S // 2 + 200)))
    records = keyed(agg.advance(2 * S))
    assert records[(0, "t1", Scope.TENANT, "")].requests == 1
    assert records[(1, "t1", Scope.TENANT, "")].requests == 2
    window = records[(1, "t1", Scope.TENANT, "")]
    assert (window.window_start_ns, window.window_end_ns) == (S, 2 * S)


def test_only_llm_spans_count() -> None:
    agg = WindowAggregator(CONFIG)
    result = agg.add(batch(span(10, llm=False), span(20), span(30, llm=False)))
    assert result == AddResult(counted=1, late=0)
    records = keyed(agg.advance(2 * S))
    assert records[(0, "t1", Scope.TENANT, "")].requests == 1


def test_a_window_closes_when_the_watermark_reaches_its_end_plus_lateness() -> None:
    agg = WindowAggregator(CONFIG)  # 1 s windows, 0.5 s lateness
    agg.add(batch(span(200 * MS)))
    assert agg.advance(S + S // 2 - 1) == []
    closed = agg.advance(S + S // 2)
    assert [(r.scope, r.key, r.window_end_ns) for r in closed] == [
        (Scope.TENANT, "", S),
        (Scope.MODEL, "m1", S),
        (Scope.SERVICE, "svc", S),
    ]


def test_spans_within_lateness_count_and_spans_after_close_are_late() -> None:
    agg = WindowAggregator(CONFIG)
    agg.add(batch(span(500 * MS)))
    assert agg.advance(S + 400 * MS) == []  # window 0 is over but within its lateness
    assert agg.add(batch(span(900 * MS))) == AddResult(counted=1, late=0)
    closed = keyed(agg.advance(S + S // 2))
    assert closed[(0, "t1", Scope.TENANT, "")].requests == 2
    # window 0 has closed: a straggler is late, and no later window counts it
    assert agg.add(batch(span(990 * MS), span(S + 10))) == AddResult(counted=1, late=1)
    later = keyed(agg.advance(10 * S))
    assert later[(1, "t1", Scope.TENANT, "")].requests == 1
    assert sum(r.requests for r in later.values() if r.scope is Scope.TENANT) == 1


def test_late_is_judged_per_window_not_per_span_time() -> None:
    agg = WindowAggregator(WindowConfig(window_s=1, lateness_s=0))
    agg.advance(3 * S)  # windows before 3 s are closed, even for tenants never seen
    result = agg.add(batch(span(3 * S - 1, tenant="new"), span(3 * S, tenant="new")))
    assert result == AddResult(counted=1, late=1)


def test_the_watermark_is_the_driver_clock_and_never_moves_back() -> None:
    agg = WindowAggregator(WindowConfig(window_s=1, lateness_s=0))
    # a span from the future does not close anything...
    agg.add(batch(span(100 * S + 1)))
    assert agg.advance(2 * S) == []
    assert agg.watermark_ns == 2 * S
    # ...and an older clock reading does not reopen anything
    assert agg.advance(S) == []
    assert agg.watermark_ns == 2 * S
    assert agg.add(batch(span(S + 1))) == AddResult(counted=0, late=1)
    closed = agg.advance(101 * S)
    assert [r.window_start_ns for r in closed] == [100 * S] * 3  # tenant, model, service


def test_idle_keys_emit_zero_windows_until_their_history_is_all_zeros() -> None:
    agg = WindowAggregator(WindowConfig(window_s=1, lateness_s=0, history=3, min_history=1))
    agg.add(batch(span(S // 2, model="a"), span(S + S // 2, model="b")))
    records = keyed(agg.advance(20 * S))
    model_a = sorted(w for (w, _, scope, key) in records if (scope, key) == (Scope.MODEL, "a"))
    model_b = sorted(w for (w, _, scope, key) in records if (scope, key) == (Scope.MODEL, "b"))
    tenant = sorted(w for (w, _, scope, _) in records if scope is Scope.TENANT)
    assert model_a == [0, 1, 2, 3]  # traffic in 0, then 3 zero windows
    assert model_b == [1, 2, 3, 4]
    assert tenant == [0, 1, 2, 3, 4]
    zero = records[(2, "t1", Scope.MODEL, "a")]
    assert (zero.requests, zero.cost_usd, zero.input_tokens, zero.latency_p95_ns) == (
        0,
        Decimal(0),
        0,
        0,
    )
    assert agg.tenants() == []  # retired: no state left
    assert agg.advance(40 * S) == []


def test_long_silences_are_skipped_not_walked() -> None:
    agg = WindowAggregator(WindowConfig(window_s=1, lateness_s=0, history=3, min_history=1))
    agg.add(batch(span(S // 2), span(10**9 * S + 1)))
    records = agg.advance(10**9 * S + 5 * S)
    starts = sorted({r.window_start_ns // S for r in records})
    assert starts == [0, 1, 2, 3, 10**9, 10**9 + 1, 10**9 + 2, 10**9 + 3]


def test_window_metrics_are_exact() -> None:
    agg = WindowAggregator(CONFIG)
    agg.add(
        batch(
            span(100, cost="0.000000000001", input_tokens=1000, output_tokens=7),
            span(200, cost="0.1", input_tokens=5, output_tokens=3, error=True),
            span(300, cost=None, input_tokens=1, output_tokens=1, model="m2"),
            span(400, cost="0.2", request_model="m2"),  # no response model: request model
        )
    )
    records = keyed(agg.advance(2 * S))
    tenant = records[(0, "t1", Scope.TENANT, "")]
    assert tenant.cost_usd == Decimal("0.300000000001")
    assert (tenant.input_tokens, tenant.output_tokens) == (1106, 21)
    assert (tenant.requests, tenant.errors, tenant.unpriced) == (4, 1, 1)
    assert tenant.error_rate == 0.25
    m1, m2 = records[(0, "t1", Scope.MODEL, "m1")], records[(0, "t1", Scope.MODEL, "m2")]
    assert (m1.requests, m1.errors, m1.cost_usd) == (2, 1, Decimal("0.100000000001"))
    assert (m2.requests, m2.unpriced, m2.cost_usd, m2.error_rate) == (2, 1, Decimal("0.2"), 0.0)


def test_tenants_are_kept_apart_and_records_are_ordered() -> None:
    agg = WindowAggregator(CONFIG)
    agg.add(
        batch(
            span(S + 1, tenant="b"),
            span(1, tenant="b", model="z", service="api"),
            span(2, tenant="a"),
        )
    )
    closed = agg.advance(2 * S + S // 2)
    order = [(r.window_start_ns // S, r.tenant, r.scope.value, r.key) for r in closed]
    assert order == [
        (0, "a", "tenant", ""),
        (0, "a", "model", "m1"),
        (0, "a", "service", "svc"),
        (0, "b", "tenant", ""),
        (0, "b", "model", "z"),
        (0, "b", "service", "api"),
        (1, "a", "tenant", ""),
        (1, "a", "model", "m1"),
        (1, "a", "service", "svc"),
        (1, "b", "tenant", ""),
        (1, "b", "model", "m1"),
        (1, "b", "model", "z"),
        (1, "b", "service", "api"),
        (1, "b", "service", "svc"),
    ]


@pytest.mark.parametrize(
    ("count", "expected_ms"), [(1, 1), (2, 2), (19, 19), (20, 19), (21, 20), (100, 95)]
)
def test_p95_is_the_exact_nearest_rank_while_windows_are_small(
    count: int, expected_ms: int
) -> None:
    agg = WindowAggregator(CONFIG)
    durations = [(i + 1) * MS for i in range(count)]
    agg.add(batch(*(span(S // 2, duration_ns=d) for d in reversed(durations))))
    records = keyed(agg.advance(2 * S))
    assert records[(0, "t1", Scope.TENANT, "")].latency_p95_ns == expected_ms * MS
    assert p95_rank(count) == expected_ms


def test_p95_of_a_large_window_comes_from_the_sketch_within_one_percent() -> None:
    config = WindowConfig(window_s=1, lateness_s=0, p95_exact_max=50)
    durations = [(i * 7919) % 2000 * MS + 1 for i in range(2000)]  # 1 ns .. ~2 s, shuffled

    def run() -> int:
        agg = WindowAggregator(config)
        for offset in range(0, len(durations), 300):
            chunk = durations[offset : offset + 300]
            agg.add(batch(*(span(S // 2, duration_ns=d) for d in chunk)))
        return keyed(agg.advance(S))[(0, "t1", Scope.TENANT, "")].latency_p95_ns

    exact = sorted(durations)[p95_rank(len(durations)) - 1]
    p95 = run()
    assert abs(p95 - exact) <= exact * 0.01
    assert run() == p95  # deterministic


def state_roundtrip(state: dict[str, Any] | None) -> Any:
    """What a changelog gives back: the state as JSON bytes, decoded."""
    return orjson.loads(orjson.dumps(state))


def test_aggregator_state_is_plain_json_and_restores_exactly() -> None:
    config = WindowConfig(window_s=1, lateness_s=0.5, p95_exact_max=3)
    agg = WindowAggregator(config)
    agg.add(batch(*(span(100 + i, duration_ns=(i + 1) * MS) for i in range(5))))  # sketch
    agg.add(batch(span(S + 1, model="m2", cost=None), span(2, tenant="other")))
    agg.advance(S + S // 2)
    state = state_roundtrip(agg.state())
    restored = WindowAggregator.from_state(state, config)
    assert restored.state() == agg.state()
    assert restored.advance(5 * S) == agg.advance(5 * S)


def test_invalid_state_is_refused() -> None:
    agg = WindowAggregator(CONFIG)
    with pytest.raises(WindowStateError, match="version"):
        agg.load_tenant_state("t1", {"v": 99})
    with pytest.raises(WindowStateError, match="t1"):
        agg.load_tenant_state("t1", {"v": 1, "closed_until": None, "open": [{"start": 0}]})


# -- the pipeline: aggregator -> detector, as the drivers will run it --------------------------

Step = tuple[str, Any]  # ("add", SpanBatch) | ("advance", now_ns)
Output = list[Any]


def run_pipeline(
    steps: Sequence[Step],
    config: WindowConfig,
    between: Callable[[WindowAggregator, AnomalyDetector], tuple[WindowAggregator, AnomalyDetector]]
    | None = None,
) -> Output:
    agg, detector = WindowAggregator(config), AnomalyDetector(config)
    out: Output = []
    for kind, arg in steps:
        if kind == "add":
            out.append(agg.add(arg))
        else:
            windows = agg.advance(arg)
            out.append((windows, detector.observe_all(windows)))
        if between is not None:
            agg, detector = between(agg, detector)
    return out


def anomalies_of(output: Output) -> list[AnomalyRecord]:
    return [a for item in output if isinstance(item, tuple) for a in item[1]]


def steady(tenant: str, window: int, *, per_span_cost: str = "0.01", spans: int = 10) -> SpanBatch:
    return batch(
        *(
            span(window * S + i * MS, tenant, cost=per_span_cost, input_tokens=100)
            for i in range(spans)
        )
    )


def test_a_five_fold_cost_spike_of_one_tenant_is_one_anomaly_per_scope() -> None:
    config = WindowConfig(window_s=1, lateness_s=0, history=10, min_history=5)
    steps: list[Step] = []
    for window in range(12):
        cost = "0.05" if window == 9 else "0.01"  # same requests, tokens, latency
        steps += [("add", steady("a", window, per_span_cost=cost)), ("add", steady("b", window))]
        steps.append(("advance", (window + 1) * S))
    anomalies = anomalies_of(run_pipeline(steps, config))
    assert [(a.tenant, a.scope, a.key, a.metric) for a in anomalies] == [
        ("a", Scope.TENANT, "", Metric.COST_USD),
        ("a", Scope.MODEL, "m1", Metric.COST_USD),
        ("a", Scope.SERVICE, "svc", Metric.COST_USD),
    ]
    spike = anomalies[0]
    assert (spike.window_start_ns, spike.window_end_ns) == (9 * S, 10 * S)
    assert (spike.value, spike.average, spike.history) == (Decimal("0.50"), Decimal("0.1"), 9)


def test_empty_windows_count_as_zeros_in_the_average() -> None:
    config = WindowConfig(window_s=1, lateness_s=0, history=10, min_history=5)
    steps: list[Step] = []
    for window in range(5):
        steps += [("add", steady("a", window, per_span_cost="0")), ("advance", (window + 1) * S)]
    steps.append(("advance", 10 * S))  # windows 5..9 pass without traffic
    steps += [("add", steady("a", 10, spans=25, per_span_cost="0")), ("advance", 11 * S)]
    output = run_pipeline(steps, config)
    closed = [w for item in output if isinstance(item, tuple) for w in item[0]]
    assert sum(1 for w in closed if w.requests == 0) == 15  # 5 windows x 3 scopes
    # 25 requests against [10]*5 + [0]*5: average 5, so 25 > 15. Without the zeros, 25 < 30.
    anomalies = anomalies_of(output)
    assert [(a.scope, a.metric, a.value, a.average, a.history) for a in anomalies] == [
        (Scope.TENANT, Metric.REQUESTS, Decimal(25), Decimal(5), 10),
        (Scope.MODEL, Metric.REQUESTS, Decimal(25), Decimal(5), 10),
        (Scope.SERVICE, Metric.REQUESTS, Decimal(25), Decimal(5), 10),
    ]


def mixed_scenario() -> list[Step]:
    """Several tenants and models, stragglers, silences, retirements, spikes, big windows."""
    steps: list[Step] = []
    for window in range(40):
        spans = []
        if window % 7 != 3:
            spans += [
                span(window * S + i * 10 * MS, "a", cost="0.01", error=i < 2) for i in range(10)
            ]
        if window < 12 or window > 30:
            spans += [
                span(window * S + i * MS, "b", model=f"m{i % 3}", duration_ns=(i + 1) * MS)
                for i in range(8 + (40 if window == 35 else 0))
            ]
        if window == 20:
            spans += [span(window * S + i, "a", cost="1.5", error=True) for i in range(30)]
        steps.append(("add", batch(*spans)))
        if window % 2:
            steps.append(("advance", window * S + S // 2))
        steps.append(("add", batch(span(window * S - S // 3, "a"), span(window * S + 5, "c"))))
        steps.append(("advance", (window + 1) * S + S // 5))
    steps.append(("advance", 60 * S))
    return steps


MIXED = WindowConfig(window_s=1, lateness_s=0.4, history=6, min_history=3, p95_exact_max=20)


def test_mixed_scenario_finds_anomalies() -> None:
    output = run_pipeline(mixed_scenario(), MIXED)
    anomalies = anomalies_of(output)
    assert {(a.tenant, a.metric) for a in anomalies} >= {
        ("a", Metric.COST_USD),
        ("a", Metric.ERRORS),
        ("b", Metric.REQUESTS),
    }
    results = [r for r in output if isinstance(r, AddResult)]
    assert sum(r.late for r in results) > 10
    assert sum(r.counted for r in results) > 500


def test_restoring_whole_state_mid_stream_gives_the_uninterrupted_results() -> None:
    def restore(
        agg: WindowAggregator, detector: AnomalyDetector
    ) -> tuple[WindowAggregator, AnomalyDetector]:
        return (
            WindowAggregator.from_state(state_roundtrip(agg.state()), MIXED),
            AnomalyDetector.from_state(state_roundtrip(detector.state()), MIXED),
        )

    expected = run_pipeline(mixed_scenario(), MIXED)
    assert run_pipeline(mixed_scenario(), MIXED, restore) == expected


def test_restoring_per_tenant_tables_mid_stream_gives_the_uninterrupted_results() -> None:
    """What faust does: one changelogged table row per tenant, written for dirty tenants only;
    after a restore the driver advances to its clock before adding spans."""
    windows_table: dict[str, Any] = {}
    detector_table: dict[str, Any] = {}

    def restore(
        agg: WindowAggregator, detector: AnomalyDetector
    ) -> tuple[WindowAggregator, AnomalyDetector]:
        for table, part in ((windows_table, agg), (detector_table, detector)):
            for tenant in part.pop_dirty():
                saved = state_roundtrip(part.tenant_state(tenant))
                if saved is None:
                    table.pop(tenant, None)
                else:
                    table[tenant] = saved
            # tenants not reported dirty really are unchanged
            assert {t: state_roundtrip(part.tenant_state(t)) for t in part.tenants()} == table
        new_agg, new_detector = WindowAggregator(MIXED), AnomalyDetector(MIXED)
        for tenant, saved in windows_table.items():
            new_agg.load_tenant_state(tenant, saved)
        for tenant, saved in detector_table.items():
            new_detector.load_tenant_state(tenant, saved)
        if agg.watermark_ns is not None:
            assert new_agg.advance(agg.watermark_ns) == []
        return new_agg, new_detector

    expected = run_pipeline(mixed_scenario(), MIXED)
    assert run_pipeline(mixed_scenario(), MIXED, restore) == expected


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown metric 'latency'"):
        WindowConfig(min_baseline={"latency": Decimal(1)})
    with pytest.raises(ValueError, match="min_history"):
        WindowConfig(history=3, min_history=4)
    with pytest.raises(ValueError, match="window_s"):
        WindowConfig(window_s=0)
    config = WindowConfig(min_baseline={"requests": Decimal(2)})
    assert config.baseline(Metric.REQUESTS) == Decimal(2)
    assert config.baseline(Metric.COST_USD) == Decimal("0.01")
    assert (config.window_ns, config.lateness_ns) == (60 * S, 5 * S)


@pytest.mark.parametrize("chunk", [1, 7, 40, 400])
def test_batches_summed_apart_give_the_windows_of_one_batch(chunk: int) -> None:
    """Worker processes send `partial_windows` per batch: how spans are split must not matter
    (exact p95 below `p95_exact_max`, the sketch above it, sums, errors, late spans)."""
    config = WindowConfig(window_s=1, lateness_s=0, p95_exact_max=50)
    spans = [
        span(
            (i * 37) % 3 * S + S // 3 + i,
            tenant=f"t{i % 3}",
            model=f"m{i % 4}",
            duration_ns=((i * 7919) % 900 + 1) * MS,
            cost=None if i % 11 == 0 else f"0.00{i % 9}",
            error=i % 13 == 0,
            llm=i % 17 != 0,
        )
        for i in range(400)
    ]
    whole = WindowAggregator(config)
    whole.advance(S)  # window 0 is closed: its spans are late in both runs
    expected = whole.add(batch(*spans))
    parts = WindowAggregator(config)
    parts.advance(S)
    results = [
        parts.add_partials(partial_windows(batch(*spans[i : i + chunk]), config.window_ns))
        for i in range(0, len(spans), chunk)
    ]
    assert sum(r.counted for r in results) == expected.counted > 0
    assert sum(r.late for r in results) == expected.late > 0
    assert parts.advance(10 * S) == whole.advance(10 * S)
