"""Blame: the nodes that create the error of a failed float16 conversion (onnxsqueeze.precision.blame)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.precision import blame, convert_fp16, prepare
from tests.helpers import FP16_TOL, model_from_text, rand, run_ort
from tests.helpers import normalized_error as _normalized


def _chain_with_cancellation(depth: int = 12) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``depth`` MatMul+Tanh layers, then ``(h + 1000) - 1000`` hidden behind two Reshapes, then
    ``depth`` more layers: fp16 loses ``h`` where the sum is rounded (spacing 0.5 at 1000)."""
    lines, inits = [], {}
    prev = "x"
    for i in range(depth):
        lines.append(f"[mm{i}] m{i} = MatMul({prev}, w{i})")
        lines.append(f"[act{i}] h{i} = Tanh(m{i})")
        inits[f"w{i}"] = rand((16, 16), seed=100 + i, scale=0.4)
        prev = f"h{i}"
    lines += [
        f"[shift] s = Add({prev}, big)",
        "[flat] f = Reshape(s, flat_shape)",
        "[unflat] u = Reshape(f, shape)",
        "[unshift] d = Sub(u, big)",
    ]
    prev = "d"
    for i in range(depth, 2 * depth):
        lines.append(f"[mm{i}] m{i} = MatMul({prev}, w{i})")
        lines.append(f"[act{i}] h{i} = Tanh(m{i})")
        inits[f"w{i}"] = rand((16, 16), seed=100 + i, scale=0.4)
        prev = f"h{i}"
    lines.append(f"[head] y = MatMul({prev}, wout)")
    inits |= {
        "wout": rand((16, 4), seed=99),
        "big": np.full(16, 1000.0, np.float32),
        "flat_shape": np.array([-1], np.int64),
        "shape": np.array([-1, 16], np.int64),
    }
    text = (
        '<ir_version: 8, opset_import: ["" : 17]>\n'
        "g (float[N,16] x) => (float[N,4] y) {\n  " + "\n  ".join(lines) + "\n}\n"
    )
    return model_from_text(text, inits), {"x": rand((32, 16), seed=35, scale=0.1)}


def test_blame_keeps_only_the_cancellation_float32() -> None:
    # Without the up-front measurement nothing is flagged; the end-to-end check fails, and the
    # blame rounds find where the error is created instead of growing a region around the output.
    model, feeds = _chain_with_cancellation()
    plain = convert_fp16(model, feeds, measure=False, max_rounds=1)
    assert not plain.passed
    result = convert_fp16(model, feeds, measure=False)
    assert result.passed and result.rounds > 1
    assert {"unshift", "shift"} <= set(result.fp32_nodes)
    assert len(result.fp32_nodes) <= 4, result.fp32_nodes  # of 54 nodes
    assert set(result.blamed) == set(result.fp32_nodes)
    assert "error budget" in result.fp32_nodes["shift"]
    ref, got = run_ort(model, feeds)[0], run_ort(result.model, feeds)[0]
    assert _normalized(ref, got) <= FP16_TOL


def test_blame_measures_created_error_per_node() -> None:
    model, feeds = _chain_with_cancellation(depth=3)
    plain = convert_fp16(model, feeds, measure=False, max_rounds=1)
    base = prepare(ir.serde.deserialize_model(model))
    created, errors = blame(base, plain.model, feeds, {})
    worst = max(created, key=lambda k: created[k])
    assert worst == "unshift"
    assert errors["d"] > 0.1 > errors["u"]  # the Sub exposes what the rounded sum lost
    assert created["flat"] == pytest.approx(0.0, abs=1e-6)  # a Reshape creates no error
