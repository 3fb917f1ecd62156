"""End-to-end benchmark of embedded llmtel: OTLP/HTTP in, spans queryable out.

Starts `llmtel up` on free ports with a fresh data directory, then, from this separate
process, drives it with pre-encoded OTLP/HTTP protobuf requests of 512 typical spans:

1. saturation: N concurrent senders for D seconds (503 -> retry after a short pause);
   sustained rate = acknowledged spans / time until all of them are stored, and the steady
   stored rate over the last two thirds of D; server CPU per span (from /proc);
2. latency: open-loop load at 70% of that rate (or --paced-rate); p50/p99 acknowledgement latency;
3. freshness (during 2): a marker span's time from acknowledgement to being queryable;
4. peak RSS of the server process.

    python bench/bench_embedded.py [--senders 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import OtlpConnection, encode_post  # noqa: E402
from bench.procstat import tree_cpu_seconds  # noqa: E402
from bench.workload import typical_request  # noqa: E402
from tests.integration.harness import ADMIN_KEY, LlmtelProcess  # noqa: E402

SPANS_PER_REQUEST = 512


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def stored_requests(api: httpx.AsyncClient) -> int:
    response = await api.get("/api/v1/usage", params={"tenant": "bench"})
    response.raise_for_status()
    count: int = response.json()["totals"]["requests"]
    return count


async def saturate(
    connections: list[OtlpConnection], requests: list[bytes], seconds: float
) -> tuple[int, int, float]:
    """One sender per connection, each sending as fast as it is answered."""
    acked = 0
    refused = 0
    stop_at = time.perf_counter() + seconds
    senders = len(connections)

    async def sender(offset: int, connection: OtlpConnection) -> None:
        nonlocal acked, refused
        i = offset
        while time.perf_counter() < stop_at:
            status = await connection.post(requests[i % len(requests)])
            if status == 200:
                acked += SPANS_PER_REQUEST
                i += senders
            elif status == 503:
                refused += 1
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"unexpected HTTP status {status}")

    started = time.perf_counter()
    await asyncio.gather(*(sender(k, c) for k, c in enumerate(connections)))
    return acked, refused, started


async def stored_rate(api: httpx.AsyncClient, seconds: float, warmup: float) -> float:
    """Spans stored per second while saturated, from `warmup` s in to the end: the steady
    rate, unlike `acked / time to store all`, which the bus's backlog at the end drags."""
    await asyncio.sleep(warmup)
    t0, n0 = time.perf_counter(), await stored_requests(api)
    await asyncio.sleep(seconds - warmup)
    t1, n1 = time.perf_counter(), await stored_requests(api)
    return (n1 - n0) / (t1 - t0)


async def paced(
    host: str,
    port: int,
    api: httpx.AsyncClient,
    requests: list[bytes],
    spans_per_s: float,
    seconds: float,
    marker_key: str,
) -> tuple[list[float], list[float], int]:
    interval = SPANS_PER_REQUEST / spans_per_s
    latencies: list[float] = []
    freshness: list[float] = []
    refused = 0
    tasks: list[asyncio.Task[None]] = []

    idle: list[OtlpConnection] = []

    async def send(request: bytes) -> None:
        nonlocal refused
        t0 = time.perf_counter()
        connection = idle.pop() if idle else await OtlpConnection.open(host, port)
        status = await connection.post(request)
        idle.append(connection)
        if status == 200:
            latencies.append(time.perf_counter() - t0)
        else:
            refused += 1

    async def markers() -> None:
        end = time.perf_counter() + seconds - 1
        while time.perf_counter() < end:
            body = typical_request(1, service="freshness-marker")
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
            )

            trace_id = (
                ExportTraceServiceRequest.FromString(body)
                .resource_spans[0]
                .scope_spans[0]
                .spans[0]
                .trace_id.hex()
            )
            status = await marker_connection.post(encode_post(body, marker_key))
            acked_at = time.perf_counter()
            if status != 200:
                continue
            while True:
                found = await api.get(
                    f"/api/v1/traces/{trace_id}", headers={"authorization": f"Bearer {marker_key}"}
                )
                if found.status_code == 200:
                    freshness.append(time.perf_counter() - acked_at)
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)

    marker_connection = await OtlpConnection.open(host, port)
    marker_task = asyncio.create_task(markers())
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + n * interval
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(send(requests[n % len(requests)])))
        n += 1
    await asyncio.gather(*tasks)
    await marker_task
    await marker_connection.close()
    for connection in idle:
        await connection.close()
    return latencies, freshness, refused


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="llmtel-bench-")) / "data"
    server = LlmtelProcess(data, env_overrides={"LLMTEL_LOG_LEVEL": "WARNING"})
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    try:
        key = server.create_tenant("bench")
        print(f"encoding {args.requests} requests of {SPANS_PER_REQUEST} typical spans ...")
        bodies = [typical_request(SPANS_PER_REQUEST) for _ in range(args.requests)]
        requests = [encode_post(body, key) for body in bodies]
        async with httpx.AsyncClient(
            base_url=server.api_url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
        ) as api:
            connections = [
                await OtlpConnection.open("127.0.0.1", server.http_port)
                for _ in range(args.senders)
            ]
            cpu_before = tree_cpu_seconds(pid)
            client_before = time.process_time()
            (acked, refused, started), steady = await asyncio.gather(
                saturate(connections, requests, args.seconds),
                stored_rate(api, args.seconds, args.seconds / 3),
            )
            ack_done = time.perf_counter()
            for connection in connections:
                await connection.close()
            while await stored_requests(api) < acked:
                await asyncio.sleep(0.05)
            stored_at = time.perf_counter()
            cpu_after = tree_cpu_seconds(pid)
            client_cpu = time.process_time() - client_before
            sustained = acked / (stored_at - started)
            print(
                f"saturation: {acked} spans acked in {ack_done - started:.1f}s "
                f"({acked / (ack_done - started):,.0f} spans/s acked), all stored after "
                f"{stored_at - started:.1f}s -> sustained {sustained:,.0f} spans/s end to end; "
                f"{refused} requests refused with 503 (backpressure)"
            )
            print(
                f"steady stored rate while saturated (from {args.seconds / 3:.0f} s to "
                f"{args.seconds:.0f} s): {steady:,.0f} spans/s"
            )
            main_cpu = cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0)
            workers_cpu = sum(
                seconds - cpu_before.get(member, 0.0)
                for member, seconds in cpu_after.items()
                if member != pid
            )
            per_span = (main_cpu + workers_cpu) / acked * 1e6
            print(
                f"CPU per stored span: server {main_cpu / acked * 1e6:.1f} us "
                f"+ worker processes {workers_cpu / acked * 1e6:.1f} us "
                f"(+ this load generator {client_cpu / acked * 1e6:.1f} us); "
                f"server CPU alone would allow {2e6 / per_span:,.0f} spans/s on 2 idle cores"
            )
            target = args.paced_rate or 0.7 * sustained
            share = f"{target / sustained:.0%} of sustained"
            latencies, freshness, refused2 = await paced(
                "127.0.0.1", server.http_port, api, requests, target, args.seconds, key
            )
            print(
                f"paced at {target:,.0f} spans/s ({share}, {len(latencies)} requests): ack latency "
                f"p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
                f"p99 {pct(latencies, 0.99) * 1000:.1f} ms, "
                f"max {max(latencies, default=0) * 1000:.1f} ms; refused {refused2}"
            )
            if freshness:
                print(
                    f"freshness (ack -> queryable): median {statistics.median(freshness):.2f} s, "
                    f"max {max(freshness):.2f} s over {len(freshness)} markers"
                )
        print(f"server peak RSS: {peak_rss_mib(pid):.0f} MiB; machine: {os.cpu_count()} cores")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--requests", type=int, default=64, help="distinct pre-encoded requests")
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=0,
        help="spans/s of the latency phase (default: 70%% of the measured sustained rate)",
    )
    asyncio.run(main(parser.parse_args()))
