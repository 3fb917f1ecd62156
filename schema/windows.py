"""Closed usage windows and the anomalies found in them: the `llmtel.windows.v1` and
`llmtel.anomalies.v1` Kafka message formats.

Each message is one JSON object with `"v": 1`. Money travels as a plain decimal string
(never a float, never exponent notation) so sums stay exact end to end; times are integer
nanoseconds since the epoch. A window is `[window_start_ns, window_end_ns)`: start
inclusive, end exclusive. Decoding checks the version and every field's type and raises
`RecordDecodeError` saying which field is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

import orjson

WINDOWS_TOPIC = "llmtel.windows.v1"
ANOMALIES_TOPIC = "llmtel.anomalies.v1"
RECORD_VERSION = 1


class Scope(StrEnum):
    """What a window aggregates: a whole tenant, one model or one service of a tenant."""

    TENANT = "tenant"
    MODEL = "model"
    SERVICE = "service"


class Metric(StrEnum):
    """The window metrics the anomaly rule judges; values are `WindowRecord` field names."""

    COST_USD = "cost_usd"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"
    REQUESTS = "requests"
    ERRORS = "errors"
    ERROR_RATE = "error_rate"
    LATENCY_P95_NS = "latency_p95_ns"


class RecordDecodeError(ValueError):
    """A message on a windows/anomalies topic that is not a valid record of this version."""


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """One closed tumbling window of LLM spans for a tenant (key "") or a tenant's model.

    All-zero records are real: they stand for windows in which a known key had no traffic.
    `latency_p95_ns` is 0 when there were no requests.
    """

    tenant: str
    scope: Scope
    key: str
    window_start_ns: int
    window_end_ns: int
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal  # sum over priced spans only
    unpriced: int  # LLM spans whose cost is unknown (not in cost_usd)
    latency_p95_ns: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": RECORD_VERSION,
                "tenant": self.tenant,
                "scope": self.scope.value,
                "key": self.key,
                "window_start_ns": self.window_start_ns,
                "window_end_ns": self.window_end_ns,
                "requests": self.requests,
                "errors": self.errors,
                "error_rate": self.error_rate,  # derived; ignored when decoding
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cost_usd": decimal_text(self.cost_usd),
                "unpriced": self.unpriced,
                "latency_p95_ns": self.latency_p95_ns,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> WindowRecord:
        doc = _document(data)
        return cls(
            tenant=_str(doc, "tenant"),
            scope=_scope(doc),
            key=_str(doc, "key"),
            window_start_ns=_int(doc, "window_start_ns"),
            window_end_ns=_int(doc, "window_end_ns"),
            requests=_int(doc, "requests"),
            errors=_int(doc, "errors"),
            input_tokens=_int(doc, "input_tokens"),
            output_tokens=_int(doc, "output_tokens"),
            cost_usd=_decimal(doc, "cost_usd"),
            unpriced=_int(doc, "unpriced"),
            latency_p95_ns=_int(doc, "latency_p95_ns"),
        )


@dataclass(frozen=True, slots=True)
class AnomalyRecord:
    """`value` of `metric` in one window exceeded `factor` x `average` of the `history`
    windows before it. Values are decimals whatever the metric (exact for money)."""

    tenant: str
    scope: Scope
    key: str
    metric: Metric
    window_start_ns: int
    window_end_ns: int
    value: Decimal
    average: Decimal
    factor: float
    history: int  # how many earlier windows the average is over

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": RECORD_VERSION,
                "tenant": self.tenant,
                "scope": self.scope.value,
                "key": self.key,
                "metric": self.metric.value,
                "window_start_ns": self.window_start_ns,
                "window_end_ns": self.window_end_ns,
                "value": decimal_text(self.value),
                "average": decimal_text(self.average),
                "factor": self.factor,
                "history": self.history,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> AnomalyRecord:
        doc = _document(data)
        metric = _str(doc, "metric")
        try:
            parsed_metric = Metric(metric)
        except ValueError:
            raise RecordDecodeError(f"unknown metric {metric!r}") from None
        factor = doc.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise RecordDecodeError("field 'factor' must be a number")
        return cls(
            tenant=_str(doc, "tenant"),
            scope=_scope(doc),
            key=_str(doc, "key"),
            metric=parsed_metric,
            window_start_ns=_int(doc, "window_start_ns"),
            window_end_ns=_int(doc, "window_end_ns"),
            value=_decimal(doc, "value"),
            average=_decimal(doc, "average"),
            factor=float(factor),
            history=_int(doc, "history"),
        )


def decimal_text(value: Decimal) -> str:
    """Plain positional notation (`format(d, "f")`), which `Decimal(...)` reads back exactly."""
    return format(value, "f")


def _document(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RecordDecodeError("expected a JSON object")
    version = doc.get("v")
    if version != RECORD_VERSION or isinstance(version, bool):
        raise RecordDecodeError(f"unsupported record version {version!r}; expected 1")
    return doc


def _str(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str):
        raise RecordDecodeError(f"field {name!r} must be a string")
    return value


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordDecodeError(f"field {name!r} must be an integer")
    return value


def _decimal(doc: dict[str, Any], name: str) -> Decimal:
    text = _str(doc, name)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RecordDecodeError(f"field {name!r} must be a decimal string") from None
    if not value.is_finite():
        raise RecordDecodeError(f"field {name!r} must be a finite decimal")
    return value


def _scope(doc: dict[str, Any]) -> Scope:
    text = _str(doc, "scope")
    try:
        return Scope(text)
    except ValueError:
        raise RecordDecodeError(f"unknown scope {text!r}") from None
