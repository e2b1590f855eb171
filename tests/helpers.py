"""Helpers shared by the tests: tiny graphs from ONNX text with seeded initializers, ORT runs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "models"


def model_from_text(text: str, initializers: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse an ONNX text model and add ``initializers`` (name -> array); checked."""
    model = onnx.parser.parse_model(text)
    for name, array in (initializers or {}).items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def rand(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0, dtype: type = np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run in onnxruntime with graph optimizations disabled (reference semantics)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def digits_assets() -> tuple[Path, Path, Path]:
    """(digits_cnn.onnx, digits_val.npz, digits_train.npz), training the model once if missing."""
    model, val, train = CACHE / "digits_cnn.onnx", CACHE / "digits_val.npz", CACHE / "digits_train.npz"
    if not (model.exists() and val.exists() and train.exists()):
        from models import digits

        assert digits.main(["--out", str(CACHE)]) == 0
    return model, val, train
