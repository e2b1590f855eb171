"""Objectives as a priority list, and what the search returns when nothing beats the baseline
(synthetic points with exactly known costs; no models)."""

from __future__ import annotations

import pytest

from onnxsqueeze.errors import InputError
from onnxsqueeze.evaluate import Budget
from onnxsqueeze.recipe import Step
from onnxsqueeze.search import Knob, Point, search
from onnxsqueeze.search.algorithm import parse_objectives

# setting -> (latency ms, MACs, bytes); the baseline is setting 0
TABLE = {
    0: (100.0, 1000, 1000),
    1: (50.0, 800, 400),  # a: fastest
    2: (51.0, 400, 900),  # b: as fast as a within 3 %, half a's MACs, larger file
    3: (80.0, 1000, 100),  # c: slower, smallest file
}


def run(objective, table=None, **kw):
    costs = TABLE | (table or {})

    def evaluate(settings):
        latency, macs, size = costs[settings.get("k", 0)]
        p = Point(settings=settings, phase="", metric=100.0, size=size, macs=macs, latency_ms=latency)
        p.drop = 0.0
        return p

    knob = Knob("k", (1, 2, 3), False, lambda s: Step.of("k", {"level": s}), 0)
    return search([knob], evaluate, lambda p: True, objective=objective, budget=Budget(1.0), **kw)


def best_setting(result):
    return result.best.settings["k"] if result.best is not None else None


def test_ties_on_the_first_objective_are_broken_by_the_next():
    noise = {"latency": 0.03}
    # a and b tie on latency (51 <= 50 * 1.03): MACs decide for b, the file size (implicit) for a
    assert best_setting(run("latency,macs", noise=noise)) == 2
    assert best_setting(run("latency", noise=noise)) == 1
    assert best_setting(run("latency,size", noise=noise)) == 1
    # without noise, 50 < 51 is not a tie: a, whatever comes next
    assert best_setting(run("latency,macs")) == 1
    # the first objective rules: MACs first picks b, size first picks c
    assert best_setting(run("macs,latency", noise=noise)) == 2
    assert best_setting(run("size,latency", noise=noise)) == 3
    assert run("latency,macs", noise=noise).objectives == ("latency", "macs")


def test_a_tie_beyond_the_noise_is_no_tie():
    # 60 is not within 3 % of 50: a wins on latency although b' has fewer MACs
    assert best_setting(run("latency,macs", {2: (60.0, 400, 900)}, noise={"latency": 0.03})) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [("speed", "unknown objective 'speed'"), ("latency,latency", "twice"), (",", "no objective")],
)
def test_bad_objectives_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_objectives(text)
    assert parse_objectives(" latency , size ") == ("latency", "size")


def test_nothing_beats_the_baseline_on_the_objective_but_improvements_are_kept():
    # every candidate has the baseline's MACs (1000) or more: none improves on "macs"
    table = {1: (50.0, 1000, 400), 2: (51.0, 1200, 900)}
    result = run("macs", table)
    assert result.best is None
    # c (smallest file) and a (fastest, smaller) improve somewhere; b is dominated by a
    assert {p.settings["k"] for p in result.improvements()} == {1, 3}
    # latency first: a is an improvement, so it is the best
    assert best_setting(run("latency", table)) == 1


def test_a_latency_tie_with_a_smaller_file_is_not_an_improvement_of_latency_alone():
    # the implicit size tie-breaker ranks points but does not count as beating the baseline
    table = {1: (99.0, 1000, 500), 2: (101.0, 1000, 400), 3: (200.0, 1000, 100)}
    result = run("latency", table, min_gain=0.03)
    assert result.best is None and {p.settings["k"] for p in result.improvements()} == {1, 2, 3}
    # named, the file size is an objective: the tie is broken by it and that is an improvement
    assert best_setting(run("latency,size", table, min_gain=0.03)) == 2
