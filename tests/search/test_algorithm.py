"""The search algorithm on synthetic, exactly known metrics (no models): bisection, greedy
combination with back-off, budget semantics, the nothing-fits result, the Pareto front, time."""

from __future__ import annotations

import math

import pytest

from onnxsqueeze.evaluate import Budget
from onnxsqueeze.recipe import Step
from onnxsqueeze.search import Knob, Point, pareto_front, search
from onnxsqueeze.search.algorithm import LATENCY_MIN_GAIN


def knob(name: str, n: int, *, monotone: bool = True, stage: int = 0, group: str | None = None) -> Knob:
    return Knob(
        name, tuple(range(1, n + 1)), monotone, lambda s, _n=name: Step.of(_n, {"level": s}), stage, group
    )


class Synthetic:
    """metric = 100 - sum(drop per knob level); cost = 100 * prod(cost factor per level)."""

    def __init__(self, drops: dict[str, float], gains: dict[str, float], interaction: float = 0.0):
        self.drops, self.gains, self.interaction = drops, gains, interaction
        self.calls: list[dict[str, int]] = []
        self.budget = Budget(2.0)

    def __call__(self, settings: dict[str, int]) -> Point:
        self.calls.append(dict(settings))
        metric = 100.0 - sum(self.drops[k] * v for k, v in settings.items())
        metric -= self.interaction * max(0, len(settings) - 1) * sum(settings.values())
        size = 100.0
        for k, v in settings.items():
            size *= self.gains[k] ** v
        p = Point(settings=settings, phase="", metric=metric, size=int(size * 1000), latency_ms=size)
        p.drop = self.budget.drop(100.0, metric)
        return p

    def fits(self, p: Point) -> bool:
        return p.drop is not None and p.drop <= self.budget.max_drop + 1e-9


def run(ev: Synthetic, knobs: list[Knob], objective: str = "size", **kw):
    return search(knobs, ev, ev.fits, objective=objective, budget=ev.budget, **kw)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 16, 31])
@pytest.mark.parametrize("drop_per_level", [0.13, 0.3, 0.7, 1.1, 5.0])
def test_bisection_finds_the_largest_setting_within_budget_in_log_steps(n: int, drop_per_level: float):
    ev = Synthetic({"k": drop_per_level}, {"k": 0.9})
    result = run(ev, [knob("k", n)])
    expected = min(n, math.floor(2.0 / drop_per_level + 1e-9))
    single = result.singles["k"]
    if expected == 0:
        assert single is None and result.best is None
    else:
        assert single is not None and single.settings == {"k": expected}
        assert result.best is not None and result.best.settings == {"k": expected}
    singles = [c for c in ev.calls if c]
    assert len(singles) <= math.ceil(math.log2(n + 1)), singles  # bisection, not enumeration
    assert len({str(c) for c in ev.calls}) == len(ev.calls)  # no point is evaluated twice


def test_categorical_knob_evaluates_every_setting_and_keeps_the_cheapest_within_budget():
    ev = Synthetic({"p": 0.6}, {"p": 0.5})  # levels 1..4: drops 0.6 1.2 1.8 2.4
    result = run(ev, [knob("p", 4, monotone=False)])
    assert [c for c in ev.calls if c] == [{"p": 1}, {"p": 2}, {"p": 3}, {"p": 4}]
    assert result.best is not None and result.best.settings == {"p": 3}
    assert any("over budget" in why for _, why in result.rejected)


def test_greedy_combination_adds_cheapest_first_and_reverifies_with_back_off():
    # a alone fits at level 3 (drop 1.5), b alone at level 4 (drop 2.0); together they overflow,
    # so b is bisected again over its milder settings on top of a.
    ev = Synthetic({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.8})
    result = run(ev, [knob("a", 4), knob("b", 4, stage=1)])
    assert result.singles["a"].settings == {"a": 4}  # drop 2.0 exactly on the budget fits
    assert result.singles["b"].settings == {"b": 4}
    combos = [c for c in ev.calls if len(c) == 2]
    assert combos[0] == {"a": 4, "b": 4}  # the cheapest survivor first, the other added
    assert result.best is not None
    assert all(p.drop <= 2.0 + 1e-9 for p in result.points if p.fits)
    # The greedy keeps a (cheapest) and finds b cannot be added at any level: the best is a alone.
    assert result.best.settings == {"a": 4}
    assert ("a 4 + b 4", "over budget (drop 4 > 2)") in result.rejected


def test_combination_backs_off_to_a_milder_setting_that_fits():
    ev = Synthetic({"a": 0.5, "b": 0.25}, {"a": 0.5, "b": 0.8})  # a4 = 2.0 alone; b8 = 2.0 alone
    ev.budget = Budget(3.0)  # a at 6 (3.0) alone; with a6, b must drop to 0
    result = run(ev, [knob("a", 4), knob("b", 8, stage=1)])
    assert result.singles["a"].settings == {"a": 4}  # 4 levels only: drop 2.0
    assert result.singles["b"].settings == {"b": 8}  # drop 2.0
    # a4 + b8 = drop 4.0 > 3: back off b to the largest level with 2.0 + 0.25 b <= 3, b = 4.
    assert result.best is not None and result.best.settings == {"a": 4, "b": 4}
    assert result.best.drop == pytest.approx(3.0)


def test_a_knob_that_does_not_lower_the_cost_is_dropped():
    ev = Synthetic({"a": 0.1, "z": 0.1}, {"a": 0.5, "z": 1.0})
    result = run(ev, [knob("a", 3), knob("z", 3, stage=1)])
    assert result.singles["z"] is None
    assert any("no gain" in why for _, why in result.rejected)
    assert result.best is not None and "z" not in result.best.settings


def test_nothing_fits_leaves_no_best_and_keeps_every_point():
    ev = Synthetic({"a": 3.0}, {"a": 0.5})
    result = run(ev, [knob("a", 4)])
    assert result.best is None
    assert result.singles["a"] is None
    assert len(result.points) >= 2 and result.points[0].settings == {}
    assert result.rejected and "over budget" in result.rejected[0][1]


def test_errors_are_rejected_points_not_crashes():
    def evaluate(settings):
        if settings.get("a") == 2:
            return Point(settings=settings, phase="", error="pass 'a': unsupported node Foo")
        p = Point(settings=settings, phase="", metric=100.0, size=100 - 10 * settings.get("a", 0))
        p.drop = 0.0
        return p

    result = search(
        [knob("a", 3, monotone=False)],
        evaluate,
        lambda p: p.drop is not None and p.drop <= 1,
        objective="size",
        budget=Budget(1.0),
    )
    assert result.best is not None and result.best.settings == {"a": 3}
    assert ("a 2", "pass 'a': unsupported node Foo") in result.rejected


def test_time_budget_stops_early_and_says_so():
    ev = Synthetic({"a": 0.1, "b": 0.1}, {"a": 0.5, "b": 0.5})
    result = run(ev, [knob("a", 8), knob("b", 8, stage=1)], deadline=0.0)  # already past
    assert result.truncated == "time budget reached"
    assert len(ev.calls) == 1  # only the baseline, which is always measured


def test_budget_absolute_and_relative_semantics():
    b = Budget(2.0)
    assert b.drop(90.0, 88.5) == pytest.approx(1.5) and b.fits(90.0, 88.0) and not b.fits(90.0, 87.9)
    assert b.drop(90.0, 91.0) == pytest.approx(-1.0) and b.fits(90.0, 91.0)  # better is fine
    r = Budget(2.0, relative=True)  # 2 % of the baseline
    assert r.drop(50.0, 49.0, scale=50.0) == pytest.approx(2.0) and r.fits(50.0, 49.0, scale=50.0)
    assert not r.fits(50.0, 48.9, scale=50.0)
    # lower-is-better (mae): a rise is the drop
    assert b.drop(0.0, 0.5, higher_is_better=False) == pytest.approx(0.5)
    assert r.drop(0.0, 0.1, higher_is_better=False, scale=2.0) == pytest.approx(5.0)
    assert not b.fits(90.0, float("nan"))
    with pytest.raises(Exception, match="max-drop"):
        Budget(-1.0)


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [
        Point({}, "baseline", metric=99.0, size=100),
        Point({"a": 1}, "single", metric=98.5, size=50),
        Point({"a": 2}, "single", metric=98.0, size=60),  # dominated by a=1
        Point({"a": 3}, "single", metric=95.0, size=20),
        Point({"a": 4}, "single", error="boom"),
    ]
    front = pareto_front(pts, "size")
    assert [p.settings for p in front] == [{"a": 3}, {"a": 1}, {}]
    lower = pareto_front(
        [Point({}, "", metric=0.0, size=100), Point({"a": 1}, "", metric=0.5, size=10)], "size", False
    )
    assert len(lower) == 2


def test_knobs_of_one_group_exclude_each_other():
    ev = Synthetic({"a": 0.1, "b": 0.1, "c": 0.1}, {"a": 0.5, "b": 0.6, "c": 0.9})
    result = run(
        ev, [knob("a", 2, group="precision"), knob("b", 2, group="precision"), knob("c", 2, stage=1)]
    )
    assert result.best is not None and result.best.settings == {"a": 2, "c": 2}
    assert ("b 2", "excluded by a 2") in result.rejected
    assert not any("a" in c and "b" in c for c in ev.calls)  # never evaluated together


def test_allocate_ratios_favours_insensitive_groups_and_grows_with_the_target():
    from onnxsqueeze.search import allocate_ratios

    drops = {"a": 0.0, "b": 0.5, "c": 4.0}
    r = allocate_ratios(drops, 0.3)
    assert r["a"] > r["b"] > r["c"] > 0
    assert sum(r.values()) / 3 == pytest.approx(0.3, abs=0.002)
    bigger = allocate_ratios(drops, 0.6)
    assert all(bigger[g] >= r[g] for g in drops)
    assert max(allocate_ratios(drops, 0.9).values()) == 0.9  # capped
    assert allocate_ratios({}, 0.5) == {}


def test_planned_knob_is_bound_once_and_cached(tmp_path):
    from onnxsqueeze import evaluate as E
    from onnxsqueeze.search import SqueezeOptions, Squeezer
    from tests.graphs import cnn
    from tests.helpers import rand

    calls = []

    def plan(ctx):
        calls.append(len(ctx.evaluator.dataset))
        return "n0_Conv"

    def plan_fails(ctx):
        raise RuntimeError("no analysis for this model")

    def step(setting, value):
        return Step.of("int8", {"mode": "static", "exclude": (value,) if value else ()}, calibration=True)

    knobs = (
        Knob("q", (True,), False, step, 3, plan=plan),
        Knob("r", (True,), False, step, 3, plan=plan_fails),
    )
    model = cnn()
    ds = E.Dataset({"x": rand((24, 3, 8, 8), 5)})

    def squeezer():
        return Squeezer(
            model,
            E.Evaluator(model, ds.take(8, 24), "agreement"),
            calibration=ds.take(0, 8),
            calibration_source=None,
            options=SqueezeOptions(budget=Budget(50.0), objective="size", latency_seconds=0.01),
            cache_dir=tmp_path,
            knobs=knobs,
        )

    first = squeezer()
    first.prepare()
    first.prepare()  # idempotent
    assert calls == [16]
    assert first.plans == {"q": "n0_Conv", "r": None}
    assert any("no analysis for this model" in n for n in first.notes)
    by_name = {k.name: k for k in first.knobs}
    assert dict(by_name["q"].step_of(True).options)["exclude"] == ("n0_Conv",)
    assert dict(by_name["r"].step_of(True).options)["exclude"] == ()
    again = squeezer()
    again.prepare()
    assert calls == [16]  # from the cache
    assert again.plans == first.plans


def test_min_gain_ignores_noise_sized_improvements():
    ev = Synthetic({"a": 0.1, "n": 0.1}, {"a": 0.5, "n": 0.99})  # n: 1 % per level, noise
    result = run(ev, [knob("a", 2), knob("n", 2, stage=1)], min_gain=0.03)
    assert result.singles["n"] is None and result.best.settings == {"a": 2}
    assert any("3% needed" in why for _, why in result.rejected)


def test_python_api_squeeze(tmp_path):
    """``onnxsqueeze.squeeze`` is the CLI's core: search, then the output folder."""
    import json

    import onnxsqueeze
    from onnxsqueeze import io as sio
    from tests.graphs import cnn
    from tests.helpers import rand

    model = tmp_path / "m.onnx"
    sio.save(cnn(), model)
    data = tmp_path / "d.npz"
    sio.save_npz(data, {"x": rand((48, 3, 8, 8), 1)})
    points = []
    result, files = onnxsqueeze.squeeze(
        model, data, tmp_path / "out", max_drop=50, objective="size", techniques=("int8-dynamic",),
        latency_seconds=0.01, calibration_samples=8, on_point=points.append,
    )  # fmt: skip
    assert result.best is not None and result.best.settings == {"int8-dynamic": True}
    assert len(points) == 2 and set(files) >= {"model", "recipe", "report", "results", "plot"}
    assert json.loads(files["results"].read_text())["metric"] == "agreement"  # no labels


def test_knob_table_matches_every_registered_pass():
    """A knob whose pass is registered must build options that pass takes (catches API drift when
    a technique lands); unregistered techniques are simply not offered."""
    import dataclasses

    from onnxsqueeze.passes import PASSES
    from onnxsqueeze.search import KNOBS, available_knobs

    offered, skipped = available_knobs(KNOBS)
    assert not [why for why in skipped.values() if "takes no option" in why], skipped
    # every technique has landed: every knob and every setting is offered
    assert skipped == {} and [k.settings for k in offered] == [k.settings for k in KNOBS]
    assert {k.name for k in offered} == {
        "fp16", "int8", "int8-dynamic", "int8-weights", "int4", "sparsity", "channels", "resolution",
        "distill", "sparsity+ft", "channels+ft", "resolution+ft",
    }  # fmt: skip
    for knob in offered:
        if knob.name == "distill":  # not a pass; its settings are catalog students
            from onnxsqueeze.distill.student import catalog

            assert set(knob.settings) <= set(catalog())
            continue
        if knob.base:  # <pass>+ft: the inner pass's step must be one its pass takes
            from onnxsqueeze.search.knobs import base_spec, ft_steps

            for setting in knob.settings:
                step = ft_steps(base_spec(knob.step_of(setting)))[-1]
                assert {k for k, _ in step.options} <= {
                    f.name for f in dataclasses.fields(PASSES[step.pass_name])
                }
            continue
        for setting in knob.settings:
            step = knob.step_of(setting)
            cls = PASSES[step.pass_name]
            fields = {f.name for f in dataclasses.fields(cls)}
            assert {k for k, _ in step.options} <= fields
    assert "int8" in {k.name for k in offered} and "int8-dynamic" in {k.name for k in offered}


def test_greedy_spends_the_budget_where_it_buys_the_most_first():
    # a: the cheapest single (a2: cost x0.25 for 2.0 points, the whole budget); f: f2 costs x0.36
    # for 0.5 points. Cheapest-first takes a2 and then cannot add any f (a2 + f1 = 2.25 points):
    # cost 25. By gain per point of drop, f2 goes first and a backs off to a1 on top: cost 18.
    ev = Synthetic({"a": 1.0, "f": 0.25}, {"a": 0.5, "f": 0.6})
    result = run(ev, [knob("a", 2), knob("f", 2, stage=1)])
    combos = [c for c in ev.calls if len(c) == 2]
    assert combos[0] == {"f": 2, "a": 2}
    assert result.best is not None and result.best.settings == {"a": 1, "f": 2}
    assert result.best.size < 25_000


def test_latency_ties_within_the_noise_are_broken_by_the_file_size():
    # q: 2x faster, 3x smaller; c: alone 1.3x faster, 3x smaller; q + c: as fast as q (within 3%),
    # 9x smaller. On latency, q + c is a tie with q, and the smaller file wins it.
    table = {
        (): (100.0, 900),
        (("q", 1),): (50.0, 300),
        (("c", 1),): (77.0, 300),
        (("c", 1), ("q", 1)): (51.0, 100),
    }

    def evaluate(settings):
        latency, size = table[tuple(sorted(settings.items()))]
        p = Point(settings=settings, phase="", metric=100.0, size=size, latency_ms=latency)
        p.drop = 0.0
        return p

    result = search(
        [knob("q", 1, stage=3), knob("c", 1, stage=1)],
        evaluate,
        lambda p: True,
        objective="latency",
        budget=Budget(1.0),
        min_gain=0.03,
    )
    assert result.best is not None and result.best.settings == {"q": 1, "c": 1}
    # without noise (exact objectives), a slower point is never preferred
    exact = search(
        [knob("q", 1, stage=3), knob("c", 1, stage=1)],
        evaluate,
        lambda p: True,
        objective="latency",
        budget=Budget(1.0),
    )
    assert exact.best is not None and exact.best.settings == {"q": 1}


def test_report_verifies_the_scored_output_of_a_multi_head_model(tmp_path):
    """With ``output`` (--output-name), the report's top-1 line is the scored head's, not the first output's
    (on MTCNN's ONet the first output is a box regression whose argmax means nothing)."""
    import json

    import onnxsqueeze
    from onnxsqueeze import io as sio
    from tests.helpers import model_from_text, rand

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    heads (float[N, 16] x) => (float[N, 4] box, float[N, 2] probs) {
        h = Gemm (x, w1)
        r = Relu (h)
        box = Gemm (r, wb)
        logits = Gemm (r, wp)
        probs = Softmax <axis = 1> (logits)
    }
    """
    weights = {"w1": rand((16, 512), 1), "wb": rand((512, 4), 2), "wp": rand((512, 2), 3)}
    model = tmp_path / "m.onnx"
    sio.save(model_from_text(text, weights), model)
    data = tmp_path / "d.npz"
    sio.save_npz(data, {"x": rand((24, 16), 4)})
    result, files = onnxsqueeze.squeeze(
        model, data, tmp_path / "out", max_drop=50, objective="size", techniques=("fp16",),
        latency_seconds=0.01, calibration_samples=8, output="probs",
    )  # fmt: skip
    assert result.best is not None and result.best.settings == {"fp16": True}
    verify = json.loads(files["results"].read_text())["best"]["verify"]
    assert verify["scored_output"] == "probs" and [o["name"] for o in verify["outputs"]] == ["box", "probs"]
    report = files["report"].read_text()
    assert "top-1 agreement of 'probs' 100.0%" in report
    assert "'box' " in report and "per output" in report


@pytest.mark.parametrize("first", [1, 3, 5])
@pytest.mark.parametrize("drop_per_level", [0.3, 0.7, 5.0])
def test_a_bisection_probing_a_planned_setting_first_makes_the_same_decision(
    first: int, drop_per_level: float
):
    import dataclasses

    plain, planned = (
        Synthetic({"k": drop_per_level}, {"k": 0.9}),
        Synthetic({"k": drop_per_level}, {"k": 0.9}),
    )
    expected = run(plain, [knob("k", 5)])
    result = run(planned, [dataclasses.replace(knob("k", 5), first=first)])
    assert planned.calls[1] == {"k": first}  # after the baseline

    def chosen(r):
        return None if r.singles["k"] is None else r.singles["k"].settings

    assert chosen(result) == chosen(expected)
    if first * drop_per_level <= 2.0 and first == 5:  # the most aggressive fits: one evaluation
        assert len([c for c in planned.calls if c]) == 1


def test_a_plan_names_the_first_probe_only_among_the_kept_settings():
    from onnxsqueeze.search.knobs import KNOBS

    int8 = next(k for k in KNOBS if k.name == "int8")
    plan = {"calibrate_method": "minmax", "activation_type": "uint8", "order": ["a", "b", "c"], "first": 0}
    bound = int8.bind(plan)
    assert bound.first == 0 and bound.settings == (2, 1, 0)  # 3 layers: at most 2 float
    assert int8.bind({**plan, "first": 8}).first is None and int8.bind(None).first is None


@pytest.mark.parametrize("n", [2, 5, 8])
@pytest.mark.parametrize("fitting", [0, 1, 2, 4, 5, 8])
def test_a_planned_first_probe_steps_to_its_neighbour_same_decision_at_most_one_more_evaluation(
    n: int, fitting: int
):
    """Every first probe, every threshold: the plain bisection's decision; a right guess (the
    largest fitting setting) costs two evaluations, a wrong one the guess, its neighbour and a
    bisection of what is left."""
    import dataclasses

    fitting = min(fitting, n)
    drop = 2.0 / fitting - 1e-6 if fitting else 5.0  # settings 1..fitting fit a 2-point budget
    plain = Synthetic({"k": drop}, {"k": 0.9})
    expected = run(plain, [knob("k", n)]).singles["k"]
    plain_evals = len([c for c in plain.calls if c])
    for first in range(1, n + 1):
        planned = Synthetic({"k": drop}, {"k": 0.9})
        got = run(planned, [dataclasses.replace(knob("k", n), first=first)]).singles["k"]
        assert (got and got.settings) == (expected and expected.settings)
        evals = len([c for c in planned.calls if c])
        assert evals <= 2 + math.ceil(math.log2(n + 1))
        assert plain_evals <= math.ceil(math.log2(n + 1))
        if first == fitting < n:
            assert [c["k"] for c in planned.calls if c] == [first, first + 1]


def test_the_channels_knob_probes_minus_40_first_with_or_without_its_plan():
    from onnxsqueeze.search.knobs import KNOBS

    channels = next(k for k in KNOBS if k.name == "channels")
    assert channels.first == 0.4
    assert channels.bind({"g1": 0.0, "g2": 3.0}).first == 0.4  # a plan of drops names no first
    assert channels.bind(None).first == 0.4


@pytest.mark.parametrize("n", [2, 5, 8])
@pytest.mark.parametrize("b_alone", [1, 2, 4, 8])
@pytest.mark.parametrize("room", [0.0, 0.5, 1.0, 1.5, 1.9])
def test_the_combinations_milder_rebisection_probes_one_step_back_first_same_decision(
    n: int, b_alone: int, room: float
):
    """A knob that breaks the budget in combination is re-bisected over its milder settings, one
    step milder first: for every setting it fits at alone and every budget left on top of the
    first knob, the plain bisection's decision; one evaluation when one step back fits, at most
    one more than plain bisection otherwise."""
    b_alone = min(b_alone, n)
    drop_b = 2.0 / b_alone - 1e-6  # b fits alone up to level b_alone
    ev = Synthetic({"a": 2.0 - room, "b": drop_b}, {"a": 0.1, "b": 0.8})  # a first: the larger gain
    result = run(ev, [knob("a", 1), knob("b", n, stage=1)])
    assert result.singles["b"].settings == {"b": b_alone}
    combos = [c["b"] for c in ev.calls if len(c) == 2]
    assert combos[0] == b_alone  # the greedy's trial at b's single best
    # The plain answer: the largest level with room for it (none: a alone).
    fitting = [lv for lv in range(1, b_alone + 1) if lv * drop_b <= room + 1e-9]
    expected = max(fitting) if fitting else None
    best = result.best.settings if result.best is not None else {}
    assert best.get("b") == expected
    rebisect = combos[1:]
    if b_alone > 1 and expected != b_alone:
        assert rebisect[0] == b_alone - 1
        plain = math.ceil(math.log2(b_alone))  # a bisection over the b_alone - 1 milder levels
        assert len(rebisect) <= plain + 1
        if expected == b_alone - 1:
            assert len(rebisect) == 1


def test_a_base_model_is_combined_before_the_passes_measured_on_the_original():
    """A pass free on the original (sparsity on the digits CNN) but costly on the base model
    (its student): the base goes first and the pass backs off on it, instead of the pass going
    first (more efficient alone) and excluding the base."""
    budget = Budget(2.0)
    calls: list[dict] = []

    def ev(settings: dict) -> Point:
        calls.append(dict(settings))
        on_base = "b" in settings
        level = settings.get("p", 0)
        metric = 100.0 - (0.5 if on_base else 0.0) - (0.9 if on_base else 0.0) * level
        size = 100.0 * (0.1 if on_base else 1.0) * 0.5**level
        p = Point(settings=settings, phase="", metric=metric, size=int(size * 1000), latency_ms=size)
        p.drop = budget.drop(100.0, metric)
        return p

    base = Knob("b", ("student",), False, lambda s: Step.of("distill", {"student": s}), -2, "base", base=True)
    result = search([base, knob("p", 3)], ev, lambda p: p.drop <= 2.0 + 1e-9, objective="size", budget=budget)
    assert result.singles["p"].settings == {"p": 3}  # free alone, and the most efficient
    assert next(c for c in calls if len(c) == 2) == {"b": "student", "p": 3}  # the base first, p on it
    assert result.best is not None and result.best.settings == {"b": "student", "p": 1}


def test_a_base_excluded_by_its_groups_rival_is_tried_in_its_place_with_the_passes_on_top():
    """Two fine-tuned bases exclude each other: ``s`` looks smaller alone, but ``c`` is smaller once
    the precision pass ``q`` is on top (it shrinks c's weights, not s's index bytes). The greedy
    takes s, then q; then c in s's place (with q) is better, and wins."""
    budget = Budget(2.0)

    def ev(settings: dict) -> Point:
        size = {"s": 40.0, "c": 60.0}.get(next((k for k in settings if k in "sc"), ""), 100.0)
        if "q" in settings:
            size *= 0.8 if "s" in settings else 0.25 if "c" in settings else 0.3
        p = Point(settings=settings, phase="", metric=99.5, size=int(size * 1000), latency_ms=size)
        p.drop = budget.drop(100.0, p.metric)
        return p

    def ft(name: str) -> Knob:
        return Knob(
            name, (1,), False, lambda _s, n=name: Step.of("finetune", {"knob": n}), -1, "ft", base=True
        )

    knobs = [ft("s"), ft("c"), knob("q", 1, monotone=False, stage=3)]
    result = search(knobs, ev, lambda p: p.drop <= 2.0 + 1e-9, objective="size", budget=budget)
    assert result.best is not None and result.best.settings == {"c": 1, "q": 1}
    assert result.best.size == 15000  # c with q (15) beats s with q (32)


def test_a_late_knob_is_combined_after_the_other_passes():
    """``z`` (sparsity: free alone, the most efficient single) and ``c`` (channels: costly alone)
    cost more together. Taken first, z3 leaves c at 3 (size 4.3); late, c keeps 4 and z backs off
    to 2 on top of it (size 3.06)."""
    budget = Budget(2.0)

    def ev(settings: dict) -> Point:
        c, z = settings.get("c", 0), settings.get("z", 0)
        metric = 100.0 - 0.4 * c - (0.2 * z if c else 0.0)
        size = 100.0 * 0.5**c * 0.7**z
        p = Point(settings=settings, phase="", metric=metric, size=int(size * 1000), latency_ms=size)
        p.drop = budget.drop(100.0, metric)
        return p

    def late(k: Knob) -> Knob:
        import dataclasses

        return dataclasses.replace(k, late=True)

    def best(z: Knob) -> dict:
        result = search(
            [knob("c", 4), z], ev, lambda p: p.drop <= 2.0 + 1e-9, objective="size", budget=budget
        )
        assert result.best is not None
        return result.best.settings

    assert best(knob("z", 3, stage=2)) == {"c": 3, "z": 3}  # z first: c backs off
    assert best(late(knob("z", 3, stage=2))) == {"c": 4, "z": 2}


def test_a_pass_that_ties_its_rival_on_latency_and_is_smaller_is_tried_in_its_place():
    """``f`` and ``w`` exclude each other (one precision). Both keep the latency within the timing
    noise; ``f`` looks a hair faster, so the greedy takes it first, but ``w`` writes half the file:
    it is tried in ``f``'s place and wins on the tie-breaker. A rival that is larger as well as
    tied (``g``) is not tried: no evaluation is spent on it."""
    budget = Budget(2.0)
    calls: list[dict] = []
    factors = {"r": (0.5, 0.9), "f": (0.99, 0.5), "w": (1.0, 0.27), "g": (1.0, 0.6)}

    def ev(settings: dict) -> Point:
        calls.append(dict(settings))
        latency, size = 10.0, 100.0
        for k in settings:
            latency, size = latency * factors[k][0], size * factors[k][1]
        p = Point(settings=settings, phase="", metric=99.5, size=int(size * 1000), latency_ms=latency)
        p.drop = budget.drop(100.0, p.metric)
        return p

    def precision(name: str) -> Knob:
        return knob(name, 1, monotone=False, stage=3, group="precision")

    knobs = [knob("r", 1), precision("f"), precision("w"), precision("g")]
    result = search(
        knobs,
        ev,
        lambda p: p.drop <= 2.0 + 1e-9,
        objective="latency",
        budget=budget,
        min_gain=LATENCY_MIN_GAIN,
    )
    assert result.best is not None and result.best.settings == {"r": 1, "w": 1}
    assert {"r": 1, "f": 1} in calls and {"r": 1, "w": 1} in calls
    assert {"r": 1, "g": 1} not in calls  # tied but larger than f: never combined
