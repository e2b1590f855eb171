"""Tiny ONNX-text models shared by the export tests (seeded initializers)."""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxsqueeze import io as sio
from tests.helpers import model_from_text, rand

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def dynamic_fp32() -> onnx.ModelProto:
    """x float[N, 4] -> y float[N, 3]: a dynamic batch."""
    return model_from_text(
        f"{HEADER} g (float[N, 4] x) => (float[N, 3] y) {{ y = MatMul(x, W) }}", {"W": rand((4, 3), seed=1)}
    )


def static_fp16() -> onnx.ModelProto:
    """x float16[2, 4] -> y float16[2, 3]: static shapes, fp16."""
    return model_from_text(
        f"{HEADER} g (float16[2, 4] x) => (float16[2, 3] y) {{ y = MatMul(x, W) }}",
        {"W": rand((4, 3), seed=2, dtype="float16")},
    )


def mixed() -> onnx.ModelProto:
    """ids int64[N, L], w float16[N, L] -> s float16[N] (batch only), c int32[N, L]."""
    return model_from_text(
        f"""{HEADER}
        g (int64[N, L] ids, float16[N, L] w) => (float16[N] s, int32[N, L] c) {{
          f = Cast<to=10>(ids)
          p = Mul(f, w)
          ax = Constant<value=int64[1] {{1}}>()
          s = ReduceSum<keepdims=0>(p, ax)
          c = Cast<to=6>(ids)
        }}"""
    )


def float8() -> onnx.ModelProto:
    """An input type Triton has no data type for."""
    return model_from_text(
        '<ir_version: 10, opset_import: ["" : 21]> g (float8e4m3fn[N, 2] x) => (float8e4m3fn[N, 2] y) '
        "{ y = Identity(x) }"
    )


def write(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    return sio.save(model, folder / name)
