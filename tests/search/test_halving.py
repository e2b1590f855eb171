"""Successive halving: a candidate is scored on growing subsets and stops only when it cannot fit.

The stopping rule (:func:`can_still_fit`) is a worst-case bound, so the property is exact: a
candidate that fits the budget on the full set is never stopped, for any data, any subset order
and any budget (property test on synthetic per-sample metrics). The Squeezer test checks the
wiring on a real tiny CNN: stopped points are over budget on the full set too, and only points
within budget are timed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxsqueeze import evaluate as E
from onnxsqueeze import io as sio
from onnxsqueeze.evaluate import Budget
from onnxsqueeze.recipe import CalibrationSource, Step
from onnxsqueeze.search import KNOBS, Knob, SqueezeOptions, Squeezer
from onnxsqueeze.search.halving import SAMPLE_RANGE, can_still_fit
from tests.graphs import CNN
from tests.helpers import model_from_text, rand, run_ort

KINDS = {  # metric -> (per-sample generator, higher is better)
    "accuracy": (lambda rng, n, p: 100.0 * (rng.random(n) < p), True),
    "cosine": (lambda rng, n, p: np.clip(rng.normal(100 * p, 30, n), -100, 100), True),
    "mae": (lambda rng, n, p: rng.exponential(1.0 - p + 1e-3, n), False),
}


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    total=st.integers(2, 400),
    quality=st.floats(0.0, 1.0),
    base_quality=st.floats(0.0, 1.0),
    max_drop=st.floats(0.0, 30.0),
    relative=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_candidate_that_fits_on_the_full_set_is_never_stopped(
    kind, total, quality, base_quality, max_drop, relative, seed
):
    rng = np.random.default_rng(seed)
    gen, higher = KINDS[kind]
    candidate = gen(rng, total, quality)
    baseline = float(np.mean(gen(rng, total, base_quality)))
    scale = abs(baseline) if kind != "mae" else 1.0
    budget = Budget(max_drop, relative)
    full = float(np.mean(candidate))
    fits = budget.fits(baseline, full, higher_is_better=higher, scale=scale)
    lo, hi = SAMPLE_RANGE[kind]
    order = rng.permutation(total)
    for n in range(1, total + 1):
        ok = can_still_fit(
            float(np.mean(candidate[order[:n]])), n, total, baseline=baseline, budget=budget,
            best_per_sample=hi if higher else lo, higher_is_better=higher, scale=scale,
        )  # fmt: skip
        if fits:
            assert ok, (n, total, full, baseline)
    # on the full set the rule is the budget itself
    assert ok == fits


def test_a_hopeless_candidate_stops_on_the_first_quarter():
    # baseline 100 %, budget 1 point: 60 % on the first 100 of 400 is at best 90 % on all 400
    assert not can_still_fit(60.0, 100, 400, baseline=100.0, budget=Budget(1.0), best_per_sample=100.0)
    # 97 % on the first quarter may still end at 99.25 % (>= 99): keep going
    assert can_still_fit(97.0, 100, 400, baseline=100.0, budget=Budget(1.0), best_per_sample=100.0)
    # lower is better (mae, best sample 0): 0.4 on half may end at 0.2 <= 0.1 + 0.15
    assert can_still_fit(
        0.4, 50, 100, baseline=0.1, budget=Budget(0.15), best_per_sample=0.0, higher_is_better=False
    )
    assert not can_still_fit(
        0.8, 50, 100, baseline=0.1, budget=Budget(0.15), best_per_sample=0.0, higher_is_better=False
    )


def _wide_cnn():
    return model_from_text(
        CNN,
        {
            "w1": rand((32, 3, 3, 3), 1, 0.3),
            "b1": rand((32,), 2, 0.1),
            "w2": rand((64, 32, 3, 3), 3, 0.1),
            "b2": rand((64,), 4, 0.1),
            "wf": rand((4, 64), 5, 0.5),
            "bf": rand((4,), 6, 0.1),
        },
    )


def test_staged_scoring_equals_the_full_score_and_scores_the_prefix():
    model = _wide_cnn()
    x = rand((64, 3, 8, 8), 7)
    (y,) = run_ort(model, {"x": x})
    labels = np.argmax(y, 1)
    labels[::3] = (labels[::3] + 1) % 4
    ev = E.Evaluator(model, E.Dataset({"x": x}, labels, "t"), "accuracy")
    order = np.random.default_rng(0).permutation(64)
    score_prefix = ev.staged(model, order)
    assert score_prefix(16) == pytest.approx(E.accuracy(y[order[:16]], labels[order[:16]]))
    assert score_prefix(40) == pytest.approx(E.accuracy(y[order[:40]], labels[order[:40]]))
    assert score_prefix(64) == ev.score(model)


def test_squeezer_stops_only_hopeless_candidates_and_times_only_those_within_budget(tmp_path):
    model = _wide_cnn()
    x = rand((232, 3, 8, 8), 11)
    (y,) = run_ort(model, {"x": x})
    labels = np.argmax(y, 1).astype(np.int64)
    path = tmp_path / "cnn.onnx"
    sio.save(model, path)
    ds = E.Dataset({"x": x}, labels, "t")
    cal, evalset = ds.take(0, 32), ds.take(32, 232)
    sq = Squeezer(
        model,
        E.Evaluator(model, evalset, "accuracy"),
        calibration=cal,
        calibration_source=CalibrationSource("t", 0, 32, cal.sha256()),
        options=SqueezeOptions(budget=Budget(2.0), objective="size", latency_seconds=0.01),
        cache_dir=None,
        # magnitude pruning without reconstruction: the high levels wreck the tiny CNN
        knobs=[
            Knob(
                "sparsity",
                settings=(0.3, 0.6, 0.8, 0.95, 0.99),
                monotone=True,
                step=lambda s: Step.of("sparsity", {"sparsity": s, "reconstruction": "none"}),
                stage=2,
            ),
            KNOBS[[k.name for k in KNOBS].index("fp16")],
        ],
    )
    result = sq.run()
    stopped = [p for p in result.points if p.samples is not None]
    full = [p for p in result.points if p.samples is None and p.settings and p.error is None]
    assert stopped, "expected a hopeless sparsity level to stop early"
    assert full, "expected candidates scored on every sample"
    for p in stopped:
        assert p.samples < 200 and not p.fits and p.latency_ms is None and p.time_s is None
        # on the full set it is over budget as well
        assert 100.0 - sq.evaluator.score(sq.build(p.settings)) > 2.0
    for p in full:
        assert (p.latency_ms is not None) == p.fits
        assert p.build_s is not None and p.score_s is not None
