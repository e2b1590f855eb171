"""The one timing loop: interleaving with order reversal, stopping rules and statistics, on a
fake clock (no wall-clock assertions)."""

from __future__ import annotations

import pytest

from onnxsqueeze.bench.timing import Timing, interleaved


class FakeClock:
    """Each call of a timed callable advances the clock by that callable's cost."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def fn(self, name: str, cost: float):
        def run() -> None:
            self.calls.append(name)
            self.now += cost

        return run


def test_rounds_alternate_the_order_and_measure_each_callable():
    clock = FakeClock()
    a, b = clock.fn("a", 0.002), clock.fn("b", 0.001)
    ta, tb = interleaved([a, b], warmup=1, burst=2, min_rounds=3, max_runs=6, clock=clock)
    # warm-up a, b; then rounds: a a b b | b b a a | a a b b
    assert "".join(clock.calls) == "ab" + "aabb" + "bbaa" + "aabb"
    assert ta.runs == tb.runs == 6 and len(ta.rounds) == 3
    assert ta.median_ms == pytest.approx(2.0) and tb.median_ms == pytest.approx(1.0)
    assert tb.median_ms / ta.median_ms == pytest.approx(0.5)


def test_runs_until_min_runs_and_min_seconds_then_stops():
    for min_runs, expected in ((2, 4), (6, 6)):  # 0.25 s a run: 1 s takes 4 runs
        clock = FakeClock()
        (t,) = interleaved(
            [clock.fn("a", 0.25)], warmup=0, burst=1, min_runs=min_runs, min_seconds=1.0, clock=clock
        )
        assert t.runs == expected
    clock = FakeClock()
    (t,) = interleaved(
        [clock.fn("a", 0.01)], warmup=0, burst=1, min_runs=5, min_seconds=10, max_runs=8, clock=clock
    )
    assert t.runs == 8  # the cap wins over the time floor


def test_percentiles_and_round_medians():
    t = Timing(((1.0, 2.0, 3.0), (10.0, 11.0, 12.0), (2.0, 2.0, 2.0)))
    assert t.runs == 9
    assert t.median_ms == 2.0
    assert t.round_median_ms == 2.0  # medians of rounds 2, 11, 2
    assert t.percentile(100) == 12.0 and t.percentile(0) == 1.0
    assert t.to_dict()["runs"] == 9 and t.to_dict()["p99_ms"] > t.to_dict()["p50_ms"]
    assert interleaved([]) == []
