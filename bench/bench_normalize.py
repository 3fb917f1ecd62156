"""Normalisation cost per typical LLM span: prints µs/span (min of several runs).

Run: `python -m bench.bench_normalize [--spans 512] [--runs 30]`.

"Typical" is `bench.workload.typical_request`: GenAI client spans with ~11 attributes, 6
resource attributes, a mix of priced models, 2% errors, content on 10% of spans (redacted by
the default privacy policy), plus one event (`gen_ai.choice`) on a quarter of the spans here.
Each measured request is new (new ids and response ids) after a warm-up, as in production.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.workload import typical_request  # noqa: E402
from schema.messages import OtlpMessage  # noqa: E402
from schema.models import TenantSettings  # noqa: E402
from streams.normalize import normalize, normalize_payload  # noqa: E402
from streams.pricing import Pricer  # noqa: E402

EVENT_EVERY = 4  # one event on a quarter of the spans


def build_request(spans: int, seed: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest.FromString(typical_request(spans, seed=seed))
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        if i % EVENT_EVERY == 0:
            event = span.events.add(
                time_unix_nano=span.start_time_unix_nano + 120_000_000, name="gen_ai.choice"
            )
            event.attributes.append(
                KeyValue(key="gen_ai.response.finish_reason", value=AnyValue(string_value="stop"))
            )
    return request


def measure(spans: int, runs: int) -> tuple[float, float, float, int]:
    """(normalize() µs/span, normalize_payload() µs/span, median of normalize(), spans)."""
    settings = TenantSettings()
    pricer = Pricer()
    now = time.time_ns()
    warmup = [build_request(spans, seed) for seed in range(10_000, 10_010)]
    requests = [build_request(spans, seed) for seed in range(runs)]
    payloads = [build_request(spans, seed).SerializeToString() for seed in range(100, 100 + runs)]
    # Warm the caches (price functions, repeated attributes) the way a running process has
    # them; every measured request is still new (new ids, unseen response ids).
    for request in warmup:
        normalize(OtlpMessage("bench", now, request, spans), settings, pricer)
    per_message: list[float] = []
    per_payload: list[float] = []
    rows = 0
    for request, payload in zip(requests, payloads, strict=True):
        message = OtlpMessage("bench", now, request, spans)
        t0 = time.perf_counter()
        batch = normalize(message, settings, pricer)
        t1 = time.perf_counter()
        normalize_payload(payload, "bench", now, settings, pricer)
        t2 = time.perf_counter()
        per_message.append(t1 - t0)
        per_payload.append(t2 - t1)
        rows = len(batch)
    scale = 1e6 / spans
    return (
        min(per_message) * scale,
        min(per_payload) * scale,
        statistics.median(per_message) * scale,
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    per_message, per_payload, median, rows = measure(args.spans, args.runs)
    print(
        f"normalize(): {per_message:.2f} µs/span (min of {args.runs} requests of {rows} spans;"
        f" median {median:.2f})"
    )
    print(f"normalize_payload() from serialized bytes: {per_payload:.2f} µs/span")


if __name__ == "__main__":
    main()
