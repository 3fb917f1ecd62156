"""The pure core of the faust windows worker: per-partition window state, replay guards and
the records its changelog-backed table keeps.

No faust and no Kafka in here: `streams/faust_app.py` hands consumed messages and clock ticks
to `PartitionedWindows` and publishes the `Step` it gets back (closed windows, anomalies,
dead letters, table writes). Everything below is deterministic given its inputs.

One `WindowAggregator` + `AnomalyDetector` pair per input partition. `llmtel.otlp.v1` is
keyed by tenant, so a tenant's requests, and therefore its state, live on one partition;
keeping a pair per partition lets a partition move between workers as a unit and gives each
partition its own clock (see "Clock").

Table records (key -> JSON value), written to the changelog partition of the input partition
they belong to:
- `t:<tenant>` -> {"v", "p": partition, "offset": last applied input offset of this tenant,
  "windows": `WindowAggregator.tenant_state`, "anomaly": `AnomalyDetector.tenant_state`}.
  A tenant whose windows and history are gone keeps a record with both None: its offset is
  still the replay guard.
- `p:<partition>` -> {"v", "p", "next_offset": every input offset below it has been applied}.

Replay guards: a message is skipped when its offset is below its partition's `next_offset`,
or not above its tenant's `offset`. Both are restored from the table, so a batch that was
applied and persisted but whose consumer offsets were not committed (a crash in between) is
recognised when it is delivered again instead of being counted twice. A tenant record holds
the tenant's windows and its offset together, in one Kafka message, so that pair is always
consistent. The partition record is written after the step's tenant records, to the same
changelog partition (aiokafka has one request per broker in flight, so they land in order):
if it is there, so are they. It also covers dead letters, which have no tenant record, and
tells where the consumer must continue (see "Gaps").

Gaps: offsets of a partition are consecutive (the topic is neither compacted nor
transactional), so a message above its partition's `next_offset` means the consumer skipped
some. faust 0.15 does that after a rebalance: a message fetched while recovery resumes the
flow is cleared from the stream's queue without being acked, and its commit logic then
steps over the one-message hole. `process` applies nothing of such a partition in that step
and reports the gap; the driver re-reads from `next_offset` (or, if retention already deleted
those messages, moves past them with `skip_to`).

Clock: a partition's watermark is the processing time of the messages it applies (the
ingest receive time, `received_at_ns`, advanced before each message is added) and, while the
driver knows the partition is caught up, the wall clock on its timer. So a worker catching
up on a backlog (after a restart or a rebalance) closes windows exactly as they would have
closed in real time, instead of declaring the whole backlog late.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from schema.kafka import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    ContractError,
    Headers,
    decode_otlp,
)
from schema.messages import OtlpMessage
from schema.models import PrivacyPolicy, TenantSettings
from schema.spans import SpanBatch
from schema.windows import AnomalyRecord, WindowRecord
from streams.anomaly import AnomalyDetector
from streams.normalize import normalize_payload
from streams.pricing import Pricer
from streams.windows import WindowAggregator, WindowConfig, WindowStateError

log = logging.getLogger(__name__)

RECORD_VERSION = 1
TENANT_PREFIX = b"t:"
PARTITION_PREFIX = b"p:"
MAX_REASON_CHARS = 1000

# (request, its serialized bytes) -> spans; the bytes save re-serialising the request
Normalizer = Callable[[OtlpMessage, bytes], SpanBatch]
SettingsLookup = Callable[[str], TenantSettings]


def span_normalizer(pricer: Pricer, settings_for: SettingsLookup | None = None) -> Normalizer:
    """The pure normaliser as the windows need it: same prices as the sink stores.

    Only price overrides matter for windows; content is never looked at, so it is dropped
    (`PrivacyPolicy.OFF`), which halves the normaliser's cost and changes no window value.
    Without `settings_for` every tenant gets the default settings, i.e. no price overrides:
    a tenant override then shows in stored spans but not in windows.
    """
    default = TenantSettings(privacy=PrivacyPolicy.OFF)
    if settings_for is None:

        def normalize_default(message: OtlpMessage, payload: bytes) -> SpanBatch:
            return normalize_payload(
                payload, message.tenant_id, message.received_at_ns, default, pricer
            )

        return normalize_default

    lookup = settings_for
    # the lookup's answer -> the same settings without content; keyed by identity because
    # tenant stores hand out the same (cached) object until it changes
    stripped: dict[str, tuple[TenantSettings, TenantSettings]] = {}

    def normalize_tenant(message: OtlpMessage, payload: bytes) -> SpanBatch:
        tenant = message.tenant_id
        settings = lookup(tenant)
        cached = stripped.get(tenant)
        if cached is None or cached[0] is not settings:
            without_content = (
                settings
                if settings.privacy is PrivacyPolicy.OFF
                else settings.model_copy(update={"privacy": PrivacyPolicy.OFF})
            )
            cached = stripped[tenant] = (settings, without_content)
        return normalize_payload(payload, tenant, message.received_at_ns, cached[1], pricer)

    return normalize_tenant


@dataclass(frozen=True, slots=True)
class Consumed:
    """One message as consumed from the input topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class DeadLetter:
    source: Consumed
    reason: str

    def headers(self) -> Headers:
        """The original headers plus the reason and "topic/partition/offset"."""
        source = self.source
        return [
            *source.headers,
            (HEADER_DLQ_REASON, self.reason[:MAX_REASON_CHARS].encode()),
            (HEADER_DLQ_SOURCE, f"{source.topic}/{source.partition}/{source.offset}".encode()),
        ]


@dataclass(frozen=True, slots=True)
class StateWrite:
    """One table record to write to the changelog partition `partition`."""

    partition: int
    key: bytes
    value: bytes


@dataclass(slots=True)
class Step:
    """What one `process` or `advance` call produced, to publish in this order: windows,
    anomalies and dead letters first, then the state writes."""

    windows: list[WindowRecord] = field(default_factory=list)
    anomalies: list[AnomalyRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    writes: list[StateWrite] = field(default_factory=list)
    # partition -> (first offset expected, first offset seen): messages not delivered
    gaps: dict[int, tuple[int, int]] = field(default_factory=dict)
    applied: int = 0  # messages whose spans went into the windows
    skipped: int = 0  # messages already applied before (a replay)
    counted: int = 0  # LLM spans counted
    late: int = 0  # LLM spans for windows already closed

    def __bool__(self) -> bool:
        return bool(self.windows or self.anomalies or self.dead_letters or self.writes)


def tenant_key(tenant: str) -> bytes:
    return TENANT_PREFIX + tenant.encode()


def partition_key(partition: int) -> bytes:
    return PARTITION_PREFIX + str(partition).encode()


class _Partition:
    __slots__ = (
        "number",
        "aggregator",
        "detector",
        "offsets",
        "next_offset",
        "horizon",
        "touched",
        "meta_dirty",
    )

    def __init__(self, number: int, config: WindowConfig) -> None:
        self.number = number
        self.aggregator = WindowAggregator(config)
        self.detector = AnomalyDetector(config)
        self.offsets: dict[str, int] = {}  # tenant -> last applied offset
        self.next_offset: int | None = None  # every offset below it is applied
        self.horizon: int | None = None  # the close horizon of the last advance
        self.touched: set[str] = set()  # tenants whose offset moved since the last write
        self.meta_dirty = False


class PartitionedWindows:
    """Window aggregation and anomaly detection for the input partitions one worker owns."""

    def __init__(self, config: WindowConfig, normalize: Normalizer) -> None:
        self.config = config
        self._normalize = normalize
        self._window_ns = config.window_ns
        self._lateness_ns = config.lateness_ns
        self._partitions: dict[int, _Partition] = {}

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def next_offset(self, partition: int) -> int | None:
        """Every offset of `partition` below this has been applied (None: nothing known)."""
        part = self._partitions.get(partition)
        return None if part is None else part.next_offset

    def tenants(self, partition: int) -> list[str]:
        part = self._partitions.get(partition)
        if part is None:
            return []
        return sorted(
            set(part.aggregator.tenants()) | set(part.detector.tenants()) | set(part.offsets)
        )

    def aggregator(self, partition: int) -> WindowAggregator:
        return self._partition(partition).aggregator

    def detector(self, partition: int) -> AnomalyDetector:
        return self._partition(partition).detector

    # -- ownership -------------------------------------------------------------------------

    def restore(self, partitions: Iterable[int], entries: Iterable[tuple[Any, Any]]) -> None:
        """(Re)build `partitions` from table records (the whole table may be passed: records
        of other partitions are ignored). Unreadable records are logged and skipped."""
        wanted = {int(p): _Partition(int(p), self.config) for p in partitions}
        if not wanted:
            return
        for raw_key, raw_value in entries:
            key = _as_bytes(raw_key)
            if raw_value is None or not key.startswith((TENANT_PREFIX, PARTITION_PREFIX)):
                continue
            try:
                value = orjson.loads(_as_bytes(raw_value))
                part = wanted.get(value["p"]) if isinstance(value, dict) else None
                if part is None:
                    continue
                if value.get("v") != RECORD_VERSION:
                    raise WindowStateError(f"unsupported record version {value.get('v')!r}")
                if key.startswith(PARTITION_PREFIX):
                    part.next_offset = _optional_int(value.get("next_offset"))
                    continue
                tenant = key[len(TENANT_PREFIX) :].decode()
                offset = _optional_int(value.get("offset"))
                if offset is not None:
                    part.offsets[tenant] = offset
                part.aggregator.load_tenant_state(tenant, value.get("windows"))
                part.detector.load_tenant_state(tenant, value.get("anomaly"))
            except (WindowStateError, ValueError, TypeError, KeyError) as exc:
                log.error(
                    "unreadable window state record skipped; that tenant starts afresh",
                    extra={"key": key.decode(errors="replace"), "error": str(exc)},
                )
        self._partitions.update(wanted)

    def expect(self, partition: int, offset: int) -> None:
        """Where the consumer starts reading `partition`, for a partition without state (its
        committed offset): lets `process` see a gap before the first message it applies."""
        part = self._partition(partition)
        if part.next_offset is None:
            part.next_offset = offset

    def skip_to(self, partition: int, offset: int) -> None:
        """Give up on the messages of `partition` below `offset` (deleted by retention)."""
        part = self._partition(partition)
        if part.next_offset is None or offset > part.next_offset:
            part.next_offset = offset
            part.meta_dirty = True

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions this worker no longer owns."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def _partition(self, partition: int) -> _Partition:
        part = self._partitions.get(partition)
        if part is None:
            part = self._partitions[partition] = _Partition(partition, self.config)
        return part

    # -- processing ------------------------------------------------------------------------

    def process(self, messages: Iterable[Consumed]) -> Step:
        """Apply consumed messages (in offset order per partition); skip replays, hold back
        a partition whose offsets jump (see "Gaps")."""
        step = Step()
        changed: dict[int, _Partition] = {}
        for message in messages:
            if message.partition in step.gaps:
                continue  # held back with the rest of its partition until re-read
            part = self._partition(message.partition)
            offset = message.offset
            if part.next_offset is not None and offset != part.next_offset:
                if offset < part.next_offset:
                    step.skipped += 1
                else:
                    step.gaps[part.number] = (part.next_offset, offset)
                continue
            changed[part.number] = part
            part.next_offset = offset + 1
            part.meta_dirty = True
            try:
                request = decode_otlp(message.value, message.headers)
            except ContractError as exc:
                step.dead_letters.append(DeadLetter(message, f"contract: {exc}"))
                continue
            tenant = request.tenant_id
            if offset <= part.offsets.get(tenant, -1):
                step.skipped += 1
                continue
            assert message.value is not None  # decode_otlp refuses a missing value
            try:
                batch = self._normalize(request, message.value)
            except Exception as exc:  # a bug, not bad input: set the request aside
                log.exception("normalising a request failed; sent to the dead-letter topic")
                step.dead_letters.append(
                    DeadLetter(message, f"normalize: {type(exc).__name__}: {exc}")
                )
                continue
            self._advance(part, request.received_at_ns, step)
            added = part.aggregator.add(batch)
            part.offsets[tenant] = offset
            part.touched.add(tenant)
            step.applied += 1
            step.counted += added.counted
            step.late += added.late
        for part in changed.values():
            self._collect(part, step)
        return step

    def advance(self, now_ns: int, partitions: Iterable[int] | None = None) -> Step:
        """Move the clock of `partitions` (default: all owned) to `now_ns`; close windows."""
        step = Step()
        numbers = self.partitions() if partitions is None else partitions
        for number in numbers:
            part = self._partitions.get(number)
            if part is None:
                continue
            self._advance(part, now_ns, step)
            self._collect(part, step)
        return step

    def _advance(self, part: _Partition, now_ns: int, step: Step) -> None:
        horizon = (now_ns - self._lateness_ns) // self._window_ns * self._window_ns
        if part.horizon is not None and horizon <= part.horizon:
            return  # nothing new can close; spares a pass over the partition's tenants
        part.horizon = horizon
        closed = part.aggregator.advance(now_ns)
        if closed:
            step.windows.extend(closed)
            step.anomalies.extend(part.detector.observe_all(closed))

    def _collect(self, part: _Partition, step: Step) -> None:
        """Table writes for every tenant of `part` whose state or offset changed."""
        tenants = part.aggregator.pop_dirty() | part.detector.pop_dirty() | part.touched
        part.touched = set()
        for tenant in sorted(tenants):
            record = {
                "v": RECORD_VERSION,
                "p": part.number,
                "offset": part.offsets.get(tenant),
                "windows": part.aggregator.tenant_state(tenant),
                "anomaly": part.detector.tenant_state(tenant),
            }
            step.writes.append(StateWrite(part.number, tenant_key(tenant), orjson.dumps(record)))
        if part.meta_dirty:
            part.meta_dirty = False
            record = {"v": RECORD_VERSION, "p": part.number, "next_offset": part.next_offset}
            step.writes.append(
                StateWrite(part.number, partition_key(part.number), orjson.dumps(record))
            )


def decode_record(value: bytes) -> Mapping[str, Any]:
    """A table record's JSON (for tools and tests)."""
    decoded: Mapping[str, Any] = orjson.loads(value)
    return decoded


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected bytes, got {type(value).__name__}")


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer offset, got {value!r}")
    return value
