"""The compiled normaliser against the Python reference, on the same jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

from streams.native_prepare import prepare_block
from streams.prepare import Job, PreparedBlock, prepare_block_reference
from streams.pricing import Pricer
from tests.schema.test_native import span_column_types

WINDOW_NS = 10 * 10**9
PRICER = Pricer()


def assert_native_agrees(jobs: Sequence[Job], window_ns: int = WINDOW_NS) -> PreparedBlock:
    """Both implementations on `jobs`: byte-identical blocks, equal sums and failures."""
    types = span_column_types()
    reference = prepare_block_reference(jobs, types, window_ns, PRICER)
    native = prepare_block(jobs, types, window_ns, PRICER)
    assert [index for index, _ in native.failures] == [i for i, _ in reference.failures]
    assert native.rows == reference.rows
    assert native.unpriced == reference.unpriced
    if native.block != reference.block:
        raise AssertionError(_first_difference(native.block, reference.block))
    assert len(native.windows) == len(reference.windows)
    for mine, theirs in zip(native.windows, reference.windows, strict=True):
        assert replace(mine, cost=Decimal(0)) == replace(theirs, cost=Decimal(0))
        # The same value and exponent where the reference's 28-digit Decimal context is
        # exact; beyond (absurd costs from attributes), the compiled sums stay exact.
        if len(theirs.cost.as_tuple().digits) < 28:
            assert str(mine.cost) == str(theirs.cost), (mine.cost, theirs.cost)
        else:
            assert abs(mine.cost - theirs.cost) <= abs(theirs.cost) * Decimal("1e-26")
    return native


def _first_difference(native: bytes, reference: bytes) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(native, reference, strict=False)) if a != b),
        min(len(native), len(reference)),
    )
    return (
        f"blocks differ at byte {at} of {len(reference)} (native {len(native)}): "
        f"native {native[max(0, at - 24) : at + 24]!r} reference "
        f"{reference[max(0, at - 24) : at + 24]!r}"
    )
