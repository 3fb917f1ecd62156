"""The `llmtel sink` role: Kafka -> ClickHouse, each message stored exactly once.

A consumer-group consumer of `llmtel.otlp.v1` (spans), `llmtel.windows.v1` and
`llmtel.anomalies.v1`, shaped as the chain decode -> batch -> write -> commit (Sentry
Arroyo's `RunTask` / `Reduce` / `CommitOffsets`):

- **decode**: `schema.kafka.decode_otlp`, then the same pure normaliser as embedded mode, in
  a worker thread so the event loop keeps heartbeating. A message that breaks the contract
  (headers, protobuf, a record that is not valid JSON of its version) or that the normaliser
  cannot handle goes to the dead-letter topic with `llmtel-dlq-reason` and
  `llmtel-dlq-source: topic/partition/offset`; the consumer keeps going and the message's
  offset is committed with its batch once the DLQ acknowledged it.
- **batch**: by rows (`max_rows`, cut at message boundaries) and by time (`max_wait_s`
  after the batch's first message), across all assigned partitions.
- **write**: one insert per table; failures are retried with backoff, never skipped. Writing
  batch N overlaps decoding batch N+1; at most one write is in flight.
- **commit**: offsets are committed only after their batch is stored, at most every
  `commit_interval_s`; on shutdown and when partitions are revoked the current batch is
  flushed and committed first.

Exactly once, not at least once
-------------------------------
A crash (or a lost group membership) between a batch's insert and its commit redelivers the
batch's messages. They must not be counted twice, in `otel_traces` nor in the rollup and
trace-id views fed from it. ClickHouse deduplicates an insert whose
`insert_deduplication_token` it has seen among a table's last
`non_replicated_deduplication_window` blocks (migration 0006 sets the window on the span table
and on both view targets), and with `deduplicate_blocks_in_dependent_materialized_views = 1`
a deduplicated block is not counted again in the views either. Plain SQL settings, so chDB
and a ClickHouse server behave the same.

A token only helps if the redelivered batch is inserted under the same token, which means
exactly the same messages, and time-based batching cuts batches where the clock says. So
the cuts are written down: before a batch is inserted, its exact extent, one
`[start, end)` offset range per topic-partition, and its token go into `sink_batches`
(one row per partition, keyed by group/topic/partition/start offset). Every batch that
advances an offset is recorded, so for each partition the recorded batches form a chain:
each starts where the previous one ended. When partitions are assigned (start-up or a
rebalance) the sink looks, for each partition, for a recorded batch starting at the
partition's committed offset (or the log start, if nothing was committed). Such a batch was
recorded but its commit did not happen; it may or may not have been inserted. The sink reads
exactly its ranges again (all its partitions, also those now owned by another member, with a
separate group-less reader), rebuilds it, inserts it under its original token - a no-op if it
had been stored - and follows the chain: throttled commits can leave several batches behind.
Then it commits the partition past the chain and consumes from there. Two members that both
replay a batch spanning their partitions insert it twice under one token: stored once.
(Why ClickHouse and not Kafka commit metadata: the record must exist before the insert, for
every batch, including the several a throttled commit leaves uncommitted; Kafka keeps one
offset and metadata string per partition, and writing it would cost a commit per batch.)

Limits: a replay deduplicates only while ClickHouse remembers the token (the last 10 000
blocks per table: 40 minutes of sink inserts at 4 batches a second, while a replay comes
within seconds of the rebalance that calls for it). A member that lost its
membership without noticing (a pause longer than the session timeout) can still insert a
batch the new owner also stores - Kafka cannot fence a ClickHouse write; before flushing on
revocation the sink checks its membership with a commit to narrow that window. Dead letters
are delivered at least once (a replayed batch sends its dead letters again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import Counter, Gauge

from schema.clickhouse import Database
from schema.kafka import (
    DLQ_TOPIC,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    OTLP_TOPIC,
    ContractError,
    decode_otlp,
)
from schema.models import TenantSettings
from schema.spans import SPAN_COLUMNS, SPANS_TABLE
from schema.window_store import insert_anomalies, insert_windows
from schema.windows import ANOMALIES_TOPIC, WINDOWS_TOPIC, AnomalyRecord, WindowRecord
from streams import metrics
from streams.native_prepare import prepare_block
from streams.prepare import Job, PreparedBlock
from streams.pricing import Pricer

log = logging.getLogger(__name__)

BATCHES_TABLE = "sink_batches"
# every span insert of the sink; the token is added per batch
DEDUP_SETTINGS: Mapping[str, Any] = {
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}
MAX_REASON_CHARS = 1000

CONSUMER_LAG = Gauge(
    "llmtel_sink_consumer_lag",
    "Messages of a partition not yet taken by the sink (high watermark - position).",
    ["topic", "partition"],
)
DLQ_MESSAGES = Counter(
    "llmtel_dlq_messages_total",
    "Messages the sink set aside on the dead-letter topic, by reason.",
    ["reason"],
)
REPLAYED_BATCHES = Counter(
    "llmtel_sink_batches_replayed_total",
    "Recorded but uncommitted batches rebuilt after a restart or rebalance and inserted again "
    "under their original deduplication token (ClickHouse drops them if they were stored).",
)

T = TypeVar("T")


class SettingsSource(Protocol):
    """Where per-tenant settings come from (`schema.tenants.TenantStore`)."""

    def get_settings(self, tenant_id: str) -> TenantSettings: ...


@dataclass(frozen=True, slots=True)
class SinkTopics:
    """The topics the sink reads and dead-letters to (the contract's names by default)."""

    otlp: str = OTLP_TOPIC
    windows: str = WINDOWS_TOPIC
    anomalies: str = ANOMALIES_TOPIC
    dlq: str = DLQ_TOPIC

    @classmethod
    def prefixed(cls, prefix: str) -> SinkTopics:
        """The contract's names behind `prefix` (isolated topics for tests)."""
        names = (OTLP_TOPIC, WINDOWS_TOPIC, ANOMALIES_TOPIC, DLQ_TOPIC)
        return cls(*(prefix + name for name in names))

    @property
    def consumed(self) -> tuple[str, str, str]:
        return (self.otlp, self.windows, self.anomalies)


# -- batches ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Range:
    """What a batch took from one partition: positions `[start, end)` and its first record."""

    start: int
    end: int
    first_offset: int
    first_timestamp_ms: int


@dataclass(slots=True)
class _DeadLetter:
    reason: str  # low-cardinality category, the metric's label
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    delivery: asyncio.Future[Any] | None = None


class PreparationFailed(Exception):
    """A span message could not be turned into rows; the message says why."""


@dataclass(slots=True)
class _Decoded:
    """One consumed message, decoded: rows to store, or a dead letter."""

    tp: Any  # TopicPartition
    offset: int
    timestamp_ms: int
    spans: PreparedBlock | None = None
    window: WindowRecord | None = None
    anomaly: AnomalyRecord | None = None
    dead: _DeadLetter | None = None


@dataclass(slots=True)
class _Batch:
    ranges: dict[Any, _Range] = field(default_factory=dict)
    blocks: list[bytes] = field(default_factory=list)  # Native blocks: one insert, one part
    span_rows: int = 0
    unpriced: int = 0
    windows: list[WindowRecord] = field(default_factory=list)
    anomalies: list[AnomalyRecord] = field(default_factory=list)
    dead: list[_DeadLetter] = field(default_factory=list)
    messages: int = 0
    opened: float = 0.0  # monotonic time of the first message

    @property
    def rows(self) -> int:
        return self.span_rows + len(self.windows) + len(self.anomalies)

    def take(self, item: _Decoded) -> None:
        """Add the item's content (not its offset: see `KafkaSink._add`)."""
        if not self.messages:
            self.opened = time.monotonic()
        self.messages += 1
        if item.spans is not None and item.spans.rows:
            self.blocks.append(item.spans.block)
            self.span_rows += item.spans.rows
            self.unpriced += item.spans.unpriced
        if item.window is not None:
            self.windows.append(item.window)
        if item.anomaly is not None:
            self.anomalies.append(item.anomaly)
        if item.dead is not None:
            self.dead.append(item.dead)


def _ranges_json(ranges: Mapping[Any, _Range]) -> str:
    return orjson.dumps(
        [
            [tp.topic, tp.partition, r.start, r.end, r.first_offset, r.first_timestamp_ms]
            for tp, r in sorted(ranges.items())
        ]
    ).decode()


def _ranges_from_json(text: str) -> dict[Any, _Range]:
    return {
        TopicPartition(topic, int(partition)): _Range(int(start), int(end), int(first), int(ts))
        for topic, partition, start, end, first, ts in orjson.loads(text)
    }


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: KafkaSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self._sink._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self._sink._on_assigned(assigned)


class KafkaSink:
    """Consume the pipeline's topics into ClickHouse (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        tenants: SettingsSource,
        pricer: Pricer,
        bootstrap: str,
        group_id: str,
        *,
        max_rows: int = 20_000,
        max_wait_s: float = 0.25,
        topics: SinkTopics | None = None,
        commit_interval_s: float = 1.0,
        max_records: int = 100,
        poll_s: float = 0.5,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        shutdown_timeout_s: float = 30.0,
        replay_read_timeout_s: float = 30.0,
        consumer_config: Mapping[str, Any] | None = None,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._db = db
        self._tenants = tenants
        self._pricer = pricer
        self._bootstrap = bootstrap
        self.group_id = group_id
        self.topics = topics or SinkTopics()
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._commit_interval_s = commit_interval_s
        self._max_records = max_records
        self._poll_s = poll_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._replay_read_timeout_s = replay_read_timeout_s
        self._consumer_config = dict(consumer_config or {})
        self._producer_config = dict(producer_config or {})

        self._consumer: Any = None
        self._producer: Any = None
        self._lock = asyncio.Lock()  # the batch, positions and commits; held by callbacks
        self._batch = _Batch()
        self._inflight: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._position: dict[Any, int] = {}  # next offset to take, per assigned partition
        self._pending: dict[Any, int] = {}  # stored, not yet committed
        self._last_commit = 0.0
        self._stopping_since: float | None = None

        self.stored_spans = 0
        self.stored_batches = 0
        self.replayed_batches = 0
        self.dead_letters = 0
        # test hook: called after a batch is stored and before its offsets may be committed
        self.before_commit: Callable[[], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            client_id=f"llmtel-sink-dlq-{self.group_id}",
            **self._producer_config,
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group_id,
            client_id=f"llmtel-sink-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self._consumer_config,
        )
        await self._producer.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise
        self._consumer.subscribe(list(self.topics.consumed), listener=_Listener(self))
        self._last_commit = time.monotonic()  # throttled from the start
        log.info(
            "sink started",
            extra={"group": self.group_id, "topics": list(self.topics.consumed)},
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then store and commit what was taken, and stop.

        On an error, stop without committing anything more: the uncommitted messages are
        redelivered (and deduplicated) to whoever takes the partitions next.
        """
        await self.start()
        watcher = asyncio.create_task(self._watch(stop))
        try:
            while not stop.is_set():
                await self._step()
        except BaseException:
            await self.abort()
            raise
        finally:
            watcher.cancel()
        await self.close()

    async def run_until_idle(self, timeout_s: float = 30.0) -> None:
        """Consume until every assigned partition is taken up to its end, stored and
        committed (for tests and benchmarks). Starts the sink if needed; does not stop it."""
        await self.start()
        async with asyncio.timeout(timeout_s):
            while True:
                taken = await self._step()
                if taken or not self._drained():
                    continue
                assigned = self._consumer.assignment()
                if not assigned:
                    continue
                ends = await self._consumer.end_offsets(list(assigned))
                if all(self._position.get(tp, -1) >= end for tp, end in ends.items()):
                    return

    async def close(self) -> None:
        """Store the current batch, commit, and stop (what `run` does when told to stop)."""
        if self._consumer is None:
            return
        self._stopping_since = self._stopping_since or time.monotonic()
        try:
            async with asyncio.timeout(self._shutdown_timeout_s), self._lock:
                self._raise_failure()
                await self._finish_inflight()
                if self._batch.messages:
                    await self._start_flush()
                    await self._finish_inflight()
                await self._maybe_commit(force=True)
        except TimeoutError:
            log.error(
                "shutdown: the last batch could not be stored in time; its messages stay "
                "uncommitted and will be redelivered",
                extra={"timeout_s": self._shutdown_timeout_s},
            )
        finally:
            await self._stop_clients()
        log.info("sink stopped", extra={"stored_spans": self.stored_spans})

    async def abort(self) -> None:
        """Stop without storing or committing anything more (as a crash would)."""
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        for client in (consumer, producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:
                    log.warning("stopping a Kafka client failed", exc_info=True)
        for tp in list(self._position):
            self._forget_lag(tp)
        self._position.clear()

    async def _watch(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping_since = time.monotonic()

    # -- the chain: decode -> batch -> write -> commit --------------------------------------

    async def _step(self) -> int:
        """One poll: take what arrived, batch it, start a write and commit when due."""
        fetched = await self._consumer.getmany(
            timeout_ms=self._poll_timeout_ms(), max_records=self._max_records
        )
        async with self._lock:
            self._raise_failure()
            records = self._accept(fetched)
            if records:
                decoded = await self._retry("decode", functools.partial(self._decode, records))
                for item in decoded:
                    await self._add(item)
            if self._batch.messages and self._batch_due():
                await self._start_flush()
            await self._maybe_commit()
            self._update_lag()
        return len(records)

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        wait = self._poll_s
        if self._batch.messages:
            wait = min(wait, self._batch.opened + self._max_wait_s - now)
        if self._pending:
            wait = min(wait, self._last_commit + self._commit_interval_s - now)
        return max(0, int(wait * 1000))

    def _batch_due(self) -> bool:
        return (
            self._batch.rows >= self._max_rows
            or time.monotonic() - self._batch.opened >= self._max_wait_s
        )

    def _accept(self, fetched: Mapping[Any, Sequence[Any]]) -> list[Any]:
        """The fetched records to take: those of assigned partitions at or after the
        position. Older ones are leftovers of a fetch from before a seek or rebalance."""
        accepted = []
        for tp, records in fetched.items():
            expected = self._position.get(tp)
            if expected is None:
                continue  # not (yet) ours: the assignment callback seeks it
            for record in records:
                if record.offset >= expected:
                    accepted.append(record)
                    expected = record.offset + 1
        return accepted

    async def _add(self, item: _Decoded) -> None:
        tp = item.tp
        if tp not in self._batch.ranges:
            # the range starts at the position, not at the record: offsets between (gaps from
            # compaction or transaction markers) belong to this batch, so batches chain
            self._batch.ranges[tp] = _Range(
                self._position[tp], item.offset + 1, item.offset, item.timestamp_ms
            )
        else:
            self._batch.ranges[tp].end = item.offset + 1
        self._position[tp] = item.offset + 1
        if item.dead is not None:
            await self._send_dead_letter(item.dead)
        self._batch.take(item)
        if self._batch.rows >= self._max_rows:
            await self._start_flush()

    async def _start_flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        await self._finish_inflight()
        self._inflight = asyncio.create_task(self._flush(batch), name="llmtel-sink-flush")

    async def _finish_inflight(self) -> None:
        task, self._inflight = self._inflight, None
        if task is None:
            return
        try:
            await task
        except BaseException as exc:
            self._failure = self._failure or exc
            raise

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._inflight is not None and self._inflight.done():
            task, self._inflight = self._inflight, None
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                self._failure = failure
                raise failure

    def _drained(self) -> bool:
        return not self._batch.messages and self._inflight is None and not self._pending

    async def _flush(self, batch: _Batch, batch_id: str | None = None) -> None:
        """Record, insert, deliver dead letters; then the offsets may be committed."""
        replay = batch_id is not None
        token = batch_id or uuid.uuid4().hex
        await self._retry("insert", functools.partial(self._store, batch, token, not replay))
        await self._deliver_dead_letters(batch)
        if self.before_commit is not None:
            self.before_commit()
        for tp, r in batch.ranges.items():
            self._pending[tp] = max(self._pending.get(tp, 0), r.end)
        if not replay:
            metrics.INSERT_ROWS.inc(batch.span_rows)
            if batch.unpriced:
                metrics.UNPRICED_SPANS.inc(batch.unpriced)
        self.stored_spans += batch.span_rows
        self.stored_batches += 1

    def _store(self, batch: _Batch, token: str, record: bool) -> None:
        """Runs in a worker thread; every step is idempotent, so a retry redoes all."""
        if record and batch.ranges:
            self._record(batch.ranges, token)
        if batch.span_rows:
            started = time.perf_counter()
            self._db.insert_native(
                SPANS_TABLE,
                SPAN_COLUMNS,
                b"".join(batch.blocks),
                settings={**DEDUP_SETTINGS, "insert_deduplication_token": token},
            )
            metrics.INSERT_SECONDS.observe(time.perf_counter() - started)
        # ReplacingMergeTree on the records' natural keys: a second copy is merged away
        insert_windows(self._db, batch.windows)
        insert_anomalies(self._db, batch.anomalies)

    def _record(self, ranges: Mapping[Any, _Range], token: str) -> None:
        text = _ranges_json(ranges)
        items = sorted(ranges.items())
        self._db.insert_columns(
            BATCHES_TABLE,
            [
                [self.group_id] * len(items),
                [tp.topic for tp, _ in items],
                [tp.partition for tp, _ in items],
                [r.start for _, r in items],
                [r.end for _, r in items],
                [token] * len(items),
                [text] * len(items),
            ],
            ("GroupId", "Topic", "Partition", "StartOffset", "EndOffset", "BatchId", "Ranges"),
        )

    async def _maybe_commit(self, force: bool = False) -> None:
        if not self._pending or self._consumer is None:
            return
        now = time.monotonic()
        if not force and now < self._last_commit + self._commit_interval_s:
            return
        self._last_commit = now
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in self._pending.items() if tp in assigned}
        for tp in set(self._pending) - set(offsets):
            del self._pending[tp]  # no longer ours: its new owner replays from sink_batches
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # kept: committed on the next attempt, or replayed by the partition's next owner
            log.warning("offset commit failed", extra={"error": repr(exc)})
            return
        for tp, offset in offsets.items():
            if self._pending.get(tp) == offset:
                del self._pending[tp]

    # -- decode (worker thread) --------------------------------------------------------------

    def _decode(self, records: Sequence[Any]) -> list[_Decoded]:
        started = time.perf_counter()
        decoded = [self._decode_one(record) for record in records]
        metrics.PROCESS_SECONDS.observe(time.perf_counter() - started)
        return decoded

    def _decode_one(self, record: Any) -> _Decoded:
        tp = TopicPartition(record.topic, record.partition)
        item = _Decoded(tp, record.offset, record.timestamp)
        value: bytes | None = record.value
        headers = list(record.headers or ())
        if record.topic == self.topics.otlp:
            try:
                message = decode_otlp(value, headers)
            except ContractError as exc:
                item.dead = self._dead_letter(record, "contract", str(exc))
                return item
            # not guarded: a failing settings lookup is ClickHouse being away, not bad input
            settings = self._tenants.get_settings(message.tenant_id)
            assert value is not None  # decode_otlp refuses a missing value
            # compiled (streams.native_prepare); no window sums: the faust workers keep windows
            types = self._db.column_types(SPANS_TABLE, SPAN_COLUMNS)
            job = Job(message.tenant_id, message.received_at_ns, value, settings)
            try:
                prepared = prepare_block([job], types, 0, self._pricer)
                if prepared.failures:
                    raise PreparationFailed(prepared.failures[0][1])
                item.spans = prepared
            except Exception as exc:
                log.exception(
                    "message could not be normalised; sent to the dead-letter topic",
                    extra={"source": _source(record), "tenant": message.tenant_id},
                )
                item.dead = self._dead_letter(record, "normalize", f"{type(exc).__name__}: {exc}")
            return item
        try:
            if value is None:
                raise ValueError("message has no value")
            if record.topic == self.topics.windows:
                item.window = WindowRecord.from_json(value)
            else:
                item.anomaly = AnomalyRecord.from_json(value)
        except Exception as exc:
            item.dead = self._dead_letter(record, "record", f"{type(exc).__name__}: {exc}")
        return item

    def _dead_letter(self, record: Any, reason: str, detail: str) -> _DeadLetter:
        original = [
            (name, raw)
            for name, raw in (record.headers or ())
            if name not in (HEADER_DLQ_REASON, HEADER_DLQ_SOURCE)
        ]
        text = f"{reason}: {detail}"[:MAX_REASON_CHARS]
        return _DeadLetter(
            reason,
            record.key,
            record.value,
            [
                *original,
                (HEADER_DLQ_REASON, text.encode()),
                (HEADER_DLQ_SOURCE, _source(record).encode()),
            ],
        )

    # -- dead letters ------------------------------------------------------------------------

    async def _send_dead_letter(self, dead: _DeadLetter) -> None:
        try:
            dead.delivery = await self._producer.send(
                self.topics.dlq, value=dead.value, key=dead.key, headers=dead.headers
            )
        except KafkaError:
            dead.delivery = None  # sent again before the batch is committed

    async def _deliver_dead_letters(self, batch: _Batch) -> None:
        """Every dead letter of the batch acknowledged by the DLQ, or retried until it is."""
        for dead in batch.dead:
            delay = self._retry_initial_s
            while True:
                try:
                    if dead.delivery is None:
                        await self._send_dead_letter(dead)
                    if dead.delivery is not None:
                        await dead.delivery
                        break
                except KafkaError as exc:
                    dead.delivery = None
                    log.warning(
                        "dead letter not delivered; retrying",
                        extra={"error": repr(exc), "retry_s": delay},
                    )
                self._give_up_if_stopping()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
            DLQ_MESSAGES.labels(dead.reason).inc()
            self.dead_letters += 1

    # -- retries ----------------------------------------------------------------------------

    async def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()` in a worker thread, retried with backoff until it succeeds."""
        delay = self._retry_initial_s
        while True:
            try:
                return await asyncio.to_thread(fn)
            except Exception:
                if what == "insert":
                    metrics.INSERT_FAILURES.inc()
                log.exception(f"sink {what} failed; retrying", extra={"retry_s": delay})
            self._give_up_if_stopping()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)

    def _give_up_if_stopping(self) -> None:
        since = self._stopping_since
        if since is not None and time.monotonic() - since > self._shutdown_timeout_s:
            raise TimeoutError("shutting down: gave up retrying")

    # -- rebalancing ------------------------------------------------------------------------

    async def _on_revoked(self, revoked: set[Any]) -> None:
        async with self._lock:
            try:
                await self._finish_inflight()
                if self._batch.messages:
                    if await self._still_member():
                        await self._start_flush()
                        await self._finish_inflight()
                    else:
                        log.warning(
                            "lost group membership: dropping the current batch, the "
                            "partitions' new owners take its messages",
                            extra={"messages": self._batch.messages},
                        )
                await self._maybe_commit(force=True)
            except Exception as exc:
                self._failure = self._failure or exc
                log.exception("flushing on partition revocation failed")
            finally:
                self._batch = _Batch()
                self._pending.clear()
                for tp in list(self._position):
                    self._forget_lag(tp)
                self._position.clear()

    async def _still_member(self) -> bool:
        """Commit what is stored plus the current batch's start positions (stored too):
        a useful commit, and a refusal means another member owns the partitions now."""
        offsets = dict(self._pending)
        offsets.update({tp: r.start for tp, r in self._batch.ranges.items()})
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            return False
        except KafkaError:
            log.warning("membership check commit failed; flushing anyway", exc_info=True)
        return True

    async def _on_assigned(self, assigned: set[Any]) -> None:
        async with self._lock:
            try:
                await self._recover(assigned)
            except Exception as exc:
                self._failure = self._failure or exc
                log.exception("recovering assigned partitions failed")

    async def _recover(self, assigned: set[Any]) -> None:
        """Replay recorded but uncommitted batches, then start each partition after them."""
        starts: dict[Any, int] = {}
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            if committed is None:
                committed = (await self._consumer.beginning_offsets([tp]))[tp]
            starts[tp] = int(committed)
        positions = dict(starts)
        replayed: set[str] = set()
        reader: Any = None
        try:
            for tp in sorted(assigned):
                while True:
                    found = await self._retry(
                        "recovery lookup", functools.partial(self._recorded, tp, positions[tp])
                    )
                    if found is None:
                        break
                    batch_id, ranges = found
                    if batch_id not in replayed:
                        if reader is None:
                            reader = await self._start_reader()
                        if not await self._replay(reader, batch_id, ranges):
                            break
                        replayed.add(batch_id)
                    positions[tp] = ranges[tp].end
        finally:
            if reader is not None:
                await reader.stop()
        self._pending = {tp: positions[tp] for tp in assigned if positions[tp] > starts[tp]}
        for tp in assigned:
            self._position[tp] = positions[tp]
            self._consumer.seek(tp, positions[tp])
        await self._maybe_commit(force=True)
        if replayed:
            log.info(
                "replayed uncommitted batches",
                extra={"batches": len(replayed), "partitions": len(assigned)},
            )

    def _recorded(self, tp: Any, start: int) -> tuple[str, dict[Any, _Range]] | None:
        """The recorded batch that starts at `start` in partition `tp`, if any."""
        rows = self._db.query(
            f"SELECT DISTINCT BatchId, Ranges FROM {self._db.table(BATCHES_TABLE)} "
            "WHERE GroupId = {group:String} AND Topic = {topic:String} "
            "AND Partition = {partition:UInt32} AND StartOffset = {start:UInt64}",
            {"group": self.group_id, "topic": tp.topic, "partition": tp.partition, "start": start},
        )
        if not rows:
            return None
        if len(rows) > 1:
            log.error(
                "several batches recorded at one offset (two members wrote the same "
                "messages); replaying the first",
                extra={"partition": f"{tp.topic}/{tp.partition}", "offset": start},
            )
        batch_id, text = rows[0]
        ranges = _ranges_from_json(str(text))
        if tp not in ranges:
            return None
        return str(batch_id), ranges

    async def _start_reader(self) -> Any:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            client_id=f"llmtel-sink-replay-{self.group_id}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await reader.start()
        return reader

    async def _replay(self, reader: Any, batch_id: str, ranges: dict[Any, _Range]) -> bool:
        """Rebuild a recorded batch from exactly its ranges and store it under its token.
        False when the recorded batch does not match the log (a stale row)."""
        records = await self._read(reader, ranges)
        firsts: dict[Any, Any] = {}
        for record in records:
            firsts.setdefault(TopicPartition(record.topic, record.partition), record)
        for tp, r in ranges.items():
            first = firsts.get(tp)
            if first is not None and first.offset == r.first_offset:
                if first.timestamp != r.first_timestamp_ms:
                    log.warning(
                        "recorded batch does not match the log (topic recreated?); not replayed",
                        extra={"batch": batch_id, "partition": f"{tp.topic}/{tp.partition}"},
                    )
                    return False
            elif first is None or first.offset > r.first_offset:
                log.error(
                    "part of a recorded batch is gone from the log (retention); replaying "
                    "what is left",
                    extra={"batch": batch_id, "partition": f"{tp.topic}/{tp.partition}"},
                )
        decoded = await self._retry("decode", functools.partial(self._decode, records))
        batch = _Batch(ranges=ranges)
        for item in decoded:
            if item.dead is not None:
                await self._send_dead_letter(item.dead)
            batch.take(item)
        await self._flush(batch, batch_id)
        REPLAYED_BATCHES.inc()
        self.replayed_batches += 1
        return True

    async def _read(self, reader: Any, ranges: Mapping[Any, _Range]) -> list[Any]:
        """The records at offsets `[start, end)` of every range, in partition order."""
        tps = sorted(ranges)
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, ranges[tp].start)
        found: dict[Any, list[Any]] = {tp: [] for tp in tps}
        remaining = {tp for tp in tps if ranges[tp].end > ranges[tp].start}
        deadline = time.monotonic() + self._replay_read_timeout_s
        while remaining:
            if time.monotonic() > deadline:
                log.error(
                    "could not read a recorded batch back in time",
                    extra={"partitions": sorted(f"{t.topic}/{t.partition}" for t in remaining)},
                )
                break
            fetched = await reader.getmany(*remaining, timeout_ms=200)
            for tp, records in fetched.items():
                r = ranges[tp]
                found[tp].extend(x for x in records if r.start <= x.offset < r.end)
            for tp in list(remaining):
                if await reader.position(tp) >= ranges[tp].end:
                    remaining.discard(tp)
        return [record for tp in tps for record in found[tp]]

    # -- metrics ----------------------------------------------------------------------------

    def _update_lag(self) -> None:
        for tp, position in self._position.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - position))

    def _forget_lag(self, tp: Any) -> None:
        with contextlib.suppress(KeyError):
            CONSUMER_LAG.remove(tp.topic, str(tp.partition))


def _source(record: Any) -> str:
    return f"{record.topic}/{record.partition}/{record.offset}"
