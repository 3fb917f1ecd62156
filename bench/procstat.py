"""CPU time of a process tree from /proc, so benchmarks can report CPU per span.

Throughput on a shared 2-core machine moves with whatever else runs; CPU seconds spent per
span by the server (and its worker processes) hardly do, and say what two idle cores give.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(child) for child in task.read_text().split())
    return found


def tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            todo.extend(_children(current))
        except FileNotFoundError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` (all its threads) so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of `pid` and each live descendant, by pid."""
    return {member: cpu_seconds(member) for member in tree(pid)}
