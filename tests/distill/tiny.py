"""A tiny ONNX teacher (flatten + Gemm over 8x8 images, 4 classes) and data it labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
tiny (float[N, 1, 8, 8] input) => (float[N, 4] logits) {
    flat = Flatten <axis = 1> (input)
    logits = Gemm (flat, W, B)
}
"""


def teacher_model(seed: int = 0) -> onnx.ModelProto:
    return model_from_text(TEXT, {"W": rand((64, 4), seed, scale=0.5), "B": rand((4,), seed + 1, 0.1)})


def write_assets(folder: Path, n: int = 96, seed: int = 0) -> tuple[Path, Path, Path]:
    """(teacher.onnx, train.npz, val.npz); labels are the teacher's own argmax (a learnable task)."""
    from tests.helpers import run_ort

    model = teacher_model(seed)
    teacher = folder / "teacher.onnx"
    onnx.save(model, teacher)
    x = rand((n + 32, 1, 8, 8), seed + 2)
    y = run_ort(model, {"input": x})[0].argmax(1).astype(np.int64)
    train, val = folder / "train.npz", folder / "val.npz"
    np.savez(train, input=x[:n], labels=y[:n])
    np.savez(val, input=x[n:], labels=y[n:])
    return teacher, train, val
