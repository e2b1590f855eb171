"""Acceptance by each output's task metric (onnxsqueeze.precision.checks)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxsqueeze.precision import check_outputs, output_task
from tests.helpers import rand

COSINE_FLOOR_FOR_TEST = 0.99


@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        ((5, 10), "agreement"),
        ((2, 22, 2100), "boxes"),
        ((1, 3549, 6), "boxes"),
        ((20, 1, 8210), "frames"),
        ((2, 1, 32, 32), "iou"),
        ((2, 12, 384), "cosine"),
    ],
)
def test_output_task_from_shape(shape: tuple[int, ...], kind: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "boxes" and shape[1] == 22:
        x[:, 4:, :] = rng.uniform(0, 1, (shape[0], 18, shape[2]))
    if kind == "boxes" and shape[2] == 6:
        x[:, :, 4:] = rng.uniform(0, 1, (shape[0], shape[1], 2))
    if kind == "iou":
        x = 1 / (1 + np.exp(-x))
    assert output_task(x)[0] == kind


def test_normalized_embeddings_are_judged_by_cosine() -> None:
    x = rand((8, 384), seed=37)
    assert output_task(x)[0] == "agreement"
    assert output_task(x / np.linalg.norm(x, axis=1, keepdims=True))[0] == "cosine"


def test_check_outputs_classifier_agreement_and_cosine_floor() -> None:
    ref = rand((100, 4), seed=36)
    same = check_outputs({"y": ref}, {"y": ref + 1e-4})[0]
    assert same.metric == "agreement" and same.value == 1.0 and same.passed
    flipped = ref.copy()
    flipped[:2] = flipped[:2, ::-1]  # two of 100 predictions change: 98% < 99%
    bad = check_outputs({"y": ref}, {"y": flipped})[0]
    assert bad.value == pytest.approx(0.98) and not bad.passed
    scaled = check_outputs({"y": ref}, {"y": ref * np.array([1, 1, 1, -1], np.float32)})[0]
    assert scaled.cosine < COSINE_FLOOR_FOR_TEST and not scaled.passed
