"""`prepare_block` through the compiled normaliser (`llmtel_native`, Rust, in `native/`).

The Python normaliser (`streams.normalize`, `streams.prepare.prepare_block_reference`) is
the specification: the compiled one must produce byte-identical Native blocks and equal
window sums (tests/native). Everything that is policy or data stays here in Python and is
handed to it: the semantic-convention tables, the tenant's privacy filter, the prices. The
compiled code walks the wire format and applies them; for rare shapes (array or map
attribute values, unusual token-count text, cost attributes, prices that are not a linear
integer form) it calls the functions below, which are the reference's own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from llmtel_native import Normalizer

from schema import semconv
from schema.models import ModelPriceOverride
from schema.spans import SPAN_COLUMNS
from streams.normalize import (
    decode_key_value,
    price_quote,
    service_name_entry,
    token_count,
    ttft_ms,
)
from streams.prepare import Job, PreparedBlock
from streams.pricing import (
    PriceFn,
    Pricer,
    e12_to_usd,
    linear_form,
    parse_cost,
    usd_to_e12,
)
from streams.redact import content_filter, is_content
from streams.windows import WindowPartial, bucket_durations

# A quote as the compiled code takes it: (source, linear integers or None, exact function).
NativeQuote = tuple[str, tuple[int, ...] | None, Any] | None


def prepare_block(
    jobs: Sequence[Job], column_types: Sequence[str], window_ns: int, pricer: Pricer
) -> PreparedBlock:
    """What `streams.prepare.prepare_block_reference` returns, computed by compiled code.

    `window_ns` 0: no window sums (a caller that keeps no windows, like the Kafka sink)."""
    pricer.refresh()
    native_jobs = [
        (
            job.tenant_id,
            job.received_at_ns,
            job.payload,
            content_filter(job.settings.privacy),
            functools.partial(_quote, pricer, job.settings.price_overrides),
        )
        for job in jobs
    ]
    block, rows, unpriced, sums, failures = _normalizer(tuple(column_types), window_ns).prepare(
        native_jobs
    )
    windows = []
    for fields in sums:  # WindowPartial's fields in order, the cost in 1e-12 USD
        cost = fields[8]
        partial = WindowPartial(
            *fields[:8], Decimal(0) if cost is None else e12_to_usd(cost), *fields[9:]
        )
        bucket_durations(partial)
        windows.append(partial)
    return PreparedBlock(block, rows, unpriced, windows, list(failures))


@functools.cache
def _normalizer(column_types: tuple[str, ...], window_ns: int) -> Normalizer:
    slot_of = {
        key: (slot, rank)
        for slot, keys in semconv.SLOT_ATTRIBUTES.items()
        for rank, key in enumerate(keys)
    }
    return Normalizer(
        slot_of,
        dict(semconv.TTFT_TO_MS),
        list(semconv.SPAN_KIND_NAMES),
        list(semconv.STATUS_CODE_NAMES),
        semconv.SERVICE_NAME,
        semconv.MESSAGE_EVENT_PREFIX,
        sorted(semconv.MESSAGE_EVENT_CONTENT_ATTRIBUTES),
        list(SPAN_COLUMNS),
        list(column_types),
        window_ns,
        is_content,
        decode_key_value,
        token_count,
        ttft_ms,
        _cost_attribute_e12,
        service_name_entry,
    )


def _cost_attribute_e12(text: str) -> int | None:
    usd = parse_cost(text)
    return None if usd is None else usd_to_e12(usd)


def _quote(
    pricer: Pricer, overrides: dict[str, ModelPriceOverride], provider: str, model: str, when: int
) -> NativeQuote:
    """The price of (provider, model) on the day of `when`, as `normalize_payload` picks it."""
    fn, source = price_quote(pricer, overrides, provider, model, when)
    if fn is None:
        return None
    return source, linear_form(fn), functools.partial(_exact_e12, fn)


def _exact_e12(fn: PriceFn, inp: int, out: int, cr: int, cw: int, rs: int, ts: int) -> int | None:
    usd = fn(inp, out, cr, cw, rs, ts)
    return None if usd is None else usd_to_e12(usd)
