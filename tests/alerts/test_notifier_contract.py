"""One contract suite, two drivers: the notifier fed by the embedded window task's hand-off
and by real Kafka topics (`llmtel.windows.v1` / `llmtel.anomalies.v1` formats).

Each test ends with a *marker*: a spike of another tenant published after everything else
(one partition, so in order). Once the marker's notification arrived, everything before
it has been handled, so "no second notification" is checked without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schema.alert_store import AlertStore
from schema.alerts import DestinationKind, DestinationSpec, RuleSpec
from schema.clickhouse import Database
from schema.models import TenantSettings
from schema.tenants import TenantStore
from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams.notify.delivery import Deliverer, RetryPolicy
from streams.notify.embedded import EmbeddedNotifyFeed
from streams.notify.evaluate import RuleEvaluator
from streams.notify.kafka import KafkaNotifyDriver
from streams.notify.notifier import Notifier
from tests.alerts.conftest import ALLOWED
from tests.alerts.helpers import W, window
from tests.alerts.receiver import Receiver, Reply, check_slack, check_webhook
from tests.api.rows import MS, insert_spans, llm_span
from tests.kafka.fixtures import create_topic, delete_topics

SECRET = "whsec-contract-0123456789"
BASE = ["0.05"] * 5


def build_notifier(db: Database, tenants: TenantStore) -> Notifier:
    store = AlertStore(db, cache_ttl_s=0.05)
    policy = RetryPolicy(max_attempts=4, initial_s=0.05, max_s=0.2, timeout_s=10)
    deliverer = Deliverer(policy, ALLOWED, "http://llmtel.test", store.record_attempt)
    return Notifier(store, tenants, deliverer, RuleEvaluator(30, 5), workers=2)


@dataclass
class Pipeline:
    """A running notifier behind one driver; `publish` hands it records in order."""

    db: Database
    tenants: TenantStore
    publish: Callable[[Sequence[WindowRecord], Sequence[AnomalyRecord]], Awaitable[None]]
    restart: Callable[[], Awaitable[None]]
    start_ns: int = field(default_factory=lambda: time.time_ns() // W * W - 40 * W)

    @property
    def store(self) -> AlertStore:
        return AlertStore(self.db)

    def series(self, tenant: str, costs: list[str], offset: int = 0) -> list[WindowRecord]:
        return [
            window(offset + i, tenant=tenant, cost=c, start=self.start_ns)
            for i, c in enumerate(costs)
        ]

    def slack(self, tenant: str, hooks: Receiver, *, default: bool = True) -> str:
        self.tenants.create_tenant(tenant)
        spec = DestinationSpec(
            kind=DestinationKind.SLACK, url=hooks.url(f"/{tenant}"), default=default
        )
        return self.store.create_destination(tenant, spec).destination_id

    async def marker(self, hooks: Receiver, name: str = "marker") -> None:
        """Publish a spike for tenant `name` and wait until its notification arrived."""
        if not any(t.tenant_id == name for t in self.tenants.list_tenants()):
            self.slack(name, hooks)
        await self.publish(self.series(name, [*BASE, "1"], offset=20), [])
        await asyncio.to_thread(hooks.wait, f"/{name}", 1)


async def _embedded(db: Database, tenants: TenantStore) -> AsyncIterator[Pipeline]:
    state: dict[str, Any] = {}

    async def start() -> None:
        notifier = build_notifier(db, tenants)
        await notifier.start()
        stop = asyncio.Event()
        feed = EmbeddedNotifyFeed(notifier, asyncio.get_running_loop())
        state.update(
            notifier=notifier, stop=stop, feed=feed, task=asyncio.create_task(feed.run(stop))
        )

    async def stop() -> None:
        state["stop"].set()
        await state["task"]
        await state["notifier"].stop()

    async def publish(windows: Sequence[WindowRecord], anomalies: Sequence[AnomalyRecord]) -> None:
        # from a worker thread, as WindowTask.tick calls it
        await asyncio.to_thread(state["feed"].feed, list(windows), list(anomalies))

    async def restart() -> None:
        await stop()
        await start()

    await start()
    try:
        yield Pipeline(db, tenants, publish, restart)
    finally:
        await stop()


async def _kafka(
    db: Database, tenants: TenantStore, bootstrap: str, prefix: str
) -> AsyncIterator[Pipeline]:
    windows_topic = await create_topic(bootstrap, prefix + "windows")
    anomalies_topic = await create_topic(bootstrap, prefix + "anomalies")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    state: dict[str, Any] = {}
    group = f"notify-{time.time_ns()}"

    async def start() -> None:
        notifier = build_notifier(db, tenants)
        await notifier.start()
        driver = KafkaNotifyDriver(
            notifier, bootstrap, group, lookback_s=120,
            windows_topic=windows_topic, anomalies_topic=anomalies_topic,
            consumer_config={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
        )  # fmt: skip
        stop = asyncio.Event()
        state.update(notifier=notifier, stop=stop, task=asyncio.create_task(driver.run(stop)))
        await asyncio.wait_for(driver.assigned.wait(), 30)

    async def stop() -> None:
        state["stop"].set()
        await state["task"]
        await state["notifier"].stop()

    async def publish(windows: Sequence[WindowRecord], anomalies: Sequence[AnomalyRecord]) -> None:
        for record in windows:
            await producer.send_and_wait(
                windows_topic, record.to_json(), key=record.tenant.encode()
            )
        for anomaly in anomalies:
            await producer.send_and_wait(
                anomalies_topic, anomaly.to_json(), key=anomaly.tenant.encode()
            )

    async def restart() -> None:
        await stop()
        await start()

    await start()
    try:
        yield Pipeline(db, tenants, publish, restart)
    finally:
        with contextlib.suppress(Exception):
            await stop()
        await producer.stop()
        with contextlib.suppress(Exception):
            await delete_topics(bootstrap, [windows_topic, anomalies_topic])


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
async def pipeline(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[Pipeline]:
    tenants = TenantStore(db, cache_ttl_s=0.05)
    if request.param == "embedded":
        source = _embedded(db, tenants)
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        source = _kafka(db, tenants, bootstrap, request.getfixturevalue("topic_prefix"))
    async for ready in source:
        yield ready


def anomaly_of(w: WindowRecord, average: str) -> AnomalyRecord:
    return AnomalyRecord(
        w.tenant, Scope.TENANT, "", Metric.COST_USD, w.window_start_ns, w.window_end_ns,
        w.cost_usd, Decimal(average), 3.0, 5,
    )  # fmt: skip


async def test_a_5x_spike_notifies_its_tenant_once_a_2x_rise_nobody(
    pipeline: Pipeline, hooks: Receiver
) -> None:
    pipeline.slack("spiky", hooks)
    pipeline.slack("steady", hooks)
    spiky = pipeline.series("spiky", [*BASE, "0.25", "0.26"])
    steady = pipeline.series("steady", [*BASE, "0.10"])
    await pipeline.publish(spiky + steady, [])
    (message,) = await asyncio.to_thread(hooks.wait, "/spiky", 1)
    fields = check_slack(message)
    assert (fields["Tenant"], fields["Value"], fields["Rolling average"]) == (
        "spiky", "$0.25", "$0.05",
    )  # fmt: skip
    # the same spike again: as a redelivered window and twice as the detector's anomaly
    spike = spiky[5]
    await pipeline.publish([spike], [anomaly_of(spike, "0.05"), anomaly_of(spike, "0.05")])
    await pipeline.marker(hooks)
    assert len(hooks.received("/spiky")) == 1
    assert hooks.received("/steady") == []


async def test_a_duplicated_anomaly_message_notifies_once(
    pipeline: Pipeline, hooks: Receiver
) -> None:
    pipeline.slack("acme", hooks)
    spike = pipeline.series("acme", ["0.05", "0.50"])[1]  # too little history for the windows
    record = anomaly_of(spike, "0.05")
    await pipeline.publish([], [record, record])
    (message,) = await asyncio.to_thread(hooks.wait, "/acme", 1)
    assert check_slack(message)["Value"] == "$0.50"
    await pipeline.marker(hooks)
    assert len(hooks.received("/acme")) == 1


async def test_a_receiver_failing_twice_gets_the_alert_on_the_third_attempt(
    pipeline: Pipeline, hooks: Receiver
) -> None:
    hooks.script("/flaky", Reply(500), Reply(500))
    pipeline.tenants.create_tenant("flaky")
    spec = DestinationSpec(
        kind=DestinationKind.WEBHOOK, url=hooks.url("/flaky"), secret=SECRET, default=True
    )
    pipeline.store.create_destination("flaky", spec)
    await pipeline.publish(pipeline.series("flaky", [*BASE, "0.5"]), [])
    requests = await asyncio.to_thread(hooks.wait, "/flaky", 3)
    body = check_webhook(requests[-1], SECRET)
    assert body["alert"]["kind"] == "firing" and body["alert"]["value"] == "0.5"
    await pipeline.marker(hooks)
    assert len(hooks.received("/flaky")) == 3
    rows = pipeline.store.list_deliveries("flaky", 0, 2**62)
    assert sorted((r["attempt"], r["status"]) for r in rows) == [
        (1, "retry"), (2, "retry"), (3, "delivered"),
    ]  # fmt: skip


async def test_a_restart_replaying_the_same_windows_does_not_notify_again(
    pipeline: Pipeline, hooks: Receiver
) -> None:
    pipeline.slack("acme", hooks)
    windows = pipeline.series("acme", [*BASE, "0.5"])
    await pipeline.publish(windows, [])
    await asyncio.to_thread(hooks.wait, "/acme", 1)
    await pipeline.marker(hooks, "marker1")
    await pipeline.restart()  # fresh evaluator: the Kafka driver replays, the embedded one is fed
    await pipeline.publish(windows, [])
    await pipeline.marker(hooks, "marker2")
    assert len(hooks.received("/acme")) == 1


async def test_resolved_follows_firing_and_rules_route_to_their_destinations(
    pipeline: Pipeline, hooks: Receiver
) -> None:
    default_dest = pipeline.slack("acme", hooks)
    pipeline.tenants.create_tenant("other")
    other = pipeline.store.create_destination(
        "acme",
        DestinationSpec(kind=DestinationKind.SLACK, url=hooks.url("/acme-requests")),
    )
    pipeline.store.create_rule(
        "acme",
        RuleSpec(
            name="busy",
            metric="requests",
            comparison="threshold",
            threshold=Decimal(15),
            destinations=[other.destination_id],
        ),  # type: ignore[arg-type]
    )
    windows = pipeline.series("acme", [*BASE, "0.5", "0.05"])
    windows[5] = window(5, tenant="acme", cost="0.5", requests=20, start=pipeline.start_ns)
    await pipeline.publish(windows, [])
    firing, resolved = await asyncio.to_thread(hooks.wait, "/acme", 2)
    assert firing.json()["text"].startswith("[llmtel] acme (whole tenant): cost $0.50 is 10.0x")
    assert resolved.json()["text"].startswith("[llmtel] resolved: acme (whole tenant) cost")
    busy, calm = await asyncio.to_thread(hooks.wait, "/acme-requests", 2)
    assert check_slack(busy)["Threshold"] == "15" and check_slack(busy)["Value"] == "20"
    assert calm.json()["text"].startswith("[llmtel] resolved: acme (whole tenant) requests")
    await pipeline.marker(hooks)
    assert len(hooks.received("/acme")) == 2 and len(hooks.received("/acme-requests")) == 2
    assert default_dest != other.destination_id


async def test_budget_levels_notify_once_each(pipeline: Pipeline, hooks: Receiver) -> None:
    pipeline.slack("budgeted", hooks)
    pipeline.tenants.update_settings("budgeted", TenantSettings(monthly_budget_usd=Decimal(1)))
    now = time.time_ns()
    insert_spans(
        pipeline.db,
        [llm_span(TenantId="budgeted", cost="0.3", Timestamp=now - 60_000 * MS) for _ in range(3)],
    )  # $0.90 this month: 80 % reached (50 % with it, superseded)
    await pipeline.publish(pipeline.series("budgeted", ["0.01"]), [])
    (first,) = await asyncio.to_thread(hooks.wait, "/budgeted", 1)
    assert check_slack(first)["Reached"] == "80%"
    await pipeline.publish(pipeline.series("budgeted", ["0.01"], offset=1), [])
    insert_spans(
        pipeline.db, [llm_span(TenantId="budgeted", cost="0.2", Timestamp=now - 60_000 * MS)]
    )
    await pipeline.publish(pipeline.series("budgeted", ["0.01"], offset=2), [])
    second = (await asyncio.to_thread(hooks.wait, "/budgeted", 2))[1]
    assert check_slack(second)["Reached"] == "100%"
    await pipeline.publish(pipeline.series("budgeted", ["0.01"], offset=3), [])
    await pipeline.marker(hooks)
    assert len(hooks.received("/budgeted")) == 2
