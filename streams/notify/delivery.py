"""One alert to one destination over HTTP, with retries.

Policy (pure functions, tested alone):
- 2xx: delivered. 429: retried after `Retry-After` (seconds or an HTTP date; at most
  `max_s`), else backoff. 408 and 5xx, timeouts and connection errors: retried with
  exponential backoff and jitter. Any other 4xx or a 3xx (redirects are not followed): not
  retried, the request itself is wrong. An unsafe URL: not sent, not retried.
- Backoff before attempt n+1: `min(max_s, initial_s * 2**(n-1))`, of which a random half
  is jitter ("equal jitter"), so many notifiers failing together do not retry in step.
- After `max_attempts` attempts: given up (failed).

Every attempt is recorded (`record`, i.e. `alert_deliveries`). Each attempt resolves and
checks the URL again and connects to the checked address (schema/alert_urls.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
import orjson

from schema.alert_urls import Resolver, UnsafeUrl, resolve_url, system_resolver
from schema.alerts import Alert, DeliveryAttempt, DeliveryStatus, Destination, DestinationKind
from streams.notify import metrics
from streams.notify.render import slack_message, webhook_body, webhook_headers

log = logging.getLogger(__name__)

Verdict = Literal["delivered", "retry", "failed"]
MAX_BODY_IN_ERROR = 300


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_s: float = 1.0
    max_s: float = 60.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_s < 0 or self.max_s < 0 or self.timeout_s <= 0:
            raise ValueError("retry policy: max_attempts >= 1, delays >= 0, timeout > 0")

    @property
    def longest_delivery_s(self) -> float:
        """An upper bound on one delivery's duration (all attempts and waits)."""
        return self.max_attempts * (self.timeout_s + self.max_s)


def classify(status: int | None) -> Verdict:
    """What an attempt's HTTP status (None: no answer) means for the delivery."""
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "failed"


def backoff_s(policy: RetryPolicy, attempt: int, rand: float) -> float:
    """Wait after failed attempt `attempt` (1-based): exponential, half of it jitter."""
    ceiling = min(policy.max_s, policy.initial_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + ceiling / 2 * rand


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    retry_after: str | None
    error: str
    latency_s: float


Record = Callable[[DeliveryAttempt], None]


class Deliverer:
    """Sends alerts; `deliver` returns DELIVERED or FAILED once retries are done."""

    def __init__(
        self,
        policy: RetryPolicy,
        allowed_prefixes: Sequence[str],
        base_url: str,
        record: Record,
        *,
        resolver: Resolver = system_resolver,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._allowed = tuple(allowed_prefixes)
        self._base_url = base_url
        self._record = record
        self._resolver = resolver
        self._sleep = sleep
        self._rand = rand
        self._client = httpx.AsyncClient(
            timeout=policy.timeout_s,
            follow_redirects=False,
            headers={"user-agent": "llmtel-notifier"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _payload(self, alert: Alert, destination: Destination) -> tuple[bytes, dict[str, str]]:
        if destination.kind is DestinationKind.SLACK:
            body = orjson.dumps(slack_message(alert, self._base_url))
            return body, {"content-type": "application/json"}
        sent_at = int(time.time())
        body = webhook_body(alert, self._base_url, sent_at)
        return body, webhook_headers(alert, destination.secret, body, sent_at)

    async def _send(self, alert: Alert, destination: Destination) -> Answer:
        started = time.monotonic()
        try:
            target = await asyncio.to_thread(
                resolve_url, destination.url, self._allowed, self._resolver
            )
        except UnsafeUrl as exc:
            return Answer(-1, None, f"unsafe URL: {exc}", 0.0)
        body, headers = self._payload(alert, destination)
        host = httpx.URL(destination.url).netloc.decode("ascii")
        try:
            response = await self._client.post(
                target.pinned,
                content=body,
                headers={**headers, "host": host},
                extensions={"sni_hostname": target.host},
            )
        except httpx.TimeoutException as exc:
            return Answer(None, None, f"timeout: {type(exc).__name__}", time.monotonic() - started)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            return Answer(None, None, error, time.monotonic() - started)
        latency = time.monotonic() - started
        error = "" if response.is_success else response.text[:MAX_BODY_IN_ERROR]
        return Answer(response.status_code, response.headers.get("retry-after"), error, latency)

    async def deliver(self, alert: Alert, destination: Destination) -> DeliveryStatus:
        for attempt in range(1, self.policy.max_attempts + 1):
            answer = await self._send(alert, destination)
            verdict: Verdict = "failed" if answer.status == -1 else classify(answer.status)
            last = attempt == self.policy.max_attempts
            status = {
                "delivered": DeliveryStatus.DELIVERED,
                "retry": DeliveryStatus.FAILED if last else DeliveryStatus.RETRY,
                "failed": DeliveryStatus.FAILED,
            }[verdict]
            metrics.ATTEMPTS.labels(status.value).inc()
            metrics.ATTEMPT_SECONDS.observe(answer.latency_s)
            await self._save(alert, destination, attempt, status, answer)
            if status is not DeliveryStatus.RETRY:
                if status is DeliveryStatus.FAILED:
                    log.warning(
                        "alert delivery failed",
                        extra={
                            "alert": alert.alert_id,
                            "destination": destination.destination_id,
                            "attempts": attempt,
                            "error": answer.error,
                            "http_status": answer.status,
                        },
                    )
                return status
            metrics.RETRIES.inc()
            wait = backoff_s(self.policy, attempt, self._rand())
            if answer.status == 429:
                hinted = retry_after_s(answer.retry_after, datetime.now(UTC))
                if hinted is not None:
                    wait = min(hinted, self.policy.max_s)
            await self._sleep(wait)
        return DeliveryStatus.FAILED  # unreachable: the last attempt returns above

    async def _save(
        self,
        alert: Alert,
        destination: Destination,
        attempt: int,
        status: DeliveryStatus,
        answer: Answer,
    ) -> None:
        record = DeliveryAttempt(
            tenant=alert.tenant,
            alert_id=alert.alert_id,
            rule_id=alert.rule_id,
            destination_id=destination.destination_id,
            kind=alert.kind,
            window_start_ns=alert.window_start_ns,
            window_end_ns=alert.window_end_ns,
            attempt=attempt,
            status=status,
            http_status=max(answer.status or 0, 0),
            latency_ms=answer.latency_s * 1000,
            error=answer.error,
            attempted_at=datetime.now(UTC),
        )
        try:
            await asyncio.to_thread(self._record, record)
        except Exception:
            log.exception("recording a delivery attempt failed", extra={"alert": alert.alert_id})
