from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from tests.graphs import tiny_mlp
from tests.helpers import model_from_text

FIXED = """
<ir_version: 8, opset_import: ["" : 17]>
fixed (float[1, 16] x) => (float[1, 16] y) {
    y = Relu(x)
}
"""


@pytest.fixture
def small_and_large(tmp_path: Path) -> tuple[Path, Path]:
    """(large, small): the same interface, the second ~8x fewer MACs and bytes."""
    return tiny_mlp(tmp_path / "large.onnx", 256), tiny_mlp(tmp_path / "small.onnx", 32)


@pytest.fixture
def fixed_model(tmp_path: Path) -> Path:
    return sio.save(model_from_text(FIXED), tmp_path / "fixed.onnx")


def samples(values: list[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
