"""The corpus task metrics on handmade outputs (fast: no corpus needed)."""

from __future__ import annotations

import numpy as np
import pytest

from models import corpus


def test_ctc_greedy_collapses_repeats_and_drops_blank():
    charset = ["", "a", "b", "c"]
    # T=7 steps of [T, 1, C]: a a _ a b b c -> "aabc" (a blank separates the two a's).
    steps = [1, 1, 0, 1, 2, 2, 3]
    out = np.full((len(steps), 1, 4), -5.0, np.float32)
    for t, k in enumerate(steps):
        out[t, 0, k] = 5.0
    assert corpus.ctc_greedy(out, charset) == "aabc"
    assert corpus.ctc_greedy(out.transpose(1, 0, 2), charset) == "aabc"  # [1, T, C]


def _yolov8(
    boxes: list[tuple[float, float, float, float, int, float]], classes: int = 3, n: int = 8
) -> np.ndarray:
    out = np.zeros((1, 4 + classes, n), np.float32)
    for i, (cx, cy, w, h, cls, conf) in enumerate(boxes):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = conf
    return out


def test_decode_yolov8_thresholds_and_suppresses_duplicates():
    out = _yolov8(
        [(50, 50, 20, 20, 0, 0.9), (51, 50, 20, 20, 0, 0.8), (150, 50, 20, 20, 1, 0.7), (9, 9, 4, 4, 2, 0.1)]
    )
    boxes, classes = corpus.decode_yolov8(out)
    assert sorted(classes.tolist()) == [0, 1]  # the duplicate is suppressed, the 0.1 box is below threshold
    np.testing.assert_allclose(boxes[classes.tolist().index(0)], [40, 40, 60, 60])


def test_box_agreement_is_f1_of_matched_detections():
    ref = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 1]))]
    same = [(ref[0][0] + 0.5, ref[0][1])]
    assert corpus.box_agreement(ref, same) == pytest.approx(1.0)
    wrong_class = [(ref[0][0], np.array([0, 2]))]
    assert corpus.box_agreement(ref, wrong_class) == pytest.approx(0.5)
    missing = [(ref[0][0][:1], ref[0][1][:1])]
    assert corpus.box_agreement(ref, missing) == pytest.approx(2 / 3)
    assert corpus.box_agreement([(np.zeros((0, 4)), np.zeros(0))], [(np.zeros((0, 4)), np.zeros(0))]) == 1.0


def test_score_classes_agreement_and_accuracy():
    entry = corpus.Entry("m", "x", "y", "m.onnx", "m.npz", "accuracy", {"x": [1, 4]}, decoder="classes")
    ref = [[np.array([[0.1, 0.9]])], [np.array([[0.8, 0.2]])]]
    cand = [[np.array([[0.2, 0.8]])], [np.array([[0.4, 0.6]])]]
    got = corpus.score(entry, ref, cand, labels=np.array([1, 1]))
    assert got["agreement"] == pytest.approx(0.5)
    assert got["accuracy"] == pytest.approx(1.0)
    assert corpus.score(entry, ref, labels=np.array([1, 1]))["accuracy"] == pytest.approx(0.5)
