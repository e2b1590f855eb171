"""Box agreement of YOLO-style detectors: do two models find the same boxes?

A detection output per sample is ``[4 + C, anchors]`` (YOLOv8: cx, cy, w, h, class scores) or
``[anchors, 5 + C]`` (YOLOv5/X: cx, cy, w, h, objectness, class scores). :func:`detections` keeps
the boxes scoring at least ``conf`` and applies greedy class-aware NMS; :func:`box_agreement`
matches two models' detections one to one (same class, IoU >= 0.5):

    agreement = (matched boxes of both sides) / (boxes of both sides)

"""

# NOTE: numpy only; this module imports nothing from onnxsqueeze.

from __future__ import annotations

import numpy as np


def detections(
    pred: np.ndarray, *, layout: str = "features_first", conf: float = 0.25, nms_iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes ``[K, 4]`` (x1, y1, x2, y2), scores and classes of one YOLO-style prediction.

    ``features_first`` is YOLOv8's ``[4 + C, anchors]`` (cx, cy, w, h, class scores);
    ``anchors_first`` is YOLOv5/X's ``[anchors, 5 + C]`` (cx, cy, w, h, objectness, class scores;
    score = objectness * class score). Boxes scoring at least ``conf`` are kept, then greedy
    class-aware non-maximum suppression at ``nms_iou``.
    """
    p = np.asarray(pred, dtype=np.float64)
    if layout == "features_first":
        p = p.T
        cls_scores = p[:, 4:]
    else:
        cls_scores = p[:, 5:] * p[:, 4:5] if p.shape[1] > 5 else p[:, 4:5]
    cls = np.argmax(cls_scores, axis=1)
    score = cls_scores[np.arange(len(p)), cls]
    sel = np.flatnonzero(score >= conf)
    sel = sel[np.argsort(-score[sel], kind="stable")]
    cx, cy, w, h = p[sel, 0], p[sel, 1], p[sel, 2], p[sel, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    keep: list[int] = []
    for i in range(len(sel)):
        same = [k for k in keep if cls[sel[k]] == cls[sel[i]]]
        if same and np.max(_box_iou(boxes[i], boxes[same])) > nms_iou:
            continue
        keep.append(i)
    return boxes[keep], score[sel][keep], cls[sel][keep]


def _box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    x2, y2 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def box_agreement(
    pred: np.ndarray,
    reference: np.ndarray,
    *,
    layout: str = "features_first",
    conf: float = 0.25,
    iou_match: float = 0.5,
    margin: float = 0.05,
) -> float:
    """Agreement of two YOLO-style detectors' boxes, in percent (100: the same detections).

    Per sample, the detections of each model (score >= ``conf``, after NMS, see
    :func:`detections`) are matched one to one, greedily by score, to the other model's
    detections of the same class with IoU >= ``iou_match``. The other model's side is searched at
    ``conf - margin``, so a box that scores 0.251 in one model and 0.249 in the other is not a
    disagreement. Agreement = (matched boxes of both sides) / (boxes of both sides); two empty
    sets agree. Samples are pooled (a sample with many boxes weighs more).
    """
    matched, total = 0, 0
    for a, b in zip(np.asarray(pred), np.asarray(reference), strict=True):
        da, db = detections(a, layout=layout, conf=conf), detections(b, layout=layout, conf=conf)
        la = detections(a, layout=layout, conf=conf - margin)
        lb = detections(b, layout=layout, conf=conf - margin)
        matched += _matches(da, lb, iou_match) + _matches(db, la, iou_match)
        total += len(da[0]) + len(db[0])
    return 100.0 if total == 0 else 100.0 * matched / total


def _matches(
    side: tuple[np.ndarray, np.ndarray, np.ndarray],
    other: tuple[np.ndarray, np.ndarray, np.ndarray],
    thr: float,
) -> int:
    boxes, _, cls = side
    oboxes, _, ocls = other
    used = np.zeros(len(oboxes), bool)
    n = 0
    for box, c in zip(boxes, cls, strict=True):
        cand = np.flatnonzero((ocls == c) & ~used)
        if not len(cand):
            continue
        ious = _box_iou(box, oboxes[cand])
        best = int(np.argmax(ious))
        if ious[best] >= thr:
            used[cand[best]] = True
            n += 1
    return n
