"""The distributed hand-off: each accepted request becomes one message on `llmtel.otlp.v1`.

`KafkaHandoff.submit` returns only once the broker has acknowledged the message (acks=all,
idempotent producer), so a success answer to the client means the spans are in Kafka.
Everything else is a retryable refusal that the receivers turn into 503 + Retry-After /
UNAVAILABLE:

- `HandoffUnavailable`: no producer (Kafka unreachable at start, or being reconnected),
  no acknowledgement within `send_timeout_s`, or a delivery that failed;
- `BusFull`: more than `max_pending_bytes` of messages are waiting for acknowledgement.

A request refused after a timeout may still reach Kafka later (the producer keeps retrying
it); the client's retry then stores it twice, which OTLP allows ("Duplicate Data").
Refusal messages reach clients, so they name no internal address; the details go to the
log, at most once per kind and `WARN_EVERY_S`.

The topic must take messages as large as ingest accepts: `schema.topics.ensure_topics`
creates it with that `max.message.bytes` (a broker default of ~1 MiB would refuse larger
requests; each such refusal replaces the producer and is answered 503).

Recovery needs no operator. aiokafka reconnects on its own when the broker comes back; an
idempotent producer that failed a batch has a gap in its sequence numbers and cannot
deliver again, and one whose background sender died is dead, so either is replaced by a
new producer (a background task, with backoff, which also covers Kafka being unreachable
at start).

Per request the work is one protobuf serialisation (`schema.kafka.encode_otlp`), never a
look at single spans. Compression is zstd when the codec is installed (aiokafka needs the
`cramjam` package for zstd and lz4); without it messages travel uncompressed, because
aiokafka's gzip runs at level 9 on the event loop (~140 ms per MiB of OTLP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_zstd
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import Counter, Gauge, Histogram

from ingest.decode import DEFAULT_MAX_BYTES
from schema.kafka import OTLP_TOPIC, encode_otlp
from schema.messages import BusFull, HandoffUnavailable, OtlpMessage
from schema.topics import max_message_bytes

log = logging.getLogger(__name__)

Compression = Literal["zstd", "lz4", "snappy", "gzip"]

DEFAULT_SEND_TIMEOUT_S = 5.0
DEFAULT_LINGER_MS = 5
DEFAULT_BATCH_BYTES = 1024 * 1024  # per partition; one request larger than this goes alone
DEFAULT_MAX_PENDING_BYTES = 128 * 1024 * 1024
RECONNECT_BACKOFF_S = (0.1, 5.0)  # first and longest wait between connection attempts

PRODUCED_MESSAGES = Counter(
    "llmtel_kafka_produced_messages",
    "Messages ingest handed to Kafka and the broker acknowledged.",
    ["topic"],
)
PRODUCED_BYTES = Counter(
    "llmtel_kafka_produced_bytes",
    "Value bytes (uncompressed protobuf) of acknowledged messages.",
    ["topic"],
)
PRODUCE_SECONDS = Histogram(
    "llmtel_kafka_produce_duration_seconds",
    "From submit to the broker's acknowledgement, for acknowledged messages.",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PRODUCE_FAILURES = Counter(
    "llmtel_kafka_produce_failures",
    "Submits refused with 503/UNAVAILABLE: reason is unavailable (no producer), timeout "
    "(no acknowledgement in time), failed (delivery error) or full (too much pending).",
    ["topic", "reason"],
)
PENDING_BYTES = Gauge(
    "llmtel_kafka_pending_bytes",
    "Value bytes handed to the producer and not yet acknowledged or failed.",
    ["topic"],
)
PRODUCER_RESTARTS = Counter(
    "llmtel_kafka_producer_restarts",
    "Kafka producers replaced after a failure (each start after the first).",
    ["topic"],
)


def default_compression() -> Compression | None:
    """zstd when aiokafka can use it (the `cramjam` package), else none (see module doc)."""
    return "zstd" if has_zstd() else None


DEFAULT_COMPRESSION = default_compression()
WARN_EVERY_S = 10.0  # one log line per kind of refusal and interval, not one per request
NOT_CONNECTED = "not connected to the message bus (Kafka)"


class KafkaHandoff:
    """An `ingest.ports.Handoff` that produces to Kafka; `start()` it, then `stop()` it."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = OTLP_TOPIC,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        max_request_bytes: int = DEFAULT_MAX_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        compression: Compression | None = DEFAULT_COMPRESSION,
        linger_ms: int = DEFAULT_LINGER_MS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        retry_after_s: float = 1.0,
        client_id: str = "llmtel-ingest",
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.compression = compression
        self._send_timeout_s = send_timeout_s
        self._max_message_bytes = max_message_bytes(max_request_bytes)
        self._max_pending_bytes = max_pending_bytes
        self._linger_ms = linger_ms
        self._batch_bytes = batch_bytes
        self._retry_after_s = retry_after_s
        self._client_id = client_id

        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._warned: dict[str, float] = {}
        self._started_producers = 0
        self._pending_bytes = 0
        self._closed = False

        self._produced = PRODUCED_MESSAGES.labels(topic)
        self._produced_bytes = PRODUCED_BYTES.labels(topic)
        self._seconds = PRODUCE_SECONDS.labels(topic)
        self._pending_gauge = PENDING_BYTES.labels(topic)
        self._restarts = PRODUCER_RESTARTS.labels(topic)
        self._failures = {
            reason: PRODUCE_FAILURES.labels(topic, reason)
            for reason in ("unavailable", "timeout", "failed", "full")
        }

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """A producer is up (for readiness); says nothing about the broker right now."""
        return self._producer is not None and not self._closed

    async def start(self, wait_s: float | None = None) -> None:
        """Connect to Kafka; keeps trying in the background if it is not reachable yet.

        Until the first connection succeeds, `submit` refuses with `HandoffUnavailable`.
        `wait_s` waits that long for the first connection (no error if it is not made).
        """
        if self._closed:
            raise RuntimeError("KafkaHandoff cannot be restarted after stop()")
        if self.compression is None and not has_zstd():
            log.warning("Kafka messages go uncompressed: install the `cramjam` package for zstd")
        self._reconnect()
        if wait_s and self._connecting is not None:
            await asyncio.wait({self._connecting}, timeout=wait_s)

    async def stop(self) -> None:
        """Flush what the producer holds (bounded by the send timeout), then close it."""
        if self._closed:
            return
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._close(producer)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _reconnect(self, broken: AIOKafkaProducer | None = None) -> None:
        """Replace the producer (once, however many submits notice it is broken)."""
        if broken is not None and broken is self._producer:
            self._producer = None
            task = asyncio.create_task(self._close(broken), name="llmtel-kafka-close")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if self._closed or self._producer is not None:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.create_task(self._connect(), name="llmtel-kafka-connect")

    async def _connect(self) -> None:
        backoff, longest = RECONNECT_BACKOFF_S
        while not self._closed:
            producer = self._new_producer()
            try:
                async with asyncio.timeout(max(self._send_timeout_s, 5.0)):
                    await producer.start()
            except asyncio.CancelledError:  # stop() while connecting
                await self._close(producer, flush=False)
                raise
            except Exception as exc:  # KafkaConnectionError, OSError, TimeoutError, ...
                log.warning(
                    "cannot connect to Kafka at %s (%r); retrying in %.1f s",
                    self.bootstrap,
                    exc,
                    backoff,
                )
                await self._close(producer, flush=False)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, longest)
                continue
            if self._started_producers:
                self._restarts.inc()
            self._started_producers += 1
            self._producer = producer
            self._warned.clear()
            log.info(
                "Kafka producer connected to %s (topic %s, compression %s)",
                self.bootstrap,
                self.topic,
                self.compression or "none",
            )
            return

    def _new_producer(self) -> AIOKafkaProducer:
        request_timeout_ms = int(max(self._send_timeout_s, 1.0) * 1000)
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=self.compression,
            linger_ms=self._linger_ms,
            max_batch_size=self._batch_bytes,
            max_request_size=self._max_message_bytes,
            # bounds waiting for metadata and for room in a full batch, and each produce
            # request; an unanswered one is retried, submit gives up after send_timeout_s
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=100,
        )

    async def _close(self, producer: AIOKafkaProducer, *, flush: bool = True) -> None:
        """Stop `producer`, giving it one send timeout to deliver what it holds."""
        bound = self._send_timeout_s + 1.0
        if flush:
            try:
                async with asyncio.timeout(bound):
                    await producer.flush()
            except TimeoutError:
                log.warning(
                    "Kafka at %s did not acknowledge every pending message before the producer "
                    "closed; their requests were refused (503) and will be retried by clients",
                    self.bootstrap,
                )
                await _abandon(producer, bound)
        try:
            async with asyncio.timeout(bound):
                await producer.stop()
        except Exception:
            log.warning("closing a Kafka producer failed", exc_info=True)

    # -- the hand-off ----------------------------------------------------------------------

    def full(self) -> float | None:
        """Retry-after while unacknowledged messages fill `max_pending_bytes`."""
        if self._pending_bytes >= self._max_pending_bytes:
            return self._retry_after_s
        return None

    async def submit(self, message: OtlpMessage) -> None:
        """Produce `message`; return once the broker acknowledged it (see module doc)."""
        if self._closed:
            self._failures["unavailable"].inc()
            raise HandoffUnavailable("llmtel ingest is shutting down; retry another instance")
        producer = self._producer
        if producer is None:
            self._reconnect()
            self._failures["unavailable"].inc()
            raise HandoffUnavailable(NOT_CONNECTED)
        record = encode_otlp(message)
        size = len(record.value)
        if self._pending_bytes and self._pending_bytes + size > self._max_pending_bytes:
            self._failures["full"].inc()
            raise BusFull(self._retry_after_s)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        deadline = loop.time() + self._send_timeout_s
        self._hold(size)
        try:
            async with asyncio.timeout_at(deadline):
                delivery = await producer.send(
                    self.topic, record.value, key=record.key, headers=record.headers
                )
        except (TimeoutError, KafkaTimeoutError):
            self._release(size)
            self._failures["timeout"].inc()
            self._warn(
                "send",
                "Kafka at %s did not take messages for topic %s within %g s: is the broker "
                "up, and does the topic exist (`llmtel migrate` creates it)?",
                self.bootstrap,
                self.topic,
                self._send_timeout_s,
            )
            raise HandoffUnavailable(
                f"the message bus (Kafka) did not take the request within "
                f"{self._send_timeout_s:g} s"
            ) from None
        except MessageSizeTooLargeError as exc:  # cannot happen below the ingest size limit
            self._release(size)
            self._failures["failed"].inc()
            log.error("Kafka producer refused a message: %s", exc)
            raise HandoffUnavailable("the request is too large for the message bus") from exc
        except KafkaError as exc:  # the producer is dead (its sender failed) or closed
            self._release(size)
            self._failures["failed"].inc()
            self._replace(producer, exc)
            raise HandoffUnavailable("the message bus (Kafka) producer failed") from exc
        except BaseException:  # cancelled: the message was not queued
            self._release(size)
            raise
        delivery.add_done_callback(lambda done: self._delivered(producer, size, done))
        # wait without cancelling: a cancelled delivery future would hide the outcome
        done, _ = await asyncio.wait({delivery}, timeout=max(deadline - loop.time(), 0))
        if not done:
            self._failures["timeout"].inc()
            self._warn(
                "ack",
                "Kafka at %s did not acknowledge within %g s (requests are refused with 503)",
                self.bootstrap,
                self._send_timeout_s,
            )
            raise HandoffUnavailable(
                f"the message bus (Kafka) did not acknowledge within {self._send_timeout_s:g} s"
            )
        error = delivery.exception()
        if error is not None:  # `_delivered` logged it and replaces the producer
            self._failures["failed"].inc()
            raise HandoffUnavailable("the message bus (Kafka) did not store the request") from error
        self._seconds.observe(time.perf_counter() - started)
        self._produced.inc()
        self._produced_bytes.inc(size)

    def _delivered(
        self, producer: AIOKafkaProducer, size: int, delivery: asyncio.Future[object]
    ) -> None:
        """A message left the producer, acknowledged or failed (even after submit gave up)."""
        self._release(size)
        if delivery.cancelled():
            return
        error = delivery.exception()  # also marks it retrieved
        if error is not None:
            # an idempotent producer that failed a batch has spent its sequence numbers:
            # the next batch of that partition would fail too, so it is replaced
            self._replace(producer, error)

    def _replace(self, producer: AIOKafkaProducer, error: BaseException) -> None:
        if producer is self._producer:
            log.warning(
                "Kafka at %s did not store a message for topic %s (%r); replacing the producer",
                self.bootstrap,
                self.topic,
                error,
            )
        self._reconnect(broken=producer)

    def _warn(self, kind: str, text: str, *args: object) -> None:
        now = time.monotonic()
        last = self._warned.get(kind)
        if last is None or now - last >= WARN_EVERY_S:
            self._warned[kind] = now
            log.warning(text, *args)

    def _hold(self, size: int) -> None:
        self._pending_bytes += size
        self._pending_gauge.set(self._pending_bytes)

    def _release(self, size: int) -> None:
        self._pending_bytes -= size
        self._pending_gauge.set(self._pending_bytes)


async def _abandon(producer: AIOKafkaProducer, bound: float) -> None:
    """Fail what `producer` still holds, so that its `stop()` (which waits for every
    delivery, without a bound) returns and every submit's delivery future resolves.

    aiokafka (0.14) has no public way to do this, hence the private attributes: the sender
    is stopped first (it would re-queue batches it is retrying), and batches it had taken
    and re-queued are put back into the pending set, which their done-callback removes
    them from, before `fail_all` fails everything.
    """
    sender = producer._sender.sender_task
    if sender is not None and not sender.done():
        sender.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await asyncio.gather(sender, return_exceptions=True)
    accumulator = producer._message_accumulator
    queued = [batch for batches in accumulator._batches.values() for batch in batches]
    accumulator._pending_batches.update(queued)
    accumulator.fail_all(HandoffUnavailable("the Kafka producer was closed"))
    for batch in queued:  # nobody waits for these any more: mark their errors as seen
        if batch._drain_waiter.done():
            batch._drain_waiter.exception()
