"""The faust windows worker against a real broker, each worker in its own process.

Traffic is produced the way ingest produces it (`encode_otlp`, keyed by tenant) in 1 s
windows; spans carry an explicit cost so the test recomputes every window on its own. The
worker's output topics are read back and compared with that recomputation: no window may be
missing, and a window published twice (allowed after a crash) must be identical.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schema.windows import AnomalyRecord, Metric, Scope, WindowRecord
from streams.windows import WindowConfig
from tests.kafka.fixtures import MakeTopic, delete_topics
from tests.streams.test_faust_state import (
    MS,
    S,
    SpanSpec,
    expected_windows,
    otlp_record,
    window_id,
    window_values,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
WINDOW = WindowConfig(window_s=1, lateness_s=0.5, history=10, min_history=3)
PARTITIONS = 2
TENANTS = ("acme", "globex")  # murmur2: acme -> partition 0, globex -> partition 1
SPANS_PER_MESSAGE = 4
STEP_S = 30.0


def worker_main() -> None:
    """Entry point of a worker process: `python -c ... '<json config>'`."""
    from streams.faust_app import StreamsConfig, create_faust_app, run_streams_worker

    options = json.loads(sys.argv[1])
    config = StreamsConfig(
        window=WINDOW,
        partitions=PARTITIONS,
        data_dir=Path(options.pop("data_dir")),
        session_timeout_s=6,
        heartbeat_interval_s=1,
        rebalance_timeout_s=10,
        commit_interval_s=1,
        **options,
    )
    sys.exit(run_streams_worker(create_faust_app(config), loglevel="info"))


@dataclass
class Topics:
    otlp: str
    windows: str
    anomalies: str
    dlq: str


@pytest.fixture
async def topics(make_topic: MakeTopic) -> Topics:
    names = [await make_topic(name, PARTITIONS) for name in ("otlp", "windows", "anomalies", "dlq")]
    return Topics(*names)


class Worker:
    """One `run_streams_worker` process; its log goes to a file."""

    def __init__(self, name: str, bootstrap: str, app_id: str, topics: Topics, tmp: Path) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self.options = {
            "bootstrap": bootstrap,
            "app_id": app_id,
            "data_dir": str(tmp / name),
            "otlp_topic": topics.otlp,
            "windows_topic": topics.windows,
            "anomalies_topic": topics.anomalies,
            "dlq_topic": topics.dlq,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        code = "from tests.kafka.test_streams_faust import worker_main; worker_main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(self.options)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assignment(self) -> list[int] | None:
        """The partitions of the latest completed assignment, None before the first."""
        found = re.findall(r"streams partitions assigned: \[([\d, ]*)\]", self.log())
        if not found:
            return None
        return [int(p) for p in found[-1].split(",") if p.strip()]

    async def until_assigned(self, check: Callable[[list[int]], bool]) -> None:
        async with asyncio.timeout(STEP_S):
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
                assigned = self.assignment()
                if assigned is not None and check(assigned):
                    return
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STEP_S):
            while self.proc.poll() is None:
                await asyncio.sleep(0.1)
        return self.proc.returncode

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()


@pytest.fixture
def workers(
    kafka_bootstrap: str, topics: Topics, topic_prefix: str, tmp_path: Path
) -> Iterator[Callable[[str], Worker]]:
    made: list[Worker] = []
    app_id = f"{topic_prefix}app"

    def make(name: str) -> Worker:
        worker = Worker(name, kafka_bootstrap, app_id, topics, tmp_path)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.close()
    internal = [f"{app_id}-windows-changelog", f"{app_id}-__assignor-__leader"]
    with contextlib.suppress(Exception):
        asyncio.run(delete_topics(kafka_bootstrap, internal))


@dataclass
class Received:
    windows: list[tuple[float, WindowRecord]] = field(default_factory=list)
    anomalies: list[tuple[float, AnomalyRecord]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def reading(bootstrap: str, topics: Topics) -> AsyncIterator[Received]:
    """Collect the output topics in the background, with the time each record arrived."""
    received = Received()
    consumer = AIOKafkaConsumer(
        topics.windows,
        topics.anomalies,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        metadata_max_age_ms=1000,
    )
    await consumer.start()

    async def collect() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, messages in batches.items():
                for message in messages:
                    assert message.value is not None
                    if tp.topic == topics.windows:
                        received.windows.append((now, WindowRecord.from_json(message.value)))
                    else:
                        received.anomalies.append((now, AnomalyRecord.from_json(message.value)))

    task = asyncio.create_task(collect())
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


class Traffic:
    """Produces one message per tenant in the middle of each 1 s window, like ingest."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.produced: list[tuple[str, SpanSpec]] = []
        self.first_window_ns = (time.time_ns() // S + 1) * S

    def window_start(self, k: int) -> int:
        return self.first_window_ns + k * S

    async def window(self, k: int, costs: dict[str, str] | None = None) -> None:
        middle = self.window_start(k) + S // 2
        await asyncio.sleep(max(0.0, (middle - time.time_ns()) / S))
        sends = []
        for tenant in TENANTS:
            cost = (costs or {}).get(tenant, "0.01")
            specs = [
                SpanSpec(
                    end_ns=middle - (SPANS_PER_MESSAGE - i) * 10 * MS,
                    duration_ns=(100 + 37 * i + k) * MS,
                    input_tokens=100 + i,
                    output_tokens=20 + k,
                    cost=cost,
                )
                for i in range(SPANS_PER_MESSAGE)
            ]
            record = otlp_record(tenant, time.time_ns(), specs)
            sends.append(
                await self.producer.send(
                    self.topic, key=record.key, value=record.value, headers=record.headers
                )
            )
            self.produced += [(tenant, spec) for spec in specs]
        await asyncio.gather(*sends)

    def expected(self) -> dict[Any, Any]:
        return expected_windows(self.produced, S)


@contextlib.asynccontextmanager
async def traffic(bootstrap: str, topic: str) -> AsyncIterator[Traffic]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        yield Traffic(producer, topic)
    finally:
        await producer.stop()


def distinct_windows(received: Received) -> dict[Any, dict[str, Any]]:
    """Non-empty windows by id; a window published more than once must be identical."""
    seen: dict[Any, dict[str, Any]] = {}
    for _, record in received.windows:
        if record.requests:
            values = window_values(record)
            assert seen.setdefault(window_id(record), values) == values, record
    return seen


async def until_windows(received: Received, expected: dict[Any, Any]) -> None:
    """Wait until every expected window has been published (or fail after STEP_S)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STEP_S):
            while not set(expected) <= set(distinct_windows(received)):
                await asyncio.sleep(0.1)
    missing = sorted(set(expected) - set(distinct_windows(received)))
    assert not missing, f"windows never published: {missing}"


def test_tenants_land_on_different_partitions() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    assert [partitioner(t.encode(), partitions, partitions) for t in TENANTS] == [0, 1]


async def test_a_cost_spike_is_one_anomaly_published_within_seconds(
    kafka_bootstrap: str, topics: Topics, workers: Callable[[str], Worker]
) -> None:
    worker = workers("w1")
    worker.start()
    await worker.until_assigned(lambda p: p == [0, 1])
    async with reading(kafka_bootstrap, topics) as received:
        async with traffic(kafka_bootstrap, topics.otlp) as produce:
            for k in range(9):
                await produce.window(k, {"acme": "0.05"} if k == 6 else None)
        expected = produce.expected()
        await until_windows(received, expected)
        spike_end = produce.window_start(7)
        async with asyncio.timeout(STEP_S):  # the anomalies of window 6 are due by now
            while len(received.anomalies) < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # and nothing else shows up two windows later

    assert distinct_windows(received) == expected
    found = sorted((a.tenant, a.scope.value, a.key, a.metric.value) for _, a in received.anomalies)
    assert found == [
        ("acme", Scope.MODEL.value, "gpt-4o-mini", Metric.COST_USD.value),
        ("acme", Scope.SERVICE.value, "chat-app", Metric.COST_USD.value),
        ("acme", Scope.TENANT.value, "", Metric.COST_USD.value),
    ]
    for arrived, anomaly in received.anomalies:
        assert anomaly.window_end_ns == spike_end
        assert anomaly.value == 5 * anomaly.average
        closed_at = (spike_end + WINDOW.lateness_ns) / S
        latency = arrived - closed_at
        print(f"anomaly {anomaly.scope.value}: published {latency:.3f} s after its window closed")
        assert latency < 5.0
    assert await worker.terminate() == 0


async def test_a_crashed_worker_is_replaced_without_losing_or_double_counting_a_window(
    kafka_bootstrap: str, topics: Topics, workers: Callable[[str], Worker]
) -> None:
    first = workers("w1")
    first.start()
    await first.until_assigned(lambda p: p == [0, 1])
    async with reading(kafka_bootstrap, topics) as received:
        async with traffic(kafka_bootstrap, topics.otlp) as produce:
            for k in range(12):
                await produce.window(k)
                if k == 3:
                    first.kill()  # SIGKILL: no commit, no flush
                if k == 4:
                    second = workers("w2")
                    second.start()
        expected = produce.expected()
        await second.until_assigned(lambda p: p == [0, 1])
        await until_windows(received, expected)

    assert distinct_windows(received) == expected
    tenant_windows = {w for w in distinct_windows(received) if w[1] is Scope.TENANT}
    assert sum(distinct_windows(received)[w]["requests"] for w in tenant_windows) == len(
        produce.produced
    )
    assert not received.anomalies
    replays = len([r for _, r in received.windows if r.requests]) - len(expected)
    skipped = sum(int(n) for n in re.findall(r"skipped (\d+) re-delivered", second.log()))
    reread = len(re.findall(r"the consumer skipped offsets", second.log()))
    print(
        f"after the crash: {skipped} re-delivered messages skipped, {reread} consumer gaps "
        f"re-read, {replays} windows published again"
    )
    assert await second.terminate() == 0


async def test_two_workers_split_the_partitions_and_hand_over_on_shutdown(
    kafka_bootstrap: str, topics: Topics, workers: Callable[[str], Worker]
) -> None:
    first, second = workers("w1"), workers("w2")
    first.start()
    await first.until_assigned(lambda p: p == [0, 1])
    second.start()
    await second.until_assigned(lambda p: len(p) == 1)
    await first.until_assigned(lambda p: len(p) == 1)
    assert sorted((first.assignment() or []) + (second.assignment() or [])) == [0, 1]
    async with reading(kafka_bootstrap, topics) as received:
        async with traffic(kafka_bootstrap, topics.otlp) as produce:
            for k in range(10):
                await produce.window(k)
                if k == 4:
                    stopping = asyncio.create_task(first.terminate())  # SIGTERM: clean leave
            assert await stopping == 0
        await second.until_assigned(lambda p: p == [0, 1])
        expected = produce.expected()
        await until_windows(received, expected)

    assert distinct_windows(received) == expected
    assert not received.anomalies
    assert await second.terminate() == 0
