"""Task metrics: how close a candidate's outputs are to the original's, in the units of a budget.

One copy for every command (``squeeze``, ``fp16``, ``prune``, ``resize``, ``verify``). Metrics
(``METRICS``), all on one output array whose first axis indexes samples (sequence outputs
``[T, N, C]`` are recognised, see below):

- ``accuracy``: top-1 against the labels, in percent;
- ``agreement``: top-1 agreement with the original model (its argmax as teacher labels), %;
  on a sequence output, the fraction of time steps whose argmax agrees;
- ``iou``: IoU of the maps thresholded at ``threshold`` (or of the argmax class maps when the
  output has a class axis ``[N, C, H, W]`` with C > 1, mean over classes), averaged per sample, %;
- ``cosine``: mean per-sample cosine similarity with the original's output, times 100;
- ``mae``: mean absolute error against the original's output (lower is better);
- ``sequence``: exact match of the greedy CTC decodings (argmax per step, repeats collapsed,
  blanks dropped) with the original's, % of samples.

Class axis: ``class_axis`` names it; by default it is axis 1 (``[N, C, ...]``), except for a
3-D output ``[T, N, C]`` (a CTC sequence: the sample axis second, classes last), recognised when
axis 1 has the sample count and axis 0 does not, or axis 1 has length 1.

A budget is a drop from the baseline in these units: points for the percentages, raw units for
``mae`` (where a "drop" is an increase), or with ``relative=True`` a percentage of the baseline
(for ``mae``, of the original output's mean magnitude).
"""

# NOTE: this module imports nothing from passes/, search, optimize/ or cli/.

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from onnxsqueeze.errors import InputError


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    needs_labels: bool
    unit: str
    help: str
    default_drop: float | None = None  # the budget when a command is given --metric alone


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", True, True, "%", "top-1 accuracy against the labels", 1.0),
        Metric("agreement", True, False, "%", "top-1 agreement with the original model", 1.0),
        Metric("iou", True, False, "%", "IoU of thresholded maps against the original model", 2.0),
        Metric("cosine", True, False, "x100", "mean cosine similarity with the original's outputs", 0.1),
        Metric("mae", False, False, "", "mean absolute error against the original's outputs"),
        Metric("sequence", True, False, "%", "exact match of greedy CTC decodings with the original", 1.0),
    )
}


def get(name: str) -> Metric:
    """The metric called ``name``; one line naming the choices otherwise."""
    if name not in METRICS:
        raise InputError(f"unknown metric '{name}'; choose one of {', '.join(METRICS)}")
    return METRICS[name]


def sequence_layout(shape: Sequence[int], samples: int | None = None) -> bool:
    """Whether an output of this shape is a ``[T, N, C]`` sequence (samples on axis 1)."""
    if len(shape) != 3 or shape[2] < 2:
        return False
    if samples is not None and shape[1] == samples and shape[0] != samples:
        return True
    return shape[1] == 1 and shape[0] > 1 and samples in (None, 1)


def class_axis_of(shape: Sequence[int], samples: int | None = None, class_axis: int | None = None) -> int:
    """The class axis of an output (see the module docstring)."""
    if class_axis is not None:
        if not -len(shape) <= class_axis < len(shape):
            raise InputError(f"--class-axis {class_axis}: the output has rank {len(shape)} {list(shape)}")
        return class_axis % len(shape)
    return 2 if sequence_layout(shape, samples) else 1


def _rows(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def top1(scores: np.ndarray, what: str = "top-1", *, class_axis: int | None = None) -> np.ndarray:
    """Argmax over the class axis (the sample axis stays where it was)."""
    s = np.asarray(scores)
    axis = class_axis_of(s.shape, class_axis=class_axis) if s.ndim else 1
    if s.ndim < 2 or s.shape[axis] < 2:
        raise InputError(
            f"{what}: output shape {list(s.shape)} is not class scores [N, C, ...] or a [T, N, C] "
            "sequence; name the class axis with --class-axis, or use --metric cosine or mae"
        )
    return np.argmax(s, axis=axis)


def accuracy(scores: np.ndarray, labels: np.ndarray, *, class_axis: int | None = None) -> float:
    """Top-1 accuracy in percent."""
    pred = top1(scores, "accuracy", class_axis=class_axis)
    labels = np.asarray(labels).reshape(len(labels))
    if pred.ndim != 1 or len(pred) != len(labels):
        raise InputError(
            f"accuracy: output shape {list(np.shape(scores))} gives {list(pred.shape)} predictions for "
            f"{len(labels)} labels; use --metric agreement or sequence"
        )
    return float(np.mean(pred == labels)) * 100.0


def agreement(scores: np.ndarray, reference: np.ndarray, *, class_axis: int | None = None) -> float:
    """Top-1 agreement with the reference in percent (per time step for sequence outputs)."""
    return (
        float(
            np.mean(
                top1(scores, "agreement", class_axis=class_axis) == top1(reference, class_axis=class_axis)
            )
        )
        * 100.0
    )


def iou(maps: np.ndarray, reference: np.ndarray, *, threshold: float = 0.5) -> float:
    """Mean per-sample IoU in percent of ``maps > threshold`` (or argmax class maps) vs the reference."""
    m, r = np.asarray(maps), np.asarray(reference)
    if m.ndim == 4 and m.shape[1] > 1:  # class scores per pixel: mean IoU over the classes present
        cm, cr = np.argmax(m, axis=1), np.argmax(r, axis=1)
        scores = []
        for i in range(len(m)):
            per = []
            for c in np.union1d(np.unique(cm[i]), np.unique(cr[i])):
                a, b = cm[i] == c, cr[i] == c
                per.append(np.count_nonzero(a & b) / np.count_nonzero(a | b))
            scores.append(np.mean(per))
        return float(np.mean(scores)) * 100.0
    a, b = _rows(m) > threshold, _rows(r) > threshold
    inter = np.count_nonzero(a & b, axis=1)
    union = np.count_nonzero(a | b, axis=1)
    per_sample = np.where(union > 0, inter / np.maximum(union, 1), 1.0)  # both empty: identical
    return float(np.mean(per_sample)) * 100.0


def cosine(x: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-sample cosine similarity, times 100 (two zero vectors count as identical)."""
    a, b = _rows(x), _rows(reference)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))
    return float(np.mean(cos)) * 100.0


def mae(x: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(x, np.float64) - np.asarray(reference, np.float64))))


def ctc_greedy(scores: np.ndarray, *, samples: int | None = None, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of a ``[T, N, C]`` or ``[N, T, C]`` output: one label tuple per sample.

    Argmax per step, repeated labels collapsed, ``blank`` dropped.
    """
    s = np.asarray(scores)
    if s.ndim != 3:
        raise InputError(f"sequence: output shape {list(s.shape)} is not a sequence [T, N, C] or [N, T, C]")
    best = np.argmax(s, axis=2)
    if sequence_layout(s.shape, samples):
        best = best.T  # [N, T]
    decoded = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        decoded.append(tuple(int(v) for v in row[keep] if v != blank))
    return decoded


def sequence(x: np.ndarray, reference: np.ndarray, *, samples: int | None = None) -> float:
    """Exact match of the greedy CTC decodings with the reference's, in percent of samples."""
    a, b = ctc_greedy(x, samples=samples), ctc_greedy(reference, samples=samples)
    return float(np.mean([p == q for p, q in zip(a, b, strict=True)])) * 100.0


def score(
    name: str,
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    threshold: float = 0.5,
    class_axis: int | None = None,
    samples: int | None = None,
) -> float:
    """The metric ``name`` of one candidate output against the original's (see the docstring)."""
    metric = get(name)
    if metric.needs_labels:
        if labels is None:
            raise InputError(
                "metric 'accuracy' needs 'labels' in the data; without labels use --metric agreement, "
                "iou, cosine, mae or sequence"
            )
        axis = class_axis
        if axis is None and sequence_layout(np.shape(candidate), samples):
            axis = 2
        return accuracy(candidate, labels, class_axis=axis)
    if np.shape(candidate) != np.shape(reference):
        raise InputError(
            f"candidate output shape {list(np.shape(candidate))} differs from the original's "
            f"{list(np.shape(reference))}"
        )
    if name == "agreement":
        axis = class_axis
        if axis is None and sequence_layout(np.shape(candidate), samples):
            axis = 2
        return agreement(candidate, reference, class_axis=axis)
    if name == "iou":
        return iou(candidate, reference, threshold=threshold)
    if name == "cosine":
        return cosine(candidate, reference)
    if name == "sequence":
        return sequence(candidate, reference, samples=samples)
    return mae(candidate, reference)


def default_metric(output: np.ndarray, *, labels: bool, samples: int | None = None) -> str:
    """The metric a command uses when none is named: by the output's shape and the data."""
    shape = np.shape(output)
    if sequence_layout(shape, samples):
        return "sequence"
    if len(shape) == 2 and shape[1] >= 2:
        if labels:
            return "accuracy"
        return "cosine" if unit_rows(output) else "agreement"
    return "cosine"


def unit_rows(output: np.ndarray) -> bool:
    """Whether an ``[N, D]`` output's rows are L2-normalized: sentence or face embeddings, whose
    argmax means nothing (their task metric is the cosine), not class scores."""
    x = np.nan_to_num(np.asarray(output, dtype=np.float64))
    if x.ndim != 2 or not len(x) or not np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3):
        return False
    # Confident class probabilities (softmax rows near one-hot) have a norm near 1 too.
    return not (x.min() >= 0.0 and np.allclose(x.sum(axis=1), 1.0, atol=1e-3))


def near_constant(output: np.ndarray) -> bool:
    """Whether an output barely varies (a map of near-zero probabilities on random inputs).

    Then a normalized error is noise and says nothing of the model's task.
    """
    x = np.asarray(output, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0 or not np.issubdtype(np.asarray(output).dtype, np.floating):
        return False
    spread = float(x.max() - x.min())
    return spread <= 1e-3 * max(1.0, float(np.abs(x).max()))


@dataclasses.dataclass(frozen=True)
class Budget:
    """An accuracy budget: how far a candidate may fall behind the baseline.

    ``max_drop`` is in the metric's units (points for percentages), or with ``relative`` a
    percentage of ``scale`` (the baseline's value, or for ``mae`` the outputs' mean magnitude).
    """

    max_drop: float
    relative: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.max_drop) or self.max_drop < 0:
            raise InputError(f"--max-drop {self.max_drop}: must be a finite number >= 0")

    def drop(
        self, baseline: float, value: float, *, higher_is_better: bool = True, scale: float = 1.0
    ) -> float:
        """The candidate's drop in budget units (negative when it is better than the baseline)."""
        raw = baseline - value if higher_is_better else value - baseline
        if not self.relative:
            return float(raw)
        return float(raw / scale * 100.0) if scale > 0 else (0.0 if raw <= 0 else float("inf"))

    def fits(
        self, baseline: float, value: float, *, higher_is_better: bool = True, scale: float = 1.0
    ) -> bool:
        if not np.isfinite(value):
            return False
        # A hair of slack so that a drop exactly at the limit is not lost to float rounding.
        return (
            self.drop(baseline, value, higher_is_better=higher_is_better, scale=scale) <= self.max_drop + 1e-9
        )

    def describe(self, metric: Metric) -> str:
        units = {"%": " points", "x100": " (cosine x100)", "": ""}
        of = "the original's mean |output|" if not metric.higher_is_better else "the baseline"
        unit = f"% of {of}" if self.relative else units.get(metric.unit, f" {metric.unit}")
        verb = "rise" if not metric.higher_is_better else "drop"
        return f"{metric.name} {verb} <= {self.max_drop:g}{unit}"
