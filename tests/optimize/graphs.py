"""Tiny graphs reproducing third-party exporters' patterns (seeded, ONNX text format)."""

from __future__ import annotations

import numpy as np
import onnx

from tests.helpers import model_from_text, rand


def _const_attr(name: str, array: np.ndarray) -> str:
    values = ", ".join(f"{v:.6f}" for v in array.ravel())
    dims = ", ".join(str(d) for d in array.shape)
    return f"{name} = Constant <value = float[{dims}] {{{values}}}> ()"


def constant_weights_model(batch: str = "N", h: str = "H", w: str = "W") -> onnx.ModelProto:
    """paddle2onnx style: Conv weights are Constant nodes, BN after the convs, dynamic dims."""
    w1, w2 = rand((8, 3, 3, 3), 1, 0.3), rand((4, 8, 1, 1), 2, 0.3)
    text = f"""
    <ir_version: 8, opset_import: ["" : 13]>
    paddle ({batch_decl(batch, h, w)}) => (float[{batch}, 4] y) {{
        {_const_attr("w1", w1)}
        {_const_attr("w2", w2)}
        c1 = Conv <pads = [1, 1, 1, 1]> (x, w1)
        b1 = BatchNormalization (c1, gamma, beta, mean, var)
        r1 = Relu (b1)
        c2 = Conv (r1, w2)
        p = GlobalAveragePool (c2)
        y = Flatten (p)
    }}
    """
    inits = {
        "gamma": rand((8,), 3, 0.1) + 1.0,
        "beta": rand((8,), 4, 0.1),
        "mean": rand((8,), 5, 0.1),
        "var": np.abs(rand((8,), 6, 0.1)) + 0.5,
    }
    return model_from_text(text, inits)


def batch_decl(batch: str, h: str, w: str) -> str:
    return f"float[{batch}, 3, {h}, {w}] x"


def near_zero_map_model() -> onnx.ModelProto:
    """A text detector's probability map: far below zero on random inputs (sigmoid ~ 1e-9)."""
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    det (float[N, 3, 16, 16] x) => (float[N, 1, 16, 16] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
        y = Sigmoid (c)
    }
    """
    return model_from_text(text, {"w": rand((1, 3, 3, 3), 7, 0.05), "b": np.array([-15.0], np.float32)})


def ctc_model(classes: int = 12) -> onnx.ModelProto:
    """An OCR recogniser: input [1, 1, 8, W], CTC scores [T, 1, C] (time first), declared [1, seqlen].

    Squeeze without axes hides the rank from shape inference (T is dynamic), so the wrong
    declaration passes the checker, as ddddocr's does.
    """
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    ocr (float[1, 1, 8, W] x) => (float[1, seqlen] y) {
        c = Conv <strides = [8, 4]> (x, w)
        t = Transpose <perm = [3, 0, 2, 1]> (c)
        s = Squeeze (t)
        y = Unsqueeze (s, axes)
    }
    """
    return model_from_text(text, {"w": rand((classes, 1, 8, 4), 8, 0.5), "axes": np.array([1], np.int64)})
