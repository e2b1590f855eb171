"""The one timing implementation: interleaved runs with order reversal, medians and percentiles.

Two models timed one after the other see different machines (a neighbour's job starts, the CPU
clocks down). Interleaving spreads that noise over all of them alike: each *round* runs every
callable ``burst`` times in turn, and every other round visits them in reverse order (A B, B A,
...), so whichever runs first after a switch (cold caches, a spinning thread pool of the other
session) does not always penalize the same one. A ratio of two medians from one interleaved
timing is what comparisons should use; absolute times drift with the load.

Used by the search (:func:`onnxsqueeze.search.latency.compare_latency`), by
:func:`onnxsqueeze.runtime.time_sessions` (the distillation report, the resolution sweep, the
benchmarks). The full benchmark harness (:mod:`onnxsqueeze.bench.harness`: IO binding, memory,
throughput) keeps its own loop for what it measures beyond wall time per run.
"""

# NOTE: this module imports nothing from onnxsqueeze (runtime.py depends on it).

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    """The wall times of one callable, in ms, grouped by round (one burst per round)."""

    rounds: tuple[tuple[float, ...], ...]

    @property
    def samples(self) -> np.ndarray:
        return np.array([t for r in self.rounds for t in r], dtype=np.float64)

    @property
    def runs(self) -> int:
        return sum(len(r) for r in self.rounds)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples))

    @property
    def round_median_ms(self) -> float:
        """The median over rounds of each round's median (robust to one disturbed round)."""
        return float(np.median([np.median(r) for r in self.rounds]))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of every timed run, in ms."""
        return float(np.percentile(self.samples, q))

    def to_dict(self) -> dict[str, Any]:
        p50, p90, p99 = np.percentile(self.samples, [50, 90, 99])
        return {"runs": self.runs, "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}


def interleaved(
    fns: Sequence[Callable[[], Any]],
    *,
    warmup: int = 3,
    burst: int = 5,
    min_rounds: int = 1,
    min_runs: int = 0,
    min_seconds: float = 0.0,
    max_runs: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Timing]:
    """Time ``fns`` interleaved: ``warmup`` untimed calls each, then rounds of ``burst`` calls each.

    Rounds alternate the order (forward, reversed, forward...). Rounds continue until every
    callable has at least ``min_runs`` timed calls, at least ``min_rounds`` rounds ran and
    ``min_seconds`` have passed since the first timed call; or until ``max_runs`` calls each,
    whichever comes first.

    Returns:
        One :class:`Timing` per callable, in the order given.
    """
    if not fns:
        return []
    for fn in fns:
        for _ in range(warmup):
            fn()
    per: list[list[tuple[float, ...]]] = [[] for _ in fns]
    order = list(range(len(fns)))
    start = clock()
    runs = rounds = 0
    while True:
        for k in order if rounds % 2 == 0 else order[::-1]:
            fn, times = fns[k], []
            for _ in range(burst):
                t = clock()
                fn()
                times.append((clock() - t) * 1e3)
            per[k].append(tuple(times))
        rounds += 1
        runs += burst
        if max_runs is not None and runs >= max_runs:
            break
        if runs >= min_runs and rounds >= min_rounds and clock() - start >= min_seconds:
            break
    return [Timing(tuple(r)) for r in per]
