"""Benchmark of the distributed topology co-located on this machine: a real Kafka broker,
`llmtel ingest`, `llmtel sink --with-api` (chDB) and, with --streams, `llmtel streams`.

    python bench/bench_distributed.py                 # end to end: OTLP -> ... -> queryable
    python bench/bench_distributed.py --ingest-only   # the ingest tier alone: OTLP -> Kafka

Prints sustained spans/s, p50/p99 ack latency at 70% load, freshness and peak RSS per
process. The load generator is this process (HTTP protobuf, pre-encoded 512-span requests).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_embedded import SPANS_PER_REQUEST, paced, pct, peak_rss_mib, saturate  # noqa: E402
from bench.loadgen import OtlpConnection, encode_post  # noqa: E402
from bench.workload import typical_request  # noqa: E402
from llmtel.devkafka import KafkaBroker  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    ADMIN_KEY,
    RoleProcess,
    free_port,
    role_env,
    run_cli,
)


async def stored(api: httpx.AsyncClient) -> int:
    response = await api.get("/api/v1/usage", params={"tenant": "bench"})
    response.raise_for_status()
    count: int = response.json()["totals"]["requests"]
    return count


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="llmtel-bench-dist-"))
    broker = KafkaBroker()
    broker.start(data_dir=base / "kafka")
    api_port, http_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    env = role_env(
        LLMTEL_KAFKA_BOOTSTRAP=broker.bootstrap,
        LLMTEL_DATA_DIR=str(base / "data"),
        LLMTEL_API_URL=api_url,
        LLMTEL_HOST="127.0.0.1",
        LLMTEL_LOG_LEVEL="WARNING",
        LLMTEL_KAFKA_TOPIC_PARTITIONS=str(args.partitions),
    )
    roles: list[RoleProcess] = []
    try:
        done = run_cli(env, "migrate", "--kafka")
        assert done.returncode == 0, done.stderr
        sink = RoleProcess(
            "sink", ["sink", "--with-api", "--api-port", str(api_port)], env, base / "sink.log"
        )
        sink.start()
        roles.append(sink)
        sink.wait_http(f"{api_url}/readyz")
        if args.streams:
            streams_env = env | {"LLMTEL_METRICS_PORT": str(free_port())}
            streams = RoleProcess("streams", ["streams"], streams_env, base / "streams.log")
            streams.start()
            roles.append(streams)
        ingest_env = env | {"LLMTEL_METRICS_PORT": str(free_port())}
        ingest = RoleProcess(
            "ingest",
            ["ingest", "--otlp-http-port", str(http_port), "--otlp-grpc-port", str(free_port()),
             *(["--no-auth"] if args.ingest_only else ["--auth-url", api_url])],
            ingest_env,
            base / "ingest.log",
        )  # fmt: skip
        ingest.start()
        roles.append(ingest)
        ingest.wait_http(f"http://127.0.0.1:{http_port}/v1/traces")
        if args.ingest_only:
            sink.stop()  # the topic just fills up: this measures OTLP -> Kafka only
        created = (
            run_cli(env, "tenant", "create", "bench", "--json") if not args.ingest_only else None
        )
        key = ADMIN_KEY
        if created is not None:
            import json

            key = json.loads(created.stdout)["api_key"]
        print(f"encoding {args.requests} requests of {SPANS_PER_REQUEST} typical spans ...")
        bodies = [typical_request(SPANS_PER_REQUEST) for _ in range(args.requests)]
        requests = [encode_post(body, key) for body in bodies]
        async with httpx.AsyncClient(
            base_url=api_url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
        ) as api:
            connections = [
                await OtlpConnection.open("127.0.0.1", http_port) for _ in range(args.senders)
            ]
            acked, refused, started = await saturate(connections, requests, args.seconds)
            for connection in connections:
                await connection.close()
            acked_at = time.perf_counter()
            print(
                f"ingest: {acked} spans acked by Kafka in {acked_at - started:.1f}s -> "
                f"{acked / (acked_at - started):,.0f} spans/s; {refused} refused (503)"
            )
            if not args.ingest_only:
                while await stored(api) < acked:
                    await asyncio.sleep(0.1)
                done_at = time.perf_counter()
                sustained = acked / (done_at - started)
                print(
                    f"end to end: all stored after {done_at - started:.1f}s -> "
                    f"{sustained:,.0f} spans/s sustained (lag drained "
                    f"{done_at - acked_at:.1f}s after the last ack)"
                )
                target = 0.7 * sustained
                latencies, freshness, refused2 = await paced(
                    "127.0.0.1", http_port, api, requests, target, args.seconds, key
                )
                print(
                    f"at 70% ({target:,.0f} spans/s): ack p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
                    f"p99 {pct(latencies, 0.99) * 1000:.1f} ms; refused {refused2}"
                )
                if freshness:
                    print(
                        f"freshness: median {statistics.median(freshness):.2f} s, "
                        f"max {max(freshness):.2f} s"
                    )
        for role in roles:
            if role.proc is not None:
                print(f"peak RSS {role.name}: {peak_rss_mib(role.proc.pid):.0f} MiB")
    finally:
        for role in reversed(roles):
            role.stop()
        broker.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ingest-only", action="store_true")
    parser.add_argument("--streams", action="store_true", help="also run a streams worker")
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
