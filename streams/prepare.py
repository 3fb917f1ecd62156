"""Accepted requests -> one insert-ready Native block of span rows, plus the window input.

    prepare_block_reference(jobs, column_types, window_ns, pricer) -> PreparedBlock

The reference implementation, in Python: `streams.native_prepare.prepare_block` computes the
same thing with compiled code, and that is what runs. Pure (no I/O): normalise every
request, encode the rows as one ClickHouse Native block, and sum the LLM spans per tenant,
window and model for the window aggregator. It is the whole per-span cost of storing spans,
so it is what `streams.pool.PreparePool` runs in worker processes: the process that owns
the engine then only hands bytes and sums over. A request that cannot be normalised is
listed in `failures` (the caller sets it aside as a dead letter) and the others are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schema.models import TenantSettings
from schema.native import encode_native
from schema.spans import SPAN_COLUMNS, SpanBatch
from streams.normalize import normalize_payload
from streams.pricing import Pricer
from streams.windows import WindowPartial, partial_windows


@dataclass(frozen=True, slots=True)
class Job:
    """One accepted export request: a serialized `ExportTraceServiceRequest` and its tenant."""

    tenant_id: str
    received_at_ns: int
    payload: bytes
    settings: TenantSettings


@dataclass(slots=True)
class PreparedBlock:
    block: bytes  # Native block of SPAN_COLUMNS rows; b"" when there are none
    rows: int
    unpriced: int  # LLM spans stored with cost NULL (unknown model)
    windows: list[WindowPartial]  # the rows' LLM spans summed per tenant, window and model
    failures: list[tuple[int, str]] = field(default_factory=list)  # (job index, what failed)


def prepare_block_reference(
    jobs: Sequence[Job], column_types: Sequence[str], window_ns: int, pricer: Pricer
) -> PreparedBlock:
    """`window_ns` 0: no window sums (a caller that keeps no windows)."""
    batch = SpanBatch()
    failures: list[tuple[int, str]] = []
    for index, job in enumerate(jobs):
        try:
            rows = normalize_payload(
                job.payload, job.tenant_id, job.received_at_ns, job.settings, pricer
            )
        except Exception as exc:  # a bug or a request ingest should have refused
            failures.append((index, f"{type(exc).__name__}: {exc}"))
            continue
        batch.extend(rows)
    block = encode_native(SPAN_COLUMNS, column_types, batch.columns) if len(batch) else b""
    windows = partial_windows(batch, window_ns) if window_ns else []
    return PreparedBlock(block, len(batch), batch.unpriced, windows, failures)
