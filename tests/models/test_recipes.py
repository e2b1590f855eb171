"""The sample-model recipes produce valid, accurate models (real data, no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze.verify import run

pytestmark = pytest.mark.slow


def test_digits_cnn_is_accurate(digits: tuple[Path, Path, Path]) -> None:
    model_path, val_path, train_path = digits
    model = sio.load(model_path)
    val = sio.load_npz(val_path)
    assert val["input"].shape == (360, 1, 32, 32) and len(sio.load_npz(train_path)["labels"]) == 1797 - 360
    logits = run(model, {"input": val["input"]})["logits"]
    accuracy = float(np.mean(logits.argmax(1) == val["labels"]))
    assert accuracy >= 0.97


def test_zoo_exports_a_valid_model() -> None:
    pytest.importorskip("torchvision")
    from tests.helpers import zoo_model

    model = sio.load(zoo_model("mobilenet_v3_small"))  # the export the resolution tests share
    out = run(model, {"input": np.zeros((2, 3, 224, 224), np.float32)})["logits"]
    assert out.shape == (2, 1000) and np.isfinite(out).all()
