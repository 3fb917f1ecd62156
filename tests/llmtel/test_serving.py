"""The server's garbage-collector set-up: what startup built is frozen, its garbage is not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from llmtel.serving import GC_THRESHOLDS, freeze_startup_heap, tune_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_startup_state_is_frozen_and_startup_garbage_collected(restore_gc: None) -> None:
    gc.unfreeze()
    kept = [[i] for i in range(50_000)]  # long-lived state built at startup
    assert gc.is_tracked(kept[0])  # lists are walked by the collector (atomic dicts are not)
    cycle_a, cycle_b = Node(), Node()
    cycle_a.other, cycle_b.other = cycle_b, cycle_a  # garbage only the collector can free
    dead = weakref.ref(cycle_a)
    del cycle_a, cycle_b
    freeze_startup_heap()
    assert dead() is None  # collected first, not frozen for good
    assert gc.get_freeze_count() >= len(kept)
    tracked = {id(o) for o in gc.get_objects()}
    assert id(kept) not in tracked and id(kept[0]) not in tracked  # never walked again


def test_tune_gc_sets_the_server_thresholds(restore_gc: None) -> None:
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
