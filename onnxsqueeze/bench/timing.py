"""The one timing implementation: interleaved runs with order reversal, medians and percentiles.

Two models timed one after the other see different machines (a neighbour's job starts, the CPU
clocks down). Interleaving spreads that noise over all of them alike: each *round* runs every
callable ``burst`` times in turn, and every other round visits them in reverse order (A B, B A,
...), so whichever runs first after a switch (cold caches, a spinning thread pool of the other
session) does not always penalize the same one. A ratio of two medians from one interleaved
timing is what comparisons should use; absolute times drift with the load.

Used by the search (:func:`onnxsqueeze.search.latency.compare_latency`), by
:func:`onnxsqueeze.runtime.time_sessions` (the distillation report, the resolution sweep, the
benchmarks) and by the benchmark harness (:mod:`onnxsqueeze.bench.harness`), which times
segments (a count and a duration per model and round, IO-binding steps apart) with
:func:`interleaved_rounds` and :func:`sample`, and summarizes them with :func:`latency_stats`
and :func:`ratio_with_spread`.
"""

# NOTE: this module imports nothing from onnxsqueeze (runtime.py depends on it).

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

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
    start = clock()
    runs = 0
    for rounds, order in enumerate(round_orders(len(fns)), start=1):
        for k in order:
            fn, times = fns[k], []
            for _ in range(burst):
                t = clock()
                fn()
                times.append((clock() - t) * 1e3)
            per[k].append(tuple(times))
        runs += burst
        if max_runs is not None and runs >= max_runs:
            break
        if runs >= min_runs and rounds >= min_rounds and clock() - start >= min_seconds:
            break
    return [Timing(tuple(r)) for r in per]


T = TypeVar("T")


def round_orders(n: int, rounds: int | None = None) -> Iterator[list[int]]:
    """The visiting order of each round: ``0..n-1``, then reversed, then forward... (``rounds`` of
    them; endless when None)."""
    forward = list(range(n))
    r = 0
    while rounds is None or r < rounds:
        yield forward if r % 2 == 0 else forward[::-1]
        r += 1


def interleaved_rounds(n: int, rounds: int, segment: Callable[[int], T]) -> list[list[T]]:
    """``segment(i)`` for each of ``n`` callables per round, the order reversed every round.

    Returns:
        Per callable, its segments' results in round order.
    """
    per: list[list[T]] = [[] for _ in range(n)]
    for order in round_orders(n, rounds):
        for i in order:
            per[i].append(segment(i))
    return per


def sample(
    step: Callable[[], Sequence[int]],
    min_count: int,
    min_ns: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> np.ndarray:
    """Call ``step`` until it ran ``min_count`` times and ``min_ns`` passed (both minimums, as MLPerf).

    ``step`` times its own parts and returns their durations in ns (one run: ``(t1 - t0,)``;
    IO binding: copy in, run, copy out).

    Returns:
        ``[runs, parts]`` int64 ns.
    """
    samples: list[Sequence[int]] = []
    start = clock()
    while True:
        samples.append(step())
        if len(samples) >= min_count and clock() - start >= min_ns:
            return np.asarray(samples, dtype=np.int64)


def latency_stats(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Count, mean, std (n-1), min, p50, p90, p95, p99 and max of latency samples in ms.

    Percentiles interpolate linearly between order statistics (numpy's default, the "type 7" of
    Hyndman and Fan): for 1..100, p50 = 50.5, p90 = 90.1, p99 = 99.01.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
    return {
        "count": int(x.size),
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(x.max()),
    }


TAIL_MIN_SAMPLES = {"p90": 10, "p95": 20, "p99": 100}
"""Samples a round needs before its own tail percentile means anything (1 / (1 - p))."""


def ratio_with_spread(
    candidate: Sequence[np.ndarray], baseline: Sequence[np.ndarray], metric: str, *, inverse: bool = False
) -> dict[str, float | None]:
    """The ratio candidate/baseline of a latency metric: pooled, and min-max over rounds.

    ``inverse`` gives the ratio of the reciprocals (throughput from mean latency). ``low`` and
    ``high`` are None for a tail percentile when a round has too few samples to estimate it
    (p99 of 10 samples is just their maximum).
    """

    def value(rounds: Sequence[np.ndarray]) -> float:
        return latency_stats(np.concatenate(list(rounds)))[metric]

    def ratio(c: float, b: float) -> float:
        return b / c if inverse else c / b

    pooled = ratio(value(candidate), value(baseline))
    fewest = min(len(r) for r in (*candidate, *baseline))
    if fewest < TAIL_MIN_SAMPLES.get(metric, 1):
        return {"ratio": pooled, "low": None, "high": None}
    per_round = [
        ratio(latency_stats(c)[metric], latency_stats(b)[metric])
        for c, b in zip(candidate, baseline, strict=True)
    ]
    return {"ratio": pooled, "low": min(per_round), "high": max(per_round)}
