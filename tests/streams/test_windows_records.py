"""The `llmtel.windows.v1` and `llmtel.anomalies.v1` message formats."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from schema.windows import (
    ANOMALIES_TOPIC,
    WINDOWS_TOPIC,
    AnomalyRecord,
    Metric,
    RecordDecodeError,
    Scope,
    WindowRecord,
)

WINDOW = WindowRecord(
    tenant="acme",
    scope=Scope.MODEL,
    key="gpt-4o",
    window_start_ns=1_700_000_040_000_000_000,
    window_end_ns=1_700_000_100_000_000_000,
    requests=8,
    errors=2,
    input_tokens=12_345,
    output_tokens=678,
    cost_usd=Decimal("1E-12"),
    unpriced=1,
    latency_p95_ns=2_500_000_001,
)

ANOMALY = AnomalyRecord(
    tenant="acme",
    scope=Scope.TENANT,
    key="",
    metric=Metric.COST_USD,
    window_start_ns=60_000_000_000,
    window_end_ns=120_000_000_000,
    value=Decimal("12.500000000001"),
    average=Decimal("0.3333333333333333333333333333"),
    factor=3.0,
    history=30,
)


def test_topics() -> None:
    assert (WINDOWS_TOPIC, ANOMALIES_TOPIC) == ("llmtel.windows.v1", "llmtel.anomalies.v1")


def test_window_record_roundtrips_with_version_and_exact_cost() -> None:
    data = WINDOW.to_json()
    doc = orjson.loads(data)
    assert doc["v"] == 1
    assert doc["cost_usd"] == "0.000000000001"  # a string, positional, exact
    assert doc["error_rate"] == 0.25
    assert doc["scope"] == "model"
    assert WindowRecord.from_json(data) == WINDOW


def test_anomaly_record_roundtrips() -> None:
    data = ANOMALY.to_json()
    doc = orjson.loads(data)
    assert (doc["v"], doc["metric"], doc["value"]) == (1, "cost_usd", "12.500000000001")
    assert AnomalyRecord.from_json(data) == ANOMALY


def test_error_rate_of_an_empty_window_is_zero() -> None:
    empty = WindowRecord("t", Scope.TENANT, "", 0, 1, 0, 0, 0, 0, Decimal(0), 0, 0)
    assert empty.error_rate == 0.0
    assert orjson.loads(empty.to_json())["cost_usd"] == "0"


def mutated(record: WindowRecord | AnomalyRecord, **changes: object) -> bytes:
    doc = orjson.loads(record.to_json())
    doc.update(changes)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"v": 2}, "version 2"),
        ({"v": True}, "version"),
        ({"requests": "8"}, "'requests' must be an integer"),
        ({"requests": True}, "'requests' must be an integer"),
        ({"cost_usd": 0.5}, "'cost_usd' must be a string"),
        ({"cost_usd": "cheap"}, "'cost_usd' must be a decimal"),
        ({"cost_usd": "NaN"}, "finite"),
        ({"scope": "region"}, "unknown scope"),
        ({"tenant": None}, "'tenant' must be a string"),
    ],
)
def test_bad_window_messages_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RecordDecodeError, match=message):
        WindowRecord.from_json(mutated(WINDOW, **changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"metric": "vibes"}, "unknown metric"),
        ({"factor": "3"}, "'factor' must be a number"),
        ({"history": 1.5}, "'history' must be an integer"),
        ({"average": 1}, "'average' must be a string"),
    ],
)
def test_bad_anomaly_messages_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RecordDecodeError, match=message):
        AnomalyRecord.from_json(mutated(ANOMALY, **changes))


@pytest.mark.parametrize("data", [b"", b"[]", b"{", b'"v"'])
def test_non_records_are_refused(data: bytes) -> None:
    with pytest.raises(RecordDecodeError):
        WindowRecord.from_json(data)
    with pytest.raises(RecordDecodeError):
        AnomalyRecord.from_json(data)


def test_integer_factor_is_read_as_float() -> None:
    record = AnomalyRecord.from_json(mutated(ANOMALY, factor=3))
    assert record.factor == 3.0
    assert isinstance(record.factor, float)
