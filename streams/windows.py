"""Tumbling usage windows per tenant and per tenant x model, built from columnar span batches.

Pure and deterministic: no clock is read here, time comes in through `advance(now_ns)`, and
nothing talks to Kafka. The faust agents (distributed mode) and the embedded task drive it
and keep its state (`tenant_state` / `load_tenant_state`, plain JSON-able dicts) wherever
they like, e.g. in a faust Table keyed by tenant.

Semantics
- Only LLM spans (`IsLlm`) count. Event time is the span's end, `Timestamp + Duration` (ns).
- Windows are aligned to the epoch: `[k*w, (k+1)*w)`, start inclusive, end exclusive. A span
  ending exactly on a boundary belongs to the window that starts there.
- Each LLM span counts three times: in its tenant's window (scope `tenant`, key ""), in its
  tenant x model window (scope `model`, key = `LlmResponseModel` or else `LlmRequestModel`;
  "" when a span names neither, as in the per-minute rollup) and in its tenant x service
  window (scope `service`, key = `ServiceName`).
- The watermark is a processing-time clock: the largest `now_ns` passed to `advance`. Span
  times never move it, so a client whose clock runs ahead cannot close other tenants'
  windows, and windows close when there is no traffic at all. A window closes once
  `watermark >= window end + lateness`; closing emits its `WindowRecord`. A span for a
  window that has already closed is not counted and is reported as late by `add`. (The
  driver chooses the clock: the wall clock on its timer; while catching up on a backlog it
  may pass the messages' receive time instead, so that replayed spans are not all late.)
- A key (tenant, scope, model) that has had traffic keeps producing all-zero windows while
  it is idle, so that gaps count as zeros in the anomaly rule's average. After
  `config.history` consecutive empty windows its whole history is zeros and it is retired
  (no more zero windows, no state); the `AnomalyDetector` forgets it at the same moment, so a
  key that comes back later starts afresh.
- p95 latency is the nearest-rank p95 (an observed duration: the ceil(0.95 n)-th smallest)
  computed exactly from the kept durations while a window holds at most
  `config.p95_exact_max` spans; beyond that the durations go into a log-bucketed sketch
  (DDSketch-style, 1 % relative accuracy, deterministic, mergeable, at most a few hundred
  buckets for realistic latencies) so that state stays small in changelog topics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from schema.spans import COLUMN_INDEX, SpanBatch
from schema.windows import Metric, Scope, WindowRecord

STATE_VERSION = 1
NS_PER_S = 1_000_000_000

DEFAULT_MIN_BASELINE: Mapping[str, Decimal] = {
    # the rolling average must reach these before `value > factor x average` can fire
    Metric.COST_USD: Decimal("0.01"),
    Metric.INPUT_TOKENS: Decimal(1000),
    Metric.OUTPUT_TOKENS: Decimal(1000),
    Metric.REQUESTS: Decimal(5),
    Metric.ERRORS: Decimal(1),
    Metric.ERROR_RATE: Decimal("0.01"),
    Metric.LATENCY_P95_NS: Decimal(100_000_000),  # 100 ms
}


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """Windowing and anomaly-rule settings (the composition root builds this from settings)."""

    window_s: float = 60
    lateness_s: float = 5
    history: int = 30  # N: closed windows in the rolling average
    factor: float = 3.0  # anomaly when value > factor x average (strictly greater)
    min_history: int = 5  # windows of history needed before any anomaly
    # per metric name; metrics not given keep DEFAULT_MIN_BASELINE
    min_baseline: Mapping[str, Decimal] = field(
        default_factory=lambda: dict(DEFAULT_MIN_BASELINE), hash=False
    )
    # error_rate and latency_p95_ns are judged only in windows with this many requests
    min_rate_requests: int = 20
    p95_exact_max: int = 512  # spans per window kept exactly for p95; a sketch beyond

    def __post_init__(self) -> None:
        if self.window_ns <= 0:
            raise ValueError("window_s must be positive")
        if self.lateness_s < 0:
            raise ValueError("lateness_s must not be negative")
        if self.history < 1:
            raise ValueError("history must be at least 1 window")
        if not 1 <= self.min_history <= self.history:
            raise ValueError("min_history must be between 1 and history")
        if not self.factor > 0:
            raise ValueError("factor must be positive")
        if self.min_rate_requests < 0 or self.p95_exact_max < 0:
            raise ValueError("min_rate_requests and p95_exact_max must not be negative")
        merged: dict[str, Decimal] = dict(DEFAULT_MIN_BASELINE)
        for name, value in self.min_baseline.items():
            try:
                metric = Metric(name)
            except ValueError:
                known = ", ".join(m.value for m in Metric)
                raise ValueError(
                    f"min_baseline: unknown metric {name!r} (one of {known})"
                ) from None
            baseline = Decimal(str(value))
            if not baseline.is_finite() or baseline < 0:
                raise ValueError(f"min_baseline[{name!r}] must be a non-negative number")
            merged[metric] = baseline
        object.__setattr__(self, "min_baseline", merged)

    @property
    def window_ns(self) -> int:
        return round(self.window_s * NS_PER_S)

    @property
    def lateness_ns(self) -> int:
        return round(self.lateness_s * NS_PER_S)

    def baseline(self, metric: Metric) -> Decimal:
        return self.min_baseline[metric]


class WindowStateError(ValueError):
    """Saved window or detector state that this version cannot load."""


@dataclass(frozen=True, slots=True)
class AddResult:
    counted: int  # LLM spans added to open windows
    late: int  # LLM spans for windows already closed: stored elsewhere, not counted here


Key = tuple[Scope, str]
_TENANT_KEY: Key = (Scope.TENANT, "")
_NEVER = -(2**63)  # "nothing closed yet": below any window start

# DDSketch-style buckets: bucket i holds durations in (gamma^(i-1), gamma^i]; 0 ns in -1
_ACCURACY = 0.01
_GAMMA = (1 + _ACCURACY) / (1 - _ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_ZERO_BUCKET = -1


def _bucket(duration_ns: int) -> int:
    if duration_ns <= 0:
        return _ZERO_BUCKET
    return math.ceil(math.log(duration_ns) / _LOG_GAMMA)


def _bucket_value(index: int) -> int:
    if index == _ZERO_BUCKET:
        return 0
    return round(2 * _GAMMA**index / (_GAMMA + 1))


def p95_rank(count: int) -> int:
    """1-based nearest rank of the 95th percentile: ceil(0.95 * count)."""
    return (95 * count + 99) // 100


class _Window:
    """One open window of one key: sums, counts and the latency distribution."""

    __slots__ = (
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cost",
        "unpriced",
        "durations",
        "buckets",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = Decimal(0)
        self.unpriced = 0
        self.durations: list[int] | None = []  # exact while small; None once in `buckets`
        self.buckets: dict[int, int] = {}

    def merge(self, partial: WindowPartial, exact_max: int) -> None:
        self.requests += partial.requests
        self.errors += partial.errors
        self.input_tokens += partial.input_tokens
        self.output_tokens += partial.output_tokens
        self.cost += partial.cost
        self.unpriced += partial.unpriced
        durations = self.durations
        buckets = self.buckets
        if durations is not None:
            durations.extend(partial.durations)
            if len(durations) <= exact_max:
                return
            self.durations = None  # too many to keep exactly: bucket them, from now on
            for duration in durations:
                index = _bucket(duration)
                buckets[index] = buckets.get(index, 0) + 1
            return
        for index, count in partial.buckets.items():
            buckets[index] = buckets.get(index, 0) + count

    def p95(self) -> int:
        if self.durations is not None:
            if not self.durations:
                return 0
            return sorted(self.durations)[p95_rank(len(self.durations)) - 1]
        rank = p95_rank(sum(self.buckets.values()))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return _bucket_value(index)
        return 0  # unreachable: buckets are never empty once used

    def record(self, tenant: str, key: Key, start: int, end: int) -> WindowRecord:
        return WindowRecord(
            tenant=tenant,
            scope=key[0],
            key=key[1],
            window_start_ns=start,
            window_end_ns=end,
            requests=self.requests,
            errors=self.errors,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost,
            unpriced=self.unpriced,
            latency_p95_ns=self.p95(),
        )

    def state(self) -> dict[str, Any]:
        saved: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": format(self.cost, "f"),
            "unpriced": self.unpriced,
        }
        if self.durations is not None:
            saved["durations"] = list(self.durations)
        else:
            saved["buckets"] = [[index, self.buckets[index]] for index in sorted(self.buckets)]
        return saved

    @classmethod
    def from_state(cls, saved: Mapping[str, Any]) -> _Window:
        window = cls()
        window.requests = int(saved["requests"])
        window.errors = int(saved["errors"])
        window.input_tokens = int(saved["input_tokens"])
        window.output_tokens = int(saved["output_tokens"])
        window.cost = Decimal(saved["cost_usd"])
        window.unpriced = int(saved["unpriced"])
        if "durations" in saved:
            window.durations = [int(d) for d in saved["durations"]]
        else:
            window.durations = None
            window.buckets = {int(i): int(c) for i, c in saved["buckets"]}
        return window


def zero_record(tenant: str, key: Key, start: int, end: int) -> WindowRecord:
    """The record of a window in which a known key had no traffic."""
    return WindowRecord(tenant, key[0], key[1], start, end, 0, 0, 0, 0, Decimal(0), 0, 0)


class _Tenant:
    __slots__ = ("closed_until", "open", "known")

    def __init__(self, closed_until: int) -> None:
        self.closed_until = closed_until  # every window starting before this has been emitted
        self.open: dict[int, dict[Key, _Window]] = {}  # window start -> key -> sums
        self.known: dict[Key, int] = {}  # key with history -> empty windows since its last traffic


# The span columns `WindowAggregator.add` reads; IsLlm first (it filters the rows).
INPUT_COLUMNS: tuple[str, ...] = (
    "IsLlm",
    "Timestamp",
    "Duration",
    "TenantId",
    "StatusCode",
    "LlmResponseModel",
    "LlmRequestModel",
    "LlmInputTokens",
    "LlmOutputTokens",
    "LlmCostUsd",
    "ServiceName",
)
(
    _IS_LLM,
    _TIMESTAMP,
    _DURATION,
    _TENANT,
    _STATUS,
    _RESPONSE_MODEL,
    _REQUEST_MODEL,
    _INPUT_TOKENS,
    _OUTPUT_TOKENS,
    _COST,
    _SERVICE,
) = _INPUT_INDEXES = tuple(COLUMN_INDEX[name] for name in INPUT_COLUMNS)


@dataclass(slots=True)
class WindowPartial:
    """The LLM spans of one batch for one tenant, window, model and service, summed.

    Mergeable into an open window (`WindowAggregator.add_partials`): a worker process sends
    these instead of rows, so the process keeping the windows does per-group, not per-span,
    work. Durations travel exact, and pre-bucketed for windows already past `p95_exact_max`.
    """

    tenant: str
    start: int  # window start, ns
    model: str  # response model, else request model, else ""
    service: str
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    durations: list[int] = field(default_factory=list)
    buckets: dict[int, int] = field(default_factory=dict)


def partial_windows(batch: SpanBatch, window_ns: int) -> list[WindowPartial]:
    """The batch's LLM spans grouped by (tenant, window, model, service) and summed."""
    columns = batch.columns
    groups: dict[tuple[str, int, str, str], WindowPartial] = {}
    for (
        is_llm,
        started,
        duration,
        tenant_id,
        status,
        response_model,
        request_model,
        input_tokens,
        output_tokens,
        cost,
        service,
    ) in zip(*(columns[index] for index in _INPUT_INDEXES), strict=True):
        if not is_llm:
            continue
        ended = started + duration
        start = ended - ended % window_ns
        model = response_model or request_model or ""
        group = groups.get((tenant_id, start, model, service))
        if group is None:
            group = groups[tenant_id, start, model, service] = WindowPartial(
                tenant_id, start, model, service
            )
        group.requests += 1
        if status == "Error":
            group.errors += 1
        if input_tokens:
            group.input_tokens += input_tokens
        if output_tokens:
            group.output_tokens += output_tokens
        if cost is None:
            group.unpriced += 1
        else:
            group.cost += cost
        group.durations.append(duration)
    for group in groups.values():
        bucket_durations(group)
    return list(groups.values())


def bucket_durations(partial: WindowPartial) -> None:
    """Count the partial's durations into its latency buckets."""
    buckets = partial.buckets
    for duration in partial.durations:
        index = _bucket(duration)
        buckets[index] = buckets.get(index, 0) + 1


_SCOPE_ORDER = {Scope.TENANT: 0, Scope.MODEL: 1, Scope.SERVICE: 2}


def _record_order(record: WindowRecord) -> tuple[int, str, int, str]:
    return (record.window_start_ns, record.tenant, _SCOPE_ORDER[record.scope], record.key)


class WindowAggregator:
    """Accumulates span batches into open windows; `advance` closes and emits them.

    Typical driving loop: `add(batch)` for every normalised batch, `advance(now_ns)` on a
    timer (and before `add` after a restore); feed `advance`'s records to the
    `AnomalyDetector` and publish both. After either call, `pop_dirty()` names the tenants
    whose `tenant_state` changed (None: delete it), for changelog-backed tables.
    """

    def __init__(self, config: WindowConfig | None = None) -> None:
        self.config = config if config is not None else WindowConfig()
        self._window_ns = self.config.window_ns
        self._lateness_ns = self.config.lateness_ns
        self._watermark: int | None = None
        self._horizon = _NEVER  # windows starting before this are closed, for every tenant
        self._tenants: dict[str, _Tenant] = {}
        self._dirty: set[str] = set()

    @property
    def watermark_ns(self) -> int | None:
        return self._watermark

    def add(self, batch: SpanBatch) -> AddResult:
        """Count the batch's LLM spans into their open windows."""
        return self.add_partials(partial_windows(batch, self._window_ns))

    def add_partials(self, partials: Iterable[WindowPartial]) -> AddResult:
        """Merge `partial_windows` of a batch into the open windows; late ones are counted."""
        horizon = self._horizon
        exact_max = self.config.p95_exact_max
        tenants = self._tenants
        counted = late = 0
        for partial in partials:
            tenant_id, start = partial.tenant, partial.start
            tenant = tenants.get(tenant_id)
            if start < horizon or (tenant is not None and start < tenant.closed_until):
                late += partial.requests
                continue
            if tenant is None:
                tenant = tenants[tenant_id] = _Tenant(horizon)
            windows = tenant.open.get(start)
            if windows is None:
                windows = tenant.open[start] = {}
            for key in (
                _TENANT_KEY,
                (Scope.MODEL, partial.model),
                (Scope.SERVICE, partial.service),
            ):
                window = windows.get(key)
                if window is None:
                    window = windows[key] = _Window()
                window.merge(partial, exact_max)
            counted += partial.requests
            self._dirty.add(tenant_id)
        return AddResult(counted, late)

    def advance(self, now_ns: int) -> list[WindowRecord]:
        """Move the watermark to `now_ns` (never back) and emit every window that closes.

        Records come ordered by window start, tenant, scope (tenant first) and key; they
        include all-zero windows for idle keys that still have history.
        """
        if self._watermark is None or now_ns > self._watermark:
            self._watermark = now_ns
        width = self._window_ns
        horizon = (self._watermark - self._lateness_ns) // width * width
        self._horizon = max(self._horizon, horizon)
        records: list[WindowRecord] = []
        for tenant_id in list(self._tenants):
            tenant = self._tenants[tenant_id]
            if tenant.closed_until >= self._horizon:
                continue
            self._close(tenant_id, tenant, self._horizon, records)
            tenant.closed_until = self._horizon
            self._dirty.add(tenant_id)
            if not tenant.open and not tenant.known:
                del self._tenants[tenant_id]
        records.sort(key=_record_order)
        return records

    def _close(
        self, tenant_id: str, tenant: _Tenant, horizon: int, out: list[WindowRecord]
    ) -> None:
        width = self._window_ns
        retire_after = self.config.history
        open_windows = tenant.open
        known = tenant.known
        start = tenant.closed_until
        if start == _NEVER:  # first close: nothing before its first window
            if not open_windows:
                return
            start = min(open_windows)
        while start + width <= horizon:
            windows = open_windows.pop(start, None)
            if windows is None and not known:
                if not open_windows:
                    return
                start = min(open_windows)  # skip the silence: nobody to emit zeros for
                continue
            end = start + width
            if windows is not None:
                for key, window in windows.items():
                    out.append(window.record(tenant_id, key, start, end))
                    known[key] = 0
            for key, idle in list(known.items()):
                if windows is not None and key in windows:
                    continue
                out.append(zero_record(tenant_id, key, start, end))
                if idle + 1 >= retire_after:
                    del known[key]
                else:
                    known[key] = idle + 1
            start = end

    def pop_dirty(self) -> set[str]:
        """Tenants whose state changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def tenants(self) -> list[str]:
        return sorted(self._tenants)

    def tenant_state(self, tenant_id: str) -> dict[str, Any] | None:
        """The tenant's open windows and idle keys as plain JSON-able data; None if none."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return None
        return {
            "v": STATE_VERSION,
            "closed_until": None if tenant.closed_until == _NEVER else tenant.closed_until,
            "open": [
                {"start": start, "scope": key[0].value, "key": key[1], **window.state()}
                for start in sorted(tenant.open)
                for key, window in sorted(tenant.open[start].items())
            ],
            "known": [[key[0].value, key[1], idle] for key, idle in sorted(tenant.known.items())],
        }

    def load_tenant_state(self, tenant_id: str, state: Mapping[str, Any] | None) -> None:
        """Replace the tenant's state with one saved by `tenant_state` (None: drop it)."""
        self._dirty.discard(tenant_id)
        if state is None:
            self._tenants.pop(tenant_id, None)
            return
        check_state_version(state)
        try:
            closed_until = state["closed_until"]
            tenant = _Tenant(_NEVER if closed_until is None else int(closed_until))
            for saved in state["open"]:
                windows = tenant.open.setdefault(int(saved["start"]), {})
                windows[(Scope(saved["scope"]), str(saved["key"]))] = _Window.from_state(saved)
            for scope, key, idle in state["known"]:
                tenant.known[(Scope(scope), str(key))] = int(idle)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise WindowStateError(
                f"window state of tenant {tenant_id!r} is invalid: {exc}"
            ) from exc
        self._tenants[tenant_id] = tenant

    def drop_tenant(self, tenant_id: str) -> None:
        """Forget a tenant (e.g. its partition moved to another worker)."""
        self._tenants.pop(tenant_id, None)
        self._dirty.discard(tenant_id)

    def state(self) -> dict[str, Any]:
        """Everything, for drivers that keep one blob (the embedded runner)."""
        return {
            "v": STATE_VERSION,
            "watermark_ns": self._watermark,
            "horizon_ns": None if self._horizon == _NEVER else self._horizon,
            "tenants": {tenant_id: self.tenant_state(tenant_id) for tenant_id in self.tenants()},
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], config: WindowConfig | None = None
    ) -> WindowAggregator:
        check_state_version(state)
        aggregator = cls(config)
        watermark, horizon = state.get("watermark_ns"), state.get("horizon_ns")
        aggregator._watermark = None if watermark is None else int(watermark)
        aggregator._horizon = _NEVER if horizon is None else int(horizon)
        for tenant_id, tenant_state in state.get("tenants", {}).items():
            aggregator.load_tenant_state(tenant_id, tenant_state)
        return aggregator


def check_state_version(state: Mapping[str, Any]) -> None:
    if not isinstance(state, Mapping) or state.get("v") != STATE_VERSION:
        version = state.get("v") if isinstance(state, Mapping) else None
        raise WindowStateError(f"unsupported state version {version!r}; expected {STATE_VERSION}")
