"""Smaller granules where reads are narrow (schema/rebuild.py: no row is copied).

- otel_traces_trace_id_ts, 1,024 rows: a trace lookup reads one granule per part by
  TraceId; at 100M spans (25M traces) 8,192-row granules made it 16-29 ms, 1,024 9-11 ms.
  Old parts keep their granules until merged or dropped by TTL.
- llm_latency_1m and llm_latency_1h, 128 rows: histogram_quantile over a 5 m rate reads a
  few rows of bucket-array states per tenant, and deserialised whole 8,192-row granules
  (15 and 10 ms at 100M spans). No TTL, so old partitions are rewritten at once.
"""

from schema.clickhouse import Database
from schema.rebuild import regranulate


def apply(db: Database, ttl_days: int) -> None:
    regranulate(db, "otel_traces_trace_id_ts", 1024)
    regranulate(db, "llm_latency_1m", 128, rewrite=True)
    regranulate(db, "llm_latency_1h", 128, rewrite=True)
