"""Acceptance of a converted model by the task metric of each output.

:func:`check_outputs` judges every output by what it is (:func:`output_task` guesses from its
shape and values): top-1 agreement >= 99% for class scores ``[N, C]``, box agreement >= 98% for
YOLO-style detections, mask IoU >= 98% for probability maps, per-position top-1 agreement >= 99%
for sequences (CTC ``[T, N, C]``), cosine >= 0.999 otherwise, and a cosine floor of 0.99 on every
output (a task metric alone can be vacuous). An output that barely varies between the samples
(random inputs into a detector: a near-zero map, no box) cannot show an error: it is accepted with
a warning that asks for real data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxsqueeze.metrics import unit_rows

# The task metric each output kind must reach (fractions), and the cosine floor of every output.
THRESHOLDS = {"agreement": 0.99, "boxes": 0.98, "iou": 0.98, "frames": 0.99, "cosine": 0.999, "exact": 1.0}
COSINE_FLOOR = 0.99
MAP_THRESHOLD = 0.5  # binarization threshold of probability maps for the mask IoU
BOX_CONF = 0.25  # detection score threshold of box agreement


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output judged by its task metric (values are fractions: 1.0 = identical)."""

    output: str
    metric: str  # agreement, boxes, iou, frames, cosine, exact, normalized
    value: float
    threshold: float
    cosine: float
    vacuous: str | None = None  # why this output cannot show an error on these inputs

    @property
    def passed(self) -> bool:
        if self.vacuous is not None:
            return True
        if self.metric == "normalized":
            return self.value <= self.threshold
        return self.value >= self.threshold and (self.metric == "exact" or self.cosine >= COSINE_FLOOR)

    def describe(self) -> str:
        op = "<=" if self.metric == "normalized" else ">="
        text = f"'{self.output}': {self.metric} {self.value:.4g} ({op} {self.threshold:g})"
        if self.metric not in ("cosine", "exact", "normalized"):
            text += f", cosine {self.cosine:.5f} (>= {COSINE_FLOOR:g})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"passed": self.passed}


def output_task(ref: np.ndarray) -> tuple[str, str]:
    """Guess what an output is from its shape and values: ``(metric, layout)``.

    - ``[N, C]`` scores: ``agreement`` (top-1 over axis 1), except L2-normalized rows
      (sentence or face embeddings): ``cosine``;
    - ``[N, 4 + C, A]`` with ``A >= 2 (4 + C)`` (YOLOv8) or ``[N, A, 5 + C]`` (YOLOv5/X) whose
      score rows lie in [0, 1]: ``boxes``;
    - other rank-3 outputs with probabilities on the last axis, a vocabulary-sized last axis
      (>= 1000) or a ``[T, 1, C]`` layout (CTC): ``frames`` (top-1 per position, last axis);
    - rank-4 maps with values in [0, 1]: ``iou`` (one channel: thresholded at 0.5; several:
      argmax class maps);
    - anything else (embeddings, regressions): ``cosine``; non-float outputs: ``exact``.
    """
    r = np.asarray(ref)
    if not np.issubdtype(r.dtype, np.floating):
        return "exact", ""
    finite = r[np.isfinite(r)]
    if not finite.size:
        return "cosine", ""
    unit = bool(finite.min() >= 0.0 and finite.max() <= 1.0)
    if r.ndim == 2 and r.shape[1] >= 2:
        return ("cosine" if unit_rows(r) else "agreement"), ""  # embeddings vs class scores
    if r.ndim == 3:
        k, a = r.shape[1], r.shape[2]
        if 5 <= k <= 300 and a >= 2 * k and _unit(r[:, 4:, :]):
            return "boxes", "features_first"
        if 6 <= a <= 300 and k >= 2 * a and _unit(r[:, :, 4:]):
            return "boxes", "anchors_first"
        probs = unit and _sums_to_one(r)
        if a >= 2 and (probs or a >= 1000 or k == 1):
            return "frames", ""
    if r.ndim == 4 and unit:
        return "iou", ""
    return "cosine", ""


def _unit(x: np.ndarray) -> bool:
    f = x[np.isfinite(x)]
    return bool(f.size) and float(f.min()) >= 0.0 and float(f.max()) <= 1.0


def _sums_to_one(r: np.ndarray) -> bool:
    return bool(np.allclose(np.sum(r.astype(np.float64), axis=-1), 1.0, atol=1e-3))


def _vacuous(ref: np.ndarray, metric: str, layout: str) -> str | None:
    """Why an output cannot show a precision error on these samples (None: it can)."""
    r = np.asarray(ref, dtype=np.float64)
    if metric == "boxes":
        from onnxsqueeze.boxes import detections

        if not any(len(detections(x, layout=layout, conf=BOX_CONF)[0]) for x in r):
            return f"no box scores >= {BOX_CONF:g} on these inputs"
    if metric == "iou" and _channels_first(r, r).shape[1] == 1 and not np.any(r > MAP_THRESHOLD):
        return f"the map stays below {MAP_THRESHOLD:g} everywhere on these inputs"
    if r.ndim and len(r) > 1:
        finite = np.where(np.isfinite(r), r, 0.0)
        spread = float(np.mean(np.std(finite, axis=0)))
        if spread <= 1e-3 * max(float(np.mean(np.abs(finite))), 1e-30):
            return "it barely varies between the samples"
    return None


def check_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    metric: str = "auto",
    normalized_tolerance: float = 0.01,
    threshold: float | None = None,
) -> list[OutputCheck]:
    """Judge every output of ``candidate`` against ``reference`` by its task metric.

    Args:
        reference: the float32 model's outputs by name.
        candidate: the converted model's outputs (by name, or by position).
        metric: ``auto`` (per output, see :func:`output_task`), one of the metric names for every
            float output, or ``normalized`` (``max |y - y_ref| / max |y_ref| <= normalized_tolerance``).
        normalized_tolerance: the budget of ``normalized``.
        threshold: overrides the metric's threshold (a fraction).
    """
    from onnxsqueeze import boxes

    cand_items = list(candidate.values())
    checks: list[OutputCheck] = []
    for i, (name, ref) in enumerate(reference.items()):
        r = np.asarray(ref)
        c = np.asarray(candidate[name] if name in candidate else cand_items[i])
        kind, layout = output_task(r)
        if metric not in ("auto",) and kind != "exact":
            kind = metric
            layout = layout or "features_first"
        cos = cosine_similarity(r, c)
        if kind == "exact":
            value = float(np.mean(r == c)) if r.shape == c.shape else 0.0
        elif kind == "normalized":
            value = normalized_error({name: r}, {name: c})
        elif r.shape != c.shape or np.any(np.isfinite(r) & ~np.isfinite(c)):
            value = 0.0
        elif kind == "agreement":
            value = float(np.mean(np.argmax(r, axis=1) == np.argmax(c, axis=1)))
        elif kind == "frames":
            value = float(np.mean(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))
        elif kind == "boxes":
            value = boxes.box_agreement(c, r, layout=layout, conf=BOX_CONF) / 100.0
        elif kind == "iou":
            value = _mask_iou(_channels_first(c, r), _channels_first(r, r))
        else:
            value = cos
        limit = (
            threshold
            if threshold is not None
            else (normalized_tolerance if kind == "normalized" else THRESHOLDS.get(kind, 0.999))
        )
        vacuous = None if kind in ("exact", "normalized") else _vacuous(r, kind, layout)
        checks.append(OutputCheck(name, kind, value, limit, cos, vacuous))
    return checks


def _channels_first(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``x`` as NCHW when ``ref`` is a channels-last map of class probabilities (Keras/tf2onnx:
    MTCNN's PNet returns [N, H, W, 2] softmax maps): its last axis is short and sums to one."""
    if (
        ref.ndim == 4
        and 1 < ref.shape[-1] < ref.shape[1]
        and _sums_to_one(ref)
        and not _sums_to_one(np.moveaxis(ref, 1, -1))
    ):
        return np.moveaxis(x, -1, 1)
    return x


def _mask_iou(c: np.ndarray, r: np.ndarray) -> float:
    """Mean per-sample IoU of ``map > 0.5`` (one channel) or of the argmax class maps."""
    if r.ndim == 4 and r.shape[1] > 1:
        a, b = np.argmax(c, axis=1), np.argmax(r, axis=1)
        per = [
            np.mean(
                [
                    np.count_nonzero((a[i] == k) & (b[i] == k)) / np.count_nonzero((a[i] == k) | (b[i] == k))
                    for k in np.union1d(np.unique(a[i]), np.unique(b[i]))
                ]
            )
            for i in range(len(r))
        ]
        return float(np.mean(per))
    a = c.reshape(len(c), -1) > MAP_THRESHOLD
    b = r.reshape(len(r), -1) > MAP_THRESHOLD
    inter, union = np.count_nonzero(a & b, axis=1), np.count_nonzero(a | b, axis=1)
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))


def cosine_similarity(r: np.ndarray, c: np.ndarray) -> float:
    """Mean per-sample cosine similarity (1.0 for non-float or identical outputs)."""
    if r.shape != c.shape:
        return 0.0
    if not np.issubdtype(r.dtype, np.floating):
        return 1.0 if np.array_equal(r, c) else 0.0
    a = np.nan_to_num(np.asarray(r, np.float64).reshape(max(len(r), 1), -1), posinf=0.0, neginf=0.0)
    b = np.asarray(c, np.float64).reshape(max(len(c), 1), -1)
    if not np.all(np.isfinite(b[np.isfinite(np.asarray(r, np.float64).reshape(a.shape))])):
        return 0.0
    b = np.nan_to_num(b, posinf=0.0, neginf=0.0)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-300))
    return float(np.mean(cos))


def normalized_error(ref: Mapping[str, np.ndarray], cand: Mapping[str, np.ndarray]) -> float:
    """The worst output's ``max |cand - ref| / max |ref|`` (inf for a new NaN/Inf; non-float
    outputs: 0 when equal, else inf)."""
    worst = 0.0
    for i, (name, r) in enumerate(ref.items()):
        c = cand[name] if name in cand else list(cand.values())[i]
        r64 = np.asarray(r, dtype=np.float64)
        if not np.issubdtype(np.asarray(r).dtype, np.floating):
            worst = max(worst, 0.0 if np.array_equal(r, c) else float("inf"))
            continue
        c64 = np.asarray(c).astype(np.float64)
        if np.any(np.isfinite(r64) & ~np.isfinite(c64)):
            return float("inf")
        scale = float(np.max(np.abs(r64[np.isfinite(r64)]))) if np.isfinite(r64).any() else 0.0
        diff = float(np.max(np.abs(r64 - c64)[np.isfinite(r64)])) if np.isfinite(r64).any() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst
