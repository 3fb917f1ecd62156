"""Normalisation cost per typical LLM span: prints µs/span (min of several runs).

Run: `python -m bench.bench_normalize [--spans 512] [--runs 30]`.

"Typical" is `bench.workload.typical_request`: GenAI client spans with ~11 attributes, 6
resource attributes, a mix of priced models, 2% errors, content on 10% of spans (redacted by
the default privacy policy), plus one event on 20% of spans here. Each run normalises a fresh
request (new ids), so the attribute cache sees what it sees in production.
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bench.workload import typical_request
from schema.messages import OtlpMessage
from schema.models import TenantSettings
from streams.normalize import normalize, normalize_payload
from streams.pricing import Pricer

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


def measure(spans: int, runs: int) -> tuple[float, float, int]:
    settings = TenantSettings()
    pricer = Pricer()
    requests = [build_request(spans, seed) for seed in range(runs)]
    payloads = [r.SerializeToString() for r in requests]
    messages = [
        OtlpMessage("bench", time.time_ns(), request, spans) for request in requests
    ]
    # Warm caches (price plans, attribute cache) the way a running process has them.
    for message in messages[:3]:
        normalize(message, settings, pricer)
    best_message = best_payload = float("inf")
    rows = 0
    for message, payload in zip(messages, payloads, strict=True):
        t0 = time.perf_counter()
        batch = normalize(message, settings, pricer)
        t1 = time.perf_counter()
        normalize_payload(payload, "bench", message.received_at_ns, settings, pricer)
        t2 = time.perf_counter()
        best_message = min(best_message, t1 - t0)
        best_payload = min(best_payload, t2 - t1)
        rows = len(batch)
    return best_message / spans * 1e6, best_payload / spans * 1e6, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans", type=int, default=512)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    per_message, per_payload, rows = measure(args.spans, args.runs)
    print(f"normalize(): {per_message:.2f} µs/span ({rows} spans per request, min of {args.runs})")
    print(f"normalize_payload() from serialized bytes: {per_payload:.2f} µs/span")


if __name__ == "__main__":
    main()
