"""End-to-end benchmark of embedded llmtel: OTLP/HTTP in, spans queryable out.

Starts `llmtel up` on free ports with a fresh data directory, then, from this separate
process, drives it with pre-encoded OTLP/HTTP protobuf requests of 512 typical spans:

1. saturation: N concurrent senders for D seconds (503 -> retry after a short pause);
   sustained rate = acknowledged spans / time until all of them are stored;
2. latency: open-loop load at 70% of that rate; p50/p99 acknowledgement latency;
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
    otlp: httpx.AsyncClient, bodies: list[bytes], senders: int, seconds: float
) -> tuple[int, int, float]:
    acked = 0
    refused = 0
    stop_at = time.perf_counter() + seconds

    async def sender(offset: int) -> None:
        nonlocal acked, refused
        i = offset
        while time.perf_counter() < stop_at:
            response = await otlp.post("/v1/traces", content=bodies[i % len(bodies)])
            if response.status_code == 200:
                acked += SPANS_PER_REQUEST
                i += senders
            elif response.status_code == 503:
                refused += 1
                await asyncio.sleep(0.02)
            else:
                raise RuntimeError(f"unexpected {response.status_code}: {response.text}")

    started = time.perf_counter()
    await asyncio.gather(*(sender(k) for k in range(senders)))
    return acked, refused, started


async def paced(
    otlp: httpx.AsyncClient,
    api: httpx.AsyncClient,
    bodies: list[bytes],
    spans_per_s: float,
    seconds: float,
    marker_key: str,
) -> tuple[list[float], list[float], int]:
    interval = SPANS_PER_REQUEST / spans_per_s
    latencies: list[float] = []
    freshness: list[float] = []
    refused = 0
    tasks: list[asyncio.Task[None]] = []

    async def send(body: bytes) -> None:
        nonlocal refused
        t0 = time.perf_counter()
        response = await otlp.post("/v1/traces", content=body)
        if response.status_code == 200:
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
            response = await otlp.post("/v1/traces", content=body)
            acked_at = time.perf_counter()
            if response.status_code != 200:
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

    marker_task = asyncio.create_task(markers())
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + n * interval
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(send(bodies[n % len(bodies)])))
        n += 1
    await asyncio.gather(*tasks)
    await marker_task
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
        headers = {"authorization": f"Bearer {key}", "content-type": "application/x-protobuf"}
        print(f"encoding {args.requests} requests of {SPANS_PER_REQUEST} typical spans ...")
        bodies = [typical_request(SPANS_PER_REQUEST) for _ in range(args.requests)]
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{server.http_port}", headers=headers,
                timeout=60, limits=limits,
            ) as otlp,
            httpx.AsyncClient(
                base_url=server.api_url, headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=60,
            ) as api,
        ):  # fmt: skip
            acked, refused, started = await saturate(otlp, bodies, args.senders, args.seconds)
            ack_done = time.perf_counter()
            while await stored_requests(api) < acked:
                await asyncio.sleep(0.05)
            stored_at = time.perf_counter()
            sustained = acked / (stored_at - started)
            print(
                f"saturation: {acked} spans acked in {ack_done - started:.1f}s "
                f"({acked / (ack_done - started):,.0f} spans/s acked), all stored after "
                f"{stored_at - started:.1f}s -> sustained {sustained:,.0f} spans/s end to end; "
                f"{refused} requests refused with 503 (backpressure)"
            )
            target = 0.7 * sustained
            latencies, freshness, refused2 = await paced(
                otlp, api, bodies, target, args.seconds, key
            )
            print(
                f"at 70% ({target:,.0f} spans/s, {len(latencies)} requests): ack latency "
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
    asyncio.run(main(parser.parse_args()))
