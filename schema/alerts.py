"""Alert rules, destinations and alerts: the contract between the API and the notifier.

A **rule** watches one metric of a tenant's closed windows, at one scope (the whole tenant,
or each model: `key` narrows it to one model), and fires when the window's value is above
`factor` x its rolling average (`anomaly`) or above a fixed `threshold`. A rule without
destinations notifies the tenant's default destinations. Every tenant has a rule
`default` (cost anomaly at 3x) until it is changed (PATCH) or deleted.

A **destination** is a Slack incoming webhook or a generic webhook with a shared secret.
Its URL and secret are write-only: reads show `masked_url` and `has_secret`.

An **alert** is what is delivered: `firing` when a rule fires for a (scope, key, window),
`resolved` when the metric is back under the rule's limit, `budget` when a tenant's
month-to-date cost crosses 50/80/100 % of its budget. Its `alert_id` is a pure function of
what it is about, so a window or anomaly delivered twice makes the same id, which the
notification ledger lets through once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schema.windows import decimal_text

DEFAULT_RULE_ID = "default"
BUDGET_RULE_ID = "budget"
BUDGET_LEVELS = (50, 80, 100)  # percent of the monthly budget, one alert each


class AlertError(Exception):
    """An alert rule or destination operation that cannot be done as asked."""


class InvalidAlertConfig(AlertError):
    """A rule or destination that is not valid; the message says what to change."""


class RuleNotFound(AlertError):
    pass


class DestinationNotFound(AlertError):
    pass


class AlertMetric(StrEnum):
    """What a rule watches, computed from a closed window."""

    COST = "cost"  # USD, exact
    TOKENS = "tokens"  # input + output
    REQUESTS = "requests"
    ERRORS = "errors"
    ERROR_RATE = "error_rate"  # errors / requests, 0..1
    LATENCY_P95 = "latency_p95"  # milliseconds


class AlertScope(StrEnum):
    TENANT = "tenant"
    MODEL = "model"
    SERVICE = "service"


class Comparison(StrEnum):
    ANOMALY = "anomaly"  # value > factor x rolling average
    THRESHOLD = "threshold"  # value > threshold


class DestinationKind(StrEnum):
    SLACK = "slack"
    WEBHOOK = "webhook"


class AlertKind(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    BUDGET = "budget"


# the rolling average must reach this before an anomaly rule can fire (per metric default)
DEFAULT_BASELINE: dict[AlertMetric, Decimal] = {
    AlertMetric.COST: Decimal("0.01"),
    AlertMetric.TOKENS: Decimal(1000),
    AlertMetric.REQUESTS: Decimal(5),
    AlertMetric.ERRORS: Decimal(1),
    AlertMetric.ERROR_RATE: Decimal("0.01"),
    AlertMetric.LATENCY_P95: Decimal(100),  # ms
}
RATIO_METRICS = frozenset({AlertMetric.ERROR_RATE, AlertMetric.LATENCY_P95})


class RuleSpec(BaseModel):
    """A rule as written by its owner (POST body; PATCH changes some fields)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("", max_length=200, description="Shown in notifications.")
    metric: AlertMetric = AlertMetric.COST
    scope: AlertScope = AlertScope.TENANT
    key: str | None = Field(
        None, max_length=500, description="scope=model: only this model; null: every model."
    )
    comparison: Comparison = Comparison.ANOMALY
    factor: float = Field(3.0, gt=1, le=1000, description="anomaly: value > factor x average.")
    threshold: Decimal | None = Field(
        None, ge=0, description="threshold: value > threshold (USD, count, 0..1, ms)."
    )
    min_baseline: Decimal | None = Field(
        None, ge=0, description="anomaly: the average must reach this; null: metric default."
    )
    cooldown_s: int = Field(
        900, ge=0, le=30 * 86400, description="No new firing notification this long after one."
    )
    destinations: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Destination ids; empty: the tenant's default destinations.",
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> RuleSpec:
        if self.key is not None and self.scope is AlertScope.TENANT:
            raise ValueError("key names a model or a service: use it with scope 'model'/'service'")
        if self.comparison is Comparison.THRESHOLD and self.threshold is None:
            raise ValueError("comparison 'threshold' needs a threshold")
        if self.threshold is not None and not self.threshold.is_finite():
            raise ValueError("threshold must be a finite number")
        if len(set(self.destinations)) != len(self.destinations):
            raise ValueError("destinations must not repeat")
        return self

    def baseline(self) -> Decimal:
        return self.min_baseline if self.min_baseline is not None else DEFAULT_BASELINE[self.metric]


class RulePatch(BaseModel):
    """Fields to change in a rule; absent fields keep their value."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    metric: AlertMetric | None = None
    scope: AlertScope | None = None
    key: str | None = Field(None, max_length=500)
    comparison: Comparison | None = None
    factor: float | None = Field(None, gt=1, le=1000)
    threshold: Decimal | None = Field(None, ge=0)
    min_baseline: Decimal | None = Field(None, ge=0)
    cooldown_s: int | None = Field(None, ge=0, le=30 * 86400)
    destinations: list[str] | None = Field(None, max_length=20)
    enabled: bool | None = None

    def apply(self, spec: RuleSpec) -> RuleSpec:
        """`spec` with the fields this patch sets (explicit nulls included), re-validated."""
        changes = self.model_dump(exclude_unset=True)
        return RuleSpec.model_validate({**spec.model_dump(), **changes})


DEFAULT_RULE = RuleSpec(name="cost anomaly", metric=AlertMetric.COST, factor=3.0)


@dataclass(frozen=True, slots=True)
class AlertRule:
    tenant: str
    rule_id: str
    spec: RuleSpec
    created_at: datetime | None  # None: the built-in default rule, never changed


class DestinationSpec(BaseModel):
    """A destination as created (POST body). URL and secret are never shown again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("", max_length=200)
    kind: DestinationKind
    url: str = Field(min_length=1, max_length=2000)
    secret: str | None = Field(
        None, min_length=16, max_length=500, description="webhook: the HMAC key (16+ chars)."
    )
    default: bool = Field(False, description="Notified by rules that name no destination.")

    @model_validator(mode="after")
    def _consistent(self) -> DestinationSpec:
        if self.kind is DestinationKind.WEBHOOK and not self.secret:
            raise ValueError("a webhook destination needs a secret (16 or more characters)")
        if self.kind is DestinationKind.SLACK and self.secret:
            raise ValueError("a Slack destination takes no secret (the URL is the secret)")
        return self


@dataclass(frozen=True, slots=True)
class Destination:
    """A stored destination, secrets included: for the notifier, never for API output."""

    tenant: str
    destination_id: str
    name: str
    kind: DestinationKind
    url: str
    secret: str
    default: bool
    created_at: datetime

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


def mask_url(url: str) -> str:
    """Scheme and host only: Slack webhook paths are credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}/***"


def alert_id(*parts: object) -> str:
    """A stable id from what an alert is about (the ledger's deduplication key)."""
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification's content; `to_json` is also the webhook body's `alert` object."""

    alert_id: str
    kind: AlertKind
    tenant: str
    rule_id: str
    rule_name: str
    metric: AlertMetric
    scope: AlertScope
    key: str
    window_start_ns: int
    window_end_ns: int
    value: Decimal
    average: Decimal | None = None  # anomaly: rolling average
    factor: float | None = None  # anomaly: the rule's factor
    history: int = 0  # anomaly: windows in the average
    threshold: Decimal | None = None  # threshold rules; budget: the level in USD
    budget_usd: Decimal | None = None
    budget_percent: int | None = None
    destinations: tuple[str, ...] = ()  # the rule's destinations; () = tenant defaults

    def with_destinations(self, destinations: tuple[str, ...]) -> Alert:
        return replace(self, destinations=destinations)

    def document(self) -> dict[str, Any]:
        """JSON-able; decimals as exact strings, times as integer ns."""
        return {
            "id": self.alert_id,
            "kind": self.kind.value,
            "tenant": self.tenant,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "metric": self.metric.value,
            "scope": self.scope.value,
            "key": self.key,
            "window_start_ns": self.window_start_ns,
            "window_end_ns": self.window_end_ns,
            "value": decimal_text(self.value),
            "average": None if self.average is None else decimal_text(self.average),
            "factor": self.factor,
            "history": self.history,
            "threshold": None if self.threshold is None else decimal_text(self.threshold),
            "budget_usd": None if self.budget_usd is None else decimal_text(self.budget_usd),
            "budget_percent": self.budget_percent,
            "destinations": list(self.destinations),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.document())

    @classmethod
    def from_json(cls, data: bytes | str) -> Alert:
        doc = orjson.loads(data)

        def dec(name: str) -> Decimal | None:
            value = doc.get(name)
            return None if value is None else Decimal(value)

        return cls(
            alert_id=doc["id"],
            kind=AlertKind(doc["kind"]),
            tenant=doc["tenant"],
            rule_id=doc["rule_id"],
            rule_name=doc["rule_name"],
            metric=AlertMetric(doc["metric"]),
            scope=AlertScope(doc["scope"]),
            key=doc["key"],
            window_start_ns=int(doc["window_start_ns"]),
            window_end_ns=int(doc["window_end_ns"]),
            value=Decimal(doc["value"]),
            average=dec("average"),
            factor=doc.get("factor"),
            history=int(doc.get("history", 0)),
            threshold=dec("threshold"),
            budget_usd=dec("budget_usd"),
            budget_percent=doc.get("budget_percent"),
            destinations=tuple(doc.get("destinations", ())),
        )


class DeliveryStatus(StrEnum):
    """Outcome of one attempt (`alert_deliveries.Status`)."""

    DELIVERED = "delivered"
    RETRY = "retry"  # failed; another attempt follows
    FAILED = "failed"  # failed; not retried (4xx, unsafe URL) or attempts exhausted


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    tenant: str
    alert_id: str
    rule_id: str
    destination_id: str
    kind: AlertKind
    window_start_ns: int
    window_end_ns: int
    attempt: int
    status: DeliveryStatus
    http_status: int  # 0: no HTTP answer
    latency_ms: float
    error: str
    attempted_at: datetime
