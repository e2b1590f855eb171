from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from tests.helpers import model_from_text, rand

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N, 16] x) => (float[N, {out}] y) {{
    h = MatMul(x, w1)
    r = Relu(h)
    y = MatMul(r, w2)
}}
"""

FIXED = """
<ir_version: 8, opset_import: ["" : 17]>
fixed (float[1, 16] x) => (float[1, 16] y) {
    y = Relu(x)
}
"""


def tiny_mlp(path: Path, hidden: int, out: int = 4, seed: int = 0) -> Path:
    """A two-layer MLP with a dynamic batch, input ``x`` [N, 16]."""
    model = model_from_text(
        MLP.format(out=out),
        {"w1": rand((16, hidden), seed), "w2": rand((hidden, out), seed + 1)},
    )
    return sio.save(model, path)


@pytest.fixture
def small_and_large(tmp_path: Path) -> tuple[Path, Path]:
    """(large, small): the same interface, the second ~8x fewer MACs and bytes."""
    return tiny_mlp(tmp_path / "large.onnx", 256), tiny_mlp(tmp_path / "small.onnx", 32)


@pytest.fixture
def fixed_model(tmp_path: Path) -> Path:
    return sio.save(model_from_text(FIXED), tmp_path / "fixed.onnx")


def samples(values: list[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
