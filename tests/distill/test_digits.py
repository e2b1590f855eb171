"""The issue's acceptance figures on the real digits CNN (slow: trains students for real)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

pytest.importorskip("torch")

from onnxsqueeze import io as sio
from onnxsqueeze.distill import TrainConfig, distill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_student(digits, tmp_path_factory):
    """The ~1k-parameter sepconv student distilled from the digits CNN with the default plan, trained
    once for the two tests below (about 200 s: the range test and the plateau rule decide the
    length). The time budget is off: it ends where the machine's load puts it."""
    model, val, train = digits
    cfg = TrainConfig(time_budget_s=None)
    return distill(
        model, "sepconv:cnn4", train, test=val, config=cfg, cache_dir=tmp_path_factory.mktemp("default")
    )


def test_ten_times_smaller_student_within_two_points(default_student) -> None:
    # No time budget and no wall-clock assertion: on a loaded machine either would test the load.
    # The training time is a benchmark figure (benchmarks/RESULTS.md). The student is the default
    # plan's tiny one (under 1,500 parameters against the teacher's 60,874: over 40x smaller); a
    # plain cnn4 on a fixed plan is trained by the soft-label test below and the digits squeeze test.
    rep = default_student.report
    assert rep.teacher.params / rep.student.params >= 10
    assert rep.student.accuracy >= rep.teacher.accuracy - 0.02
    assert rep.export.max_abs <= 1e-4


def test_soft_labels_beat_hard_labels_when_labels_are_scarce(digits, tmp_path) -> None:
    model, val, train = digits
    full = sio.load_npz(train)
    pick = np.sort(np.random.default_rng(123).permutation(len(full["labels"]))[:150])
    labelled = {k: v[pick] for k, v in full.items()}
    scale = len(full["labels"]) / 150
    acc: dict[float, list[float]] = {0.0: [], 0.5: []}
    for alpha in acc:
        for seed in range(3):
            # as many steps as 15 epochs of the full set; no time budget (it would end where the
            # machine's load puts it: under load a hard-label student stopped at 7 epochs, 9%)
            cfg = TrainConfig(
                epochs=round(15 * scale),
                patience=round(5 * scale),
                seed=seed,
                alpha=alpha,
                time_budget_s=None,
            )
            r = distill(
                model, "cnn4", labelled, test=val, config=cfg, cache_dir=tmp_path, measure_latency=False
            )
            acc[alpha].append(r.report.student.accuracy)
    # measured (benchmarks/RESULTS.md, 5 seeds): 95.3 % distilled vs 89.2 % on hard labels; this
    # plan, seeds 0-2: distilled 96.9 / 95.8 / 96.1 % (mean 96.3) vs hard labels 95.3 / 89.7 / 90.3 %
    # (mean 91.8)
    assert statistics.mean(acc[0.5]) > statistics.mean(acc[0.0]) + 0.02


def test_tiny_student_converges_with_default_settings(default_student) -> None:
    # issue 14 item 5: the old defaults (40 epochs, lr 0.005) left a ~1k-parameter student at 55%
    # the default plan without its time budget (which ends where the machine's load puts it): the
    # range-test rate and the plateau rule decide the length
    rep = default_student.report
    assert rep.student.params < 1500
    assert rep.training.lr_found and rep.training.stop_reason == "converged"
    assert rep.student.accuracy >= 0.97
