"""A sink process SIGKILLed in the middle of a load, then restarted: every span is stored
exactly once. The sink runs in child processes (a chDB engine belongs to one process), which
also report what they stored: `python -m tests.kafka.test_sink_kill run|drain ...`."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from schema.migrate import migrate
from schema.tenants import TenantStore
from streams.pricing import Pricer
from streams.sink import KafkaSink, SinkTopics
from tests.conftest import TEST_RETENTION_DAYS, connect_database
from tests.kafka.fixtures import MakeTopic
from tests.kafka.test_sink import CONSUMER, Traffic, exact, make_topics, produce, stored

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
KILL_AFTER_BATCHES = 4


def child_command(
    mode: str, url: str, name: str, bootstrap: str, group: str, topics: SinkTopics
) -> list[str]:
    return [
        sys.executable, "-m", "tests.kafka.test_sink_kill", mode, url, name, bootstrap, group,
        json.dumps(asdict(topics)),
    ]  # fmt: skip


async def test_sigkill_mid_load_then_restart_stores_everything_once(
    kafka_bootstrap: str,
    make_topic: MakeTopic,
    topic_prefix: str,
    clickhouse_url: str,
    tmp_path: Path,
) -> None:
    # the children cannot open the session's chDB engine (this process holds it)
    url = f"chdb://{tmp_path / 'chdb'}" if clickhouse_url.startswith("chdb://") else clickhouse_url
    name = f"t_{secrets.token_hex(6)}"
    topics = await make_topics(make_topic, partitions=3)
    group = topic_prefix + "sink"
    traffic = Traffic()
    await produce(kafka_bootstrap, topics.otlp, traffic.add(60, spans=50), partitions=3)
    log = (tmp_path / "children.log").open("w")

    victim = subprocess.Popen(
        child_command("run", url, name, kafka_bootstrap, group, topics),
        cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    try:
        assert victim.stdout is not None
        async with asyncio.timeout(60):
            for _ in range(KILL_AFTER_BATCHES):
                line = await asyncio.to_thread(victim.stdout.readline)
                assert line.startswith("stored"), (tmp_path / "children.log").read_text()
    finally:
        os.kill(victim.pid, signal.SIGKILL)  # mid-load: the sink is still consuming
        victim.wait(10)

    await produce(kafka_bootstrap, topics.otlp, traffic.add(20, spans=50), partitions=3)
    survivor = await asyncio.to_thread(
        subprocess.run,
        child_command("drain", url, name, kafka_bootstrap, group, topics),
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert survivor.returncode == 0, survivor.stderr[-3000:]
    report = json.loads(survivor.stdout.strip().splitlines()[-1])
    print(f"after SIGKILL: {report['replayed']} batches replayed")
    assert {k: v for k, v in report.items() if k != "replayed"} == json.loads(
        json.dumps(asdict(exact(traffic)), default=str)
    )


# -- the child process ------------------------------------------------------------------------


async def child(mode: str, url: str, name: str, bootstrap: str, group: str, names: str) -> None:
    db = connect_database(url, name)
    migrate(db, TEST_RETENTION_DAYS)
    topics = SinkTopics(**json.loads(names))
    if mode == "run":
        sink = KafkaSink(
            db, TenantStore(db), Pricer(), bootstrap, group, topics=topics, max_rows=200,
            max_wait_s=0.2, commit_interval_s=0.5, consumer_config=CONSUMER,
        )  # fmt: skip

        def report() -> None:
            print("stored", flush=True)

        sink.before_commit = report
        await sink.run(asyncio.Event())  # until killed
        return
    sink = KafkaSink(
        db, TenantStore(db), Pricer(), bootstrap, group, topics=topics, max_rows=5_000,
        max_wait_s=0.2, commit_interval_s=0.2, consumer_config=CONSUMER,
    )  # fmt: skip
    try:
        await sink.run_until_idle(timeout_s=60)
    finally:
        await sink.close()
    result: dict[str, Any] = asdict(stored(db))
    result["replayed"] = sink.replayed_batches
    print(json.dumps(result, default=str), flush=True)
    if not url.startswith("chdb://"):
        db.command(f"DROP DATABASE IF EXISTS {name} SYNC")


if __name__ == "__main__":
    asyncio.run(child(*sys.argv[1:]))
