"""The distributed windows worker (`llmtel streams`): a faust app over `llmtel.otlp.v1`.

    config = StreamsConfig(bootstrap="kafka:9092", window=settings.window_config())
    app = create_faust_app(config, pricer=Pricer(), settings_for=tenants.get_settings)
    sys.exit(run_streams_worker(app))

Chain: consume a batch (`take_events`: faust/aiokafka cost ~10 us per message, so never one
by one) -> decode (`schema.kafka.decode_otlp`; contract violations and normaliser failures go
to `llmtel.otlp.dlq.v1` with reason and source topic/partition/offset headers, and the worker
goes on) -> normalise (the pure normaliser with the sink's prices) -> `WindowAggregator.add`
-> publish closed windows (`llmtel.windows.v1`) and anomalies (`llmtel.anomalies.v1`), keyed
by tenant -> write the changed state to a faust Table -> ack. A timer (window_s / 4 within
[0.1, 1] s) closes windows on the wall clock, so an anomaly is published about one tick
(< 1 s) after its window closes (window end + lateness). The pure part is `streams.faust_state`.

State. One Table (in-memory store; changelog topic `<app id>-windows-changelog`, as many
partitions as the input topic), records `t:<tenant>` and `p:<partition>` written for what
changed in a step. A record goes to the changelog partition of the input partition it belongs
to, so faust's recovery hands a worker exactly the state of the partitions it is assigned.
After every rebalance the worker rebuilds its per-partition aggregators from the table and
drops the partitions it lost. Two workers therefore split the partitions (and keep standby
copies of each other's), and a restarted worker resumes where the changelog left off.

Crash semantics: at least once, made exactly once for counting. faust commits consumer
offsets on its own (every `commit_interval_s`, after flushing the producer), separately from
the table and the output topics. Each step here waits until Kafka acknowledged its windows,
anomalies and dead letters, then its table records, and only then acks its messages. So:
- state persisted, offsets not committed (crash in between): the batch is delivered again.
  Every tenant record holds the tenant's last applied offset in the same Kafka message as its
  windows, the partition record the next offset to apply; re-delivered messages below them
  are skipped, so nothing is counted twice.
- outputs published, state not persisted: the restored state closes the same windows again
  and publishes them again, with the same values. Windows and anomalies are therefore at
  least once; consumers keep one per (tenant, scope, key, window_start_ns[, metric]). The
  detector itself ignores a window it has already judged.
- offsets committed past a message that was never applied: faust 0.15 does this after a
  rebalance (see faust_state "Gaps"). The partition record's next offset exposes the hole,
  at the next batch or after a restart, and the worker seeks back and applies it.
If publishing fails (broker down) the step is retried with backoff while holding its batch:
the worker stops consuming instead of skipping data, and the batch's offsets stay
uncommitted (a worker stopped in that state may need SIGKILL; nothing is lost).

Clock. While a partition is behind (its next offset is below the consumer's highwater), the
timer leaves it alone and its windows close on the receive times of the messages applied, as
they closed in real time; once caught up it follows the wall clock. So a restarted worker does
not declare its backlog late.

Left open: per-tenant price overrides reach windows only if `settings_for` is passed; the
input topic's partition count must not change under an app id (the changelog would no longer
be co-partitioned; the worker stops on a mismatch).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from schema.kafka import DLQ_TOPIC, OTLP_TOPIC, Headers
from schema.windows import ANOMALIES_TOPIC, WINDOWS_TOPIC
from streams import metrics
from streams.anomaly import report
from streams.faust_state import (
    Consumed,
    PartitionedWindows,
    SettingsLookup,
    Step,
    span_normalizer,
)
from streams.pricing import Pricer
from streams.windows import WindowConfig

log = logging.getLogger(__name__)

TABLE_NAME = "windows"
AGENT_NAME = "llmtel-windows"
TIMER_NAME = "llmtel-windows-tick"
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0
REREAD_AGAIN_S = 1.0

_RUNTIMES: weakref.WeakKeyDictionary[object, StreamsRuntime] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """What the worker needs; the composition root builds it from `Settings`."""

    bootstrap: str  # "host:port[,host:port]"
    app_id: str = "llmtel-streams"  # consumer group and changelog topic prefix
    window: WindowConfig = field(default_factory=WindowConfig)
    partitions: int = 6  # of the input topic; the changelog gets as many
    replication: int = 1  # of topics this app creates
    data_dir: Path = Path("data/streams")  # faust's own directory (tables are in memory)
    otlp_topic: str = OTLP_TOPIC
    windows_topic: str = WINDOWS_TOPIC
    anomalies_topic: str = ANOMALIES_TOPIC
    dlq_topic: str = DLQ_TOPIC
    batch_max_messages: int = 500
    batch_max_wait_s: float = 0.1
    tick_s: float | None = None  # default: window_s / 4 within [0.1, 1]
    commit_interval_s: float = 2.8
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    rebalance_timeout_s: float = 60.0
    standby_replicas: int = 1

    def __post_init__(self) -> None:
        if not self.bootstrap:
            raise ValueError("bootstrap must name at least one Kafka broker")
        if self.partitions < 1 or self.replication < 1:
            raise ValueError("partitions and replication must be at least 1")
        if self.batch_max_messages < 1 or self.batch_max_wait_s <= 0:
            raise ValueError("batch_max_messages and batch_max_wait_s must be positive")

    @property
    def tick_interval_s(self) -> float:
        if self.tick_s is not None:
            return self.tick_s
        return min(1.0, max(0.1, self.window.window_s / 4))

    @property
    def broker_urls(self) -> list[str]:
        return [f"kafka://{host.strip()}" for host in self.bootstrap.split(",") if host.strip()]


class StreamsRuntime:
    """The worker's moving parts, attached to its faust app (`runtime_of(app)`)."""

    def __init__(
        self,
        app: faust.App,
        config: StreamsConfig,
        windows: PartitionedWindows,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.app = app
        self.config = config
        self.windows = windows
        self.clock = clock
        self.input_topic: Any = None
        self.windows_topic: Any = None
        self.anomalies_topic: Any = None
        self.dlq_topic: Any = None
        self.table: Any = None
        self.agent: Any = None
        self._lock = asyncio.Lock()
        self._rereads: dict[int, tuple[int, float]] = {}  # partition -> (offset, monotonic)
        self._owned: set[int] | None = None  # None until the first assignment (tests)
        self.batches = 0  # steps published, for tests and logs
        self.messages = 0
        self.ticks = 0

    # -- the agent ---------------------------------------------------------------------

    async def consume(self, stream: Any) -> None:
        config = self.config
        async for events in stream.take_events(
            config.batch_max_messages, within=config.batch_max_wait_s
        ):
            await self.process_events(events)

    async def process_events(self, events: Iterable[Any]) -> Step:
        received = [_consumed(event) for event in events]
        consumed = received
        owned = self._owned
        if owned is not None:  # a late message of a partition given away is not ours to apply
            consumed = [message for message in received if message.partition in owned]
        async with self._lock:
            for partition in sorted({message.partition for message in consumed}):
                if self.windows.next_offset(partition) is None:
                    start = await self._start_offset(partition)
                    if start is not None:
                        self.windows.expect(partition, start)
            step = self.windows.process(consumed)
            if step.late:
                metrics.LATE_SPANS.inc(step.late)
            if step.skipped:
                log.info(
                    "skipped %d re-delivered messages already in the window state",
                    step.skipped,
                    extra={"skipped": step.skipped},
                )
            await self._publish(step)
        for partition, (expected, seen) in step.gaps.items():
            await self._reread(partition, expected, seen)
        self.batches += 1
        self.messages += len(received)
        return step

    async def _start_offset(self, partition: int) -> int | None:
        """Where the consumer starts on a partition we have no state for: the committed
        offset, else (a new group, `auto_offset_reset=earliest`) the log start."""
        tp = TP(self.config.otlp_topic, partition)
        try:
            consumer = self.app.consumer
            committed = getattr(consumer, "_committed_offset", {}).get(tp)
            if committed is not None:
                return int(committed)
            earliest = (await consumer.earliest_offsets(tp)).get(tp)
        except Exception:  # consumer not started (tests) or broker unavailable: no check
            return None
        return None if earliest is None else int(earliest)

    async def _reread(self, partition: int, expected: int, seen: int) -> None:
        """Seek back to the first offset not applied (see faust_state "Gaps")."""
        now = time.monotonic()
        last = self._rereads.get(partition)
        if last is not None and last[0] == expected and now - last[1] < REREAD_AGAIN_S:
            return  # already asked for; the queue still held messages fetched before
        self._rereads[partition] = (expected, now)
        topic = self.config.otlp_topic
        tp = TP(topic, partition)
        try:
            earliest = (await self.app.consumer.earliest_offsets(tp)).get(tp)
            target = expected
            if earliest is not None and earliest > expected:
                log.warning(
                    "%s/%d: offsets %d..%d were deleted before they were applied; going on at %d",
                    topic, partition, expected, earliest - 1, earliest,
                )  # fmt: skip
                async with self._lock:
                    self.windows.skip_to(partition, earliest)
                target = earliest
            else:
                log.warning(
                    "%s/%d: the consumer skipped offsets %d..%d; re-reading from %d",
                    topic, partition, expected, seen - 1, expected,
                )  # fmt: skip
            await self.app.consumer.seek(tp, target)
        except Exception:
            log.exception("re-reading %s/%d failed; retried on the next batch", topic, partition)

    # -- the timer ---------------------------------------------------------------------

    async def tick(
        self, now_ns: int | None = None, partitions: Iterable[int] | None = None
    ) -> Step:
        """Close the windows of `partitions` (default: all owned) as of `now_ns` (default:
        the clock), publish them and persist the state."""
        async with self._lock:
            now = self.clock() if now_ns is None else now_ns
            step = self.windows.advance(now, partitions)
            await self._publish(step)
        self.ticks += 1
        return step

    async def tick_caught_up(self) -> Step | None:
        """The timer: advance the partitions that have applied everything fetched so far."""
        if self.app.rebalancing:
            return None
        caught_up = [p for p in self.windows.partitions() if self._caught_up(p)]
        if not caught_up:
            return None
        return await self.tick(partitions=caught_up)

    def _caught_up(self, partition: int) -> bool:
        try:
            highwater = self.app.consumer.highwater(TP(self.config.otlp_topic, partition))
        except Exception:  # consumer not started or partition not assigned (any more)
            return False
        if highwater is None:
            return False  # nothing fetched yet: the backlog is unknown
        return (self.windows.next_offset(partition) or 0) >= int(highwater)

    # -- ownership ---------------------------------------------------------------------

    async def on_recovered(self) -> None:
        """After every rebalance: rebuild the owned partitions from the (recovered) table,
        which holds everything this worker wrote plus what recovery read for them."""
        topic = self.config.otlp_topic
        actual = self.app.consumer.topic_partitions(topic)
        if actual and actual != self.config.partitions:  # 0 or None: not known yet
            await self.app.crash(
                RuntimeError(
                    f"{topic} has {actual} partitions but the streams worker is configured for "
                    f"{self.config.partitions}; its changelog must match the input topic. Set "
                    "the partition count to match (and a new app id if the changelog topics "
                    "already exist)."
                )
            )
            return
        owned = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}
        async with self._lock:
            self._owned = owned
            self.windows.drop(self.windows.partitions())
            self.windows.restore(owned, list(self.table.data.items()))
        log.info(
            "streams partitions assigned: %s",
            sorted(owned),
            extra={"partitions": sorted(owned), "next_offsets": self._next_offsets(owned)},
        )

    async def on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """`app.on_partitions_revoked` receiver: (app, revoked TPs)."""
        revoked: Iterable[TP] = args[0] if args else kwargs.get("revoked", ())
        topic = self.config.otlp_topic
        lost = {tp.partition for tp in revoked if tp.topic == topic}
        async with self._lock:
            if self._owned is not None:
                self._owned -= lost
            self.windows.drop(lost)

    def _next_offsets(self, partitions: Iterable[int]) -> dict[str, int | None]:
        return {str(p): self.windows.next_offset(p) for p in sorted(partitions)}

    # -- publishing --------------------------------------------------------------------

    async def _publish(self, step: Step) -> None:
        """Outputs first, state second, each acknowledged by Kafka; retried until it works."""
        if not step:
            return
        delay = RETRY_INITIAL_S
        while True:
            try:
                await self._send_outputs(step)
                await self._persist(step)
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("publishing windows or state failed; retrying", extra={"in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        report(len(step.windows), step.anomalies)
        if step.dead_letters:
            metrics.DEAD_LETTERS.inc(len(step.dead_letters))

    async def _send_outputs(self, step: Step) -> None:
        pending: list[Any] = []
        for window in step.windows:
            pending.append(
                await self.windows_topic.send(key=window.tenant.encode(), value=window.to_json())
            )
        for anomaly in step.anomalies:
            pending.append(
                await self.anomalies_topic.send(
                    key=anomaly.tenant.encode(), value=anomaly.to_json()
                )
            )
        for letter in step.dead_letters:
            log.error(
                "request sent to the dead-letter topic",
                extra={"reason": letter.reason, "source": letter.headers()[-1][1].decode()},
            )
            pending.append(
                await self.dlq_topic.send(
                    key=letter.source.key, value=letter.source.value, headers=letter.headers()
                )
            )
        if pending:
            await asyncio.gather(*pending)

    async def _persist(self, step: Step) -> None:
        table = self.table
        pending = []
        for write in step.writes:
            table.data[write.key] = write.value
            pending.append(table.send_changelog(write.partition, write.key, write.value))
        if pending:
            await asyncio.gather(*pending)


def create_faust_app(
    config: StreamsConfig,
    *,
    pricer: Pricer | None = None,
    settings_for: SettingsLookup | None = None,
    clock: Callable[[], int] = time.time_ns,
) -> faust.App:
    """The windows worker as a faust app; run it with `run_streams_worker(app)`.

    `settings_for(tenant)` supplies per-tenant price overrides (e.g. `TenantStore.get_settings`;
    it is called on the event loop, so it should be cached); without it windows use list
    prices. `pricer` prices spans without a cost attribute, as the sink's does.
    """
    config.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        config.app_id,
        broker=config.broker_urls,
        store="memory://",
        datadir=str(config.data_dir),
        web_enabled=False,
        topic_partitions=config.partitions,
        topic_replication_factor=config.replication,
        table_standby_replicas=config.standby_replicas,
        broker_commit_interval=config.commit_interval_s,
        broker_session_timeout=config.session_timeout_s,
        broker_heartbeat_interval=config.heartbeat_interval_s,
        broker_rebalance_timeout=config.rebalance_timeout_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
    )
    windows = PartitionedWindows(config.window, span_normalizer(pricer or Pricer(), settings_for))
    runtime = StreamsRuntime(app, config, windows, clock)

    def topic(name: str, **options: Any) -> Any:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=config.partitions,
            replicas=config.replication,
            **options,
        )

    # internal: faust creates it (with `partitions`) before subscribing if it does not exist
    runtime.input_topic = topic(config.otlp_topic, internal=True)
    runtime.windows_topic = topic(config.windows_topic)
    runtime.anomalies_topic = topic(config.anomalies_topic)
    runtime.dlq_topic = topic(config.dlq_topic)
    runtime.table = app.Table(
        TABLE_NAME,
        key_type=bytes,
        value_type=bytes,
        partitions=config.partitions,
        on_recover=runtime.on_recovered,
    )
    runtime.agent = app.agent(runtime.input_topic, name=AGENT_NAME, concurrency=1)(runtime.consume)

    async def declare_topics() -> None:
        for declared in (runtime.windows_topic, runtime.anomalies_topic, runtime.dlq_topic):
            await declared.maybe_declare()

    async def tick(*_: Any) -> None:
        await runtime.tick_caught_up()

    app.task(declare_topics)
    app.timer(config.tick_interval_s, name=TIMER_NAME)(tick)
    app.on_partitions_revoked.connect(runtime.on_revoked)
    _RUNTIMES[app] = runtime
    return app


def runtime_of(app: object) -> StreamsRuntime:
    """The runtime `create_faust_app` attached to `app`."""
    try:
        return _RUNTIMES[app]
    except (KeyError, TypeError):
        raise TypeError("not an app made by create_faust_app") from None


def run_streams_worker(
    app: faust.App, *, loglevel: str = "info", override_logging: bool = True
) -> int:
    """Run the worker in the foreground until SIGTERM/SIGINT; the exit code (0: clean stop).

    On a signal faust stops consuming, waits for the batch in hand, flushes the producer and
    commits offsets. `override_logging=False` keeps the logging already configured."""
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        override_logging=override_logging,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _consumed(event: Any) -> Consumed:
    message = event.message
    return Consumed(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=event.value,
        headers=_headers(message.headers),
    )


def _headers(raw: Any) -> Headers:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, Mapping) else raw
    return [(str(name), bytes(value) if value is not None else b"") for name, value in items]
