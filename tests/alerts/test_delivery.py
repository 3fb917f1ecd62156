"""Delivery against a real local HTTP receiver: retries, Retry-After, 4xx, timeouts, and
every attempt recorded in ClickHouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schema.alert_store import AlertStore
from schema.alerts import (
    Alert,
    AlertKind,
    AlertMetric,
    AlertScope,
    DeliveryStatus,
    Destination,
    DestinationKind,
)
from streams.notify.delivery import Deliverer, RetryPolicy, backoff_s, classify, retry_after_s
from tests.alerts.conftest import ALLOWED
from tests.alerts.helpers import T0, W
from tests.alerts.receiver import Receiver, Reply, check_slack, check_webhook

SECRET = "whsec-0123456789abcdef"
ALERT = Alert(
    alert_id="c" * 32, kind=AlertKind.FIRING, tenant="acme", rule_id="default",
    rule_name="cost anomaly", metric=AlertMetric.COST, scope=AlertScope.TENANT, key="",
    window_start_ns=T0, window_end_ns=T0 + W, value=Decimal("0.25"),
    average=Decimal("0.05"), factor=3.0, history=5,
)  # fmt: skip


def destination(url: str, kind: DestinationKind = DestinationKind.SLACK) -> Destination:
    secret = SECRET if kind is DestinationKind.WEBHOOK else ""
    return Destination("acme", "dest_1", "d", kind, url, secret, True, datetime.now(UTC))


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)  # recorded instead of slept: the policy is under test


def deliverer(store: AlertStore, sleeps: Sleeps, **policy: float) -> Deliverer:
    settings = {"max_attempts": 4, "initial_s": 1.0, "max_s": 8.0, "timeout_s": 0.5, **policy}
    return Deliverer(
        RetryPolicy(**settings),  # type: ignore[arg-type]
        ALLOWED, "http://llmtel.test", store.record_attempt, sleep=sleeps, rand=lambda: 1.0,
    )  # fmt: skip


def attempts(store: AlertStore) -> list[tuple[int, str, int]]:
    now = datetime.now(UTC)
    rows = store.list_deliveries(
        "acme", int((now - timedelta(hours=1)).timestamp() * 1e9),
        int((now + timedelta(hours=1)).timestamp() * 1e9),
    )  # fmt: skip
    return sorted((r["attempt"], r["status"], r["http_status"]) for r in rows)


def test_policy_functions() -> None:
    assert [classify(s) for s in (200, 204, 429, 408, 500, 503, None)] == [
        "delivered", "delivered", "retry", "retry", "retry", "retry", "retry",
    ]  # fmt: skip
    assert [classify(s) for s in (301, 400, 403, 404, 410)] == ["failed"] * 5
    policy = RetryPolicy(initial_s=1, max_s=10)
    assert [backoff_s(policy, n, 1.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert [backoff_s(policy, n, 0.0) for n in (1, 2, 3)] == [0.5, 1, 2]  # half is jitter
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("7", now) == 7
    assert retry_after_s("Wed, 01 May 2024 12:00:30 GMT", now) == 30
    assert retry_after_s("soon", now) is None and retry_after_s(None, now) is None


async def test_slack_fails_twice_then_succeeds_on_the_third_attempt(
    hooks: Receiver, alert_store: AlertStore
) -> None:
    hooks.script("/slack", Reply(500), Reply(503))
    sleeps = Sleeps()
    sender = deliverer(alert_store, sleeps)
    status = await sender.deliver(ALERT, destination(hooks.url("/slack")))
    await sender.aclose()
    assert status is DeliveryStatus.DELIVERED
    received = hooks.received("/slack")
    assert len(received) == 3
    assert check_slack(received[-1])["Tenant"] == "acme"
    assert sleeps.waits == [1.0, 2.0]  # exponential
    assert attempts(alert_store) == [(1, "retry", 500), (2, "retry", 503), (3, "delivered", 200)]


async def test_429_waits_for_retry_after(hooks: Receiver, alert_store: AlertStore) -> None:
    hooks.script("/slack", Reply(429, {"Retry-After": "3"}), Reply(429))
    sleeps = Sleeps()
    sender = deliverer(alert_store, sleeps)
    assert await sender.deliver(ALERT, destination(hooks.url("/slack"))) is DeliveryStatus.DELIVERED
    await sender.aclose()
    assert sleeps.waits == [3.0, 2.0]  # Retry-After honoured; without it, backoff
    assert [a[1:] for a in attempts(alert_store)] == [
        ("retry", 429),
        ("retry", 429),
        ("delivered", 200),
    ]


async def test_a_4xx_is_not_retried(hooks: Receiver, alert_store: AlertStore) -> None:
    hooks.script("/slack", Reply(404, body=b"no_service"))
    sleeps = Sleeps()
    sender = deliverer(alert_store, sleeps)
    assert await sender.deliver(ALERT, destination(hooks.url("/slack"))) is DeliveryStatus.FAILED
    await sender.aclose()
    assert len(hooks.received("/slack")) == 1 and sleeps.waits == []
    (row,) = alert_store.list_deliveries("acme", 0, 2**62)
    assert (row["status"], row["http_status"], row["error"]) == ("failed", 404, "no_service")


async def test_gives_up_after_max_attempts_with_timeouts(
    hooks: Receiver, alert_store: AlertStore
) -> None:
    hooks.script("/slow", *[Reply(200, delay_s=1.5)] * 3)
    sleeps = Sleeps()
    sender = deliverer(alert_store, sleeps, max_attempts=3, timeout_s=0.3)
    assert await sender.deliver(ALERT, destination(hooks.url("/slow"))) is DeliveryStatus.FAILED
    await sender.aclose()
    rows = alert_store.list_deliveries("acme", 0, 2**62)
    assert sorted((r["attempt"], r["status"], r["http_status"]) for r in rows) == [
        (1, "retry", 0), (2, "retry", 0), (3, "failed", 0),
    ]  # fmt: skip
    assert all(r["error"].startswith("timeout") for r in rows)
    assert len(sleeps.waits) == 2


async def test_webhook_is_signed_with_a_fresh_timestamp_on_every_attempt(
    hooks: Receiver, alert_store: AlertStore
) -> None:
    hooks.script("/hook", Reply(500))
    sender = deliverer(alert_store, Sleeps())
    target = destination(hooks.url("/hook"), DestinationKind.WEBHOOK)
    assert await sender.deliver(ALERT, target) is DeliveryStatus.DELIVERED
    await sender.aclose()
    for request in hooks.received("/hook"):
        body = check_webhook(request, SECRET)
        assert request.headers["x-llmtel-alert-id"] == ALERT.alert_id
        assert body["alert"]["value"] == "0.25" and body["alert"]["tenant"] == "acme"
        assert body["link"].startswith("http://llmtel.test/api/v1/windows?")


@pytest.mark.parametrize("url", ["http://10.0.0.1/x", "https://169.254.169.254/latest"])
async def test_an_unsafe_url_is_never_requested(alert_store: AlertStore, url: str) -> None:
    sleeps = Sleeps()
    sender = deliverer(alert_store, sleeps)
    assert await sender.deliver(ALERT, destination(url)) is DeliveryStatus.FAILED
    await sender.aclose()
    (row,) = alert_store.list_deliveries("acme", 0, 2**62)
    assert row["status"] == "failed" and row["error"].startswith("unsafe URL")
    assert sleeps.waits == []
