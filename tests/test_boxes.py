"""Box agreement of YOLO-style detection outputs (handmade predictions, exact expected values)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxsqueeze.boxes import box_agreement, detections


def _v8(
    boxes: list[tuple[float, float, float, float, int, float]], classes: int = 3, anchors: int = 50
) -> np.ndarray:
    """A YOLOv8 prediction ``[1, 4 + C, anchors]`` holding ``boxes`` (cx, cy, w, h, class, score)."""
    p = np.zeros((1, 4 + classes, anchors), np.float32)
    p[0, :4] = 1.0  # background anchors: tiny boxes with zero scores
    for i, (cx, cy, w, h, c, s) in enumerate(boxes):
        p[0, :4, i] = (cx, cy, w, h)
        p[0, 4 + c, i] = s
    return p


def test_identical_detections_agree() -> None:
    p = _v8([(50, 50, 20, 20, 0, 0.9), (150, 80, 30, 10, 2, 0.6)])
    assert box_agreement(p, p) == 100.0


def test_moved_box_and_changed_class_disagree() -> None:
    ref = _v8([(50, 50, 20, 20, 0, 0.9), (150, 80, 30, 10, 2, 0.6)])
    moved = _v8([(62, 50, 20, 20, 0, 0.9), (150, 80, 30, 10, 2, 0.6)])  # IoU 8*20/(2*400-160) = 0.25
    assert box_agreement(moved, ref) == pytest.approx(50.0)
    relabel = _v8([(50, 50, 20, 20, 1, 0.9), (150, 80, 30, 10, 2, 0.6)])
    assert box_agreement(relabel, ref) == pytest.approx(50.0)


def test_score_near_the_threshold_is_not_a_disagreement() -> None:
    ref = _v8([(50, 50, 20, 20, 0, 0.251)])
    cand = _v8([(50, 50, 20, 20, 0, 0.249)])
    assert box_agreement(cand, ref) == 100.0
    gone = _v8([(50, 50, 20, 20, 0, 0.1)])
    assert box_agreement(gone, ref) == 0.0


def test_nms_and_empty_sets() -> None:
    overlapping = _v8([(50, 50, 20, 20, 0, 0.9), (51, 50, 20, 20, 0, 0.8), (51, 50, 20, 20, 1, 0.7)])
    boxes, _scores, classes = detections(overlapping[0])
    assert len(boxes) == 2 and list(classes) == [0, 1]  # same-class duplicate suppressed
    empty = _v8([])
    assert box_agreement(empty, empty) == 100.0


def test_anchors_first_layout_uses_objectness() -> None:
    p = np.zeros((1, 10, 7), np.float32)  # [N, anchors, 5 + C] with C = 2
    p[0, 0] = (50, 50, 20, 20, 0.9, 0.1, 0.8)
    p[0, 1] = (80, 80, 20, 20, 0.2, 0.9, 0.1)  # objectness 0.2: score 0.18 < 0.25
    boxes, scores, classes = detections(p[0], layout="anchors_first")
    assert len(boxes) == 1 and classes[0] == 1 and scores[0] == pytest.approx(0.72)
