"""The notifier both drivers share: evaluate -> claim in the ledger -> deliver.

Drivers hand it closed windows (`on_windows`) and the detector's anomalies
(`on_anomalies`). For each alert the pure evaluator produces, the notifier picks the
destinations (the rule's, else the tenant's defaults), claims each (alert, destination)
pair in the ledger and queues the claimed ones for delivery workers; a pair that is
already in the ledger is a duplicate and is not sent again.

Exactly once, and what a crash does
-----------------------------------
The claim is written before the first request, the outcome after the last. So:
- a window or anomaly delivered twice, or replayed after a restart, finds its claim and
  is not notified again;
- if the process dies after claiming and before recording the outcome, the claim stays
  `sending`. Any notifier's sweep re-sends such orphaned claims once they are older than
  the longest a delivery can take (`RetryPolicy.longest_delivery_s`). If the request had
  reached the receiver before the crash, it is received twice: at least once across a
  crash, exactly once otherwise. Webhook receivers can drop the duplicate by
  `X-Llmtel-Alert-Id`; Slack shows it twice.
- windows older than `max_age_s` still feed the rolling history but notify nobody (a
  replay after a long outage does not page about the past).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schema.alert_store import AlertStore
from schema.alerts import Alert, AlertKind, DeliveryStatus, Destination
from schema.models import TenantSettings
from schema.windows import AnomalyRecord, Scope, WindowRecord
from streams.notify import metrics
from streams.notify.budget import budget_alerts, month_bounds
from streams.notify.delivery import Deliverer
from streams.notify.evaluate import RuleEvaluator

log = logging.getLogger(__name__)


class SettingsSource(Protocol):
    """Per-tenant settings (`schema.tenants.TenantStore`): the monthly budget."""

    def get_settings(self, tenant_id: str) -> TenantSettings: ...


@dataclass(frozen=True, slots=True)
class Job:
    alert: Alert
    destination: Destination


class Notifier:
    def __init__(
        self,
        store: AlertStore,
        tenants: SettingsSource,
        deliverer: Deliverer,
        evaluator: RuleEvaluator,
        *,
        workers: int = 4,
        max_age_s: float = 900.0,
        sweep_interval_s: float = 30.0,
        orphan_after_s: float | None = None,
    ) -> None:
        self._store = store
        self._tenants = tenants
        self._deliverer = deliverer
        self._evaluator = evaluator
        self._workers = workers
        self._max_age_ns = int(max_age_s * 1e9)
        self._sweep_interval_s = sweep_interval_s
        self._orphan_after_s = (
            orphan_after_s
            if orphan_after_s is not None
            else deliverer.policy.longest_delivery_s + 30
        )
        self._lock = threading.Lock()  # evaluator state and ledger claims
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[tuple[str, str]] = set()  # (alert id, destination id) held here
        self._suppressed_seen = 0
        self.delivered = 0
        self.failed = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._work(), name=f"llmtel-notify-{i}")
            for i in range(self._workers)
        ]
        self._tasks.append(asyncio.create_task(self._sweep(), name="llmtel-notify-sweep"))

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish queued deliveries (at most `timeout_s`), then stop. Unfinished claims stay
        `sending` and are re-sent by the next notifier's sweep."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._deliverer.aclose()

    async def wait_idle(self) -> None:
        """Until every queued delivery has finished (tests, shutdown)."""
        await self._queue.join()

    # -- input -----------------------------------------------------------------------------

    async def on_windows(self, windows: Sequence[WindowRecord]) -> None:
        if windows:
            self._enqueue(await asyncio.to_thread(self._windows, windows, time.time_ns()))

    async def on_anomalies(self, anomalies: Sequence[AnomalyRecord]) -> None:
        if anomalies:
            self._enqueue(await asyncio.to_thread(self._anomalies, anomalies, time.time_ns()))

    def _windows(self, windows: Sequence[WindowRecord], now_ns: int) -> list[Job]:
        jobs: list[Job] = []
        with self._lock:
            for window in windows:
                rules = self._store.rules_for(window.tenant)
                alerts = self._evaluator.observe(window, rules)
                jobs += self._claim(alerts, now_ns)
                if window.scope is Scope.TENANT and window.requests:
                    jobs += self._budget(window.tenant, now_ns)
            self._count_cooldown()
        return jobs

    def _anomalies(self, anomalies: Sequence[AnomalyRecord], now_ns: int) -> list[Job]:
        jobs: list[Job] = []
        with self._lock:
            for record in anomalies:
                rules = self._store.rules_for(record.tenant)
                jobs += self._claim(self._evaluator.observe_anomaly(record, rules), now_ns)
            self._count_cooldown()
        return jobs

    def _count_cooldown(self) -> None:
        seen = self._evaluator.suppressed_cooldown
        if seen > self._suppressed_seen:
            metrics.SUPPRESSED.labels("cooldown").inc(seen - self._suppressed_seen)
            self._suppressed_seen = seen

    def _destinations(self, alert: Alert) -> list[Destination]:
        known = self._store.destinations_for(alert.tenant)
        if alert.destinations:
            wanted = set(alert.destinations)
            return [d for d in known if d.destination_id in wanted]
        return [d for d in known if d.default]

    def _claim(self, alerts: Sequence[Alert], now_ns: int) -> list[Job]:
        jobs: list[Job] = []
        for alert in alerts:
            stale = alert.window_end_ns < now_ns - self._max_age_ns
            if stale and alert.kind is not AlertKind.BUDGET:
                metrics.SUPPRESSED.labels("stale").inc()
                continue
            destinations = self._destinations(alert)
            if not destinations:
                metrics.SUPPRESSED.labels("no_destination").inc()
                continue
            claimed = set(self._store.claim(alert, [d.destination_id for d in destinations]))
            duplicates = len(destinations) - len(claimed)
            if duplicates:
                metrics.SUPPRESSED.labels("duplicate").inc(duplicates)
            jobs += [Job(alert, d) for d in destinations if d.destination_id in claimed]
            if claimed:
                log.info(
                    "alert",
                    extra={
                        "alert": alert.alert_id,
                        "kind": alert.kind.value,
                        "tenant": alert.tenant,
                        "rule": alert.rule_id,
                        "destinations": sorted(claimed),
                    },
                )
        return jobs

    def _budget(self, tenant: str, now_ns: int) -> list[Job]:
        budget = self._tenants.get_settings(tenant).monthly_budget_usd
        if budget is None:
            return []
        start, end = month_bounds(now_ns)
        cost = self._store.month_to_date_cost(tenant, start, end)
        reached = budget_alerts(tenant, cost, budget, now_ns)
        if not reached:
            return []
        highest, lower = reached[0], reached[1:]
        jobs = self._claim([highest], now_ns)
        for alert in lower:  # reached together with a higher level: never sent later
            ids = [d.destination_id for d in self._destinations(alert)]
            for destination_id in self._store.claim(alert, ids):
                self._store.finish(alert, destination_id, "superseded")
                metrics.SUPPRESSED.labels("superseded").inc()
        return jobs

    def _enqueue(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._inflight.add((job.alert.alert_id, job.destination.destination_id))
            metrics.ALERTS.labels(job.alert.kind.value).inc()
            self._queue.put_nowait(job)
        metrics.QUEUE_DEPTH.set(self._queue.qsize())

    # -- delivery --------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            metrics.QUEUE_DEPTH.set(self._queue.qsize())
            pair = (job.alert.alert_id, job.destination.destination_id)
            try:
                status = await self._deliverer.deliver(job.alert, job.destination)
                outcome = "delivered" if status is DeliveryStatus.DELIVERED else "failed"
                await asyncio.to_thread(
                    self._store.finish, job.alert, job.destination.destination_id, outcome
                )
                metrics.DELIVERIES.labels(outcome).inc()
                if status is DeliveryStatus.DELIVERED:
                    self.delivered += 1
                else:
                    self.failed += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivering an alert failed", extra={"alert": pair[0]})
            finally:
                self._inflight.discard(pair)
                self._queue.task_done()

    async def _sweep(self) -> None:
        while True:
            try:
                await self.requeue_orphans()
            except Exception:
                log.exception("re-sending orphaned alert claims failed; will retry")
            await asyncio.sleep(self._sweep_interval_s)

    async def requeue_orphans(self) -> int:
        """Queue claims left `sending` by a notifier that died mid-delivery."""
        orphans = await asyncio.to_thread(self._store.orphaned_claims, self._orphan_after_s)
        jobs: list[Job] = []
        for alert, destination_id in orphans:
            if (alert.alert_id, destination_id) in self._inflight:
                continue
            known = {d.destination_id: d for d in self._store.destinations_for(alert.tenant)}
            destination = known.get(destination_id)
            if destination is None:  # deleted since: nothing to send to
                await asyncio.to_thread(self._store.finish, alert, destination_id, "failed")
                continue
            jobs.append(Job(alert, destination))
        if jobs:
            log.warning("re-sending orphaned alert claims", extra={"count": len(jobs)})
        self._enqueue(jobs)
        return len(jobs)
