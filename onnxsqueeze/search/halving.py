"""Successive halving's stopping rule: when a candidate scored on part of the samples may stop.

A candidate is scored on a seeded quarter of the evaluation samples, then half, then all, and
stops as soon as it cannot fit the budget even if every unseen sample scored its best
(:func:`can_still_fit`, a worst-case bound: a candidate that fits on the full set is never
stopped).
"""

from __future__ import annotations

from onnxsqueeze.evaluate import Budget

# The range of one sample's contribution to each metric (a metric is the mean over samples):
# what the unseen samples could at best add when a candidate is scored on a subset.
SAMPLE_RANGE: dict[str, tuple[float, float]] = {
    "accuracy": (0.0, 100.0),
    "agreement": (0.0, 100.0),
    "iou": (0.0, 100.0),
    "cosine": (-100.0, 100.0),
    "mae": (0.0, float("inf")),
}
# The smallest subset worth scoring before the whole set (fewer samples prune almost nothing).
MIN_RUNG = 32


def can_still_fit(
    value: float,
    n: int,
    total: int,
    *,
    baseline: float,
    budget: Budget,
    best_per_sample: float,
    higher_is_better: bool = True,
    scale: float = 1.0,
) -> bool:
    """Whether a candidate scoring ``value`` on ``n`` of ``total`` samples may fit on all of them.

    Successive halving's stopping rule. The metric is a mean over samples, so on all of them it
    is at best ``(n * value + (total - n) * best_per_sample) / total`` (every unseen sample at its
    best). The candidate is dropped only when even that misses the budget: a worst-case margin,
    not a confidence interval, so a candidate that fits on the full set is never dropped, whatever
    the data and however the subset was drawn (the subset only decides how soon a hopeless one
    stops).
    """
    best = value if n >= total else (n * value + (total - n) * best_per_sample) / total
    drop = budget.drop(baseline, best, higher_is_better=higher_is_better, scale=scale)
    return drop <= budget.max_drop + 1e-9
