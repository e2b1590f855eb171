"""Cleanup passes: BN folding (Conv, ConvTranspose, Gemm), constant folding and lifting."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.passes import CleanupPass, FoldBatchNormPass, FoldConstantsPass
from tests.helpers import model_from_text, rand, run_ort

# fp32 folding changes rounding only: outputs of order 1-10 agree to ~1e-5.
ATOL = 1e-4


def bn_params(c: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "gamma": rng.uniform(0.5, 2, c).astype(np.float32),
        "beta": rng.normal(0, 0.5, c).astype(np.float32),
        "mean": rng.normal(0, 0.5, c).astype(np.float32),
        "var": rng.uniform(0.2, 3, c).astype(np.float32),
    }


CONV_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4, 8, 8] x) => (float[1, 6, 8, 8] y) {
    c = Conv <pads = [1, 1, 1, 1], group = 2> (x, w, b)
    y = BatchNormalization <epsilon = 0.001> (c, gamma, beta, mean, var)
}
"""

CONVT_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4, 5, 5] x) => (float[1, 6, 10, 10] y) {
    c = ConvTranspose <strides = [2, 2], pads = [1, 1, 0, 0], group = 2> (x, w)
    y = BatchNormalization (c, gamma, beta, mean, var)
}
"""

GEMM_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[3, 5] x) => (float[3, 6] y) {
    c = Gemm <transB = 1, alpha = 0.5, beta = 2.0> (x, w, b)
    y = BatchNormalization (c, gamma, beta, mean, var)
}
"""


def cases() -> list[tuple[str, onnx.ModelProto, dict[str, np.ndarray]]]:
    return [
        (
            "conv",
            model_from_text(CONV_BN, {"w": rand((6, 2, 3, 3), 1), "b": rand((6,), 2)} | bn_params(6, 3)),
            {"x": rand((1, 4, 8, 8), 9)},
        ),
        (
            "convtranspose",
            model_from_text(CONVT_BN, {"w": rand((4, 3, 3, 3), 1)} | bn_params(6, 4)),
            {"x": rand((1, 4, 5, 5), 9)},
        ),
        (
            "gemm",
            model_from_text(GEMM_BN, {"w": rand((6, 5), 1), "b": rand((6,), 2)} | bn_params(6, 5)),
            {"x": rand((3, 5), 9)},
        ),
    ]


@pytest.mark.parametrize(("label", "model", "feeds"), cases(), ids=[c[0] for c in cases()])
def test_fold_batchnorm(label: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    expected = run_ort(model, feeds)[0]
    ir_model = ir.serde.deserialize_model(model)
    result = FoldBatchNormPass()(ir_model)
    assert result.modified
    out = ir.serde.serialize_model(result.model)
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node] == [model.graph.node[0].op_type]
    assert out.graph.output[0].name == "y"
    np.testing.assert_allclose(run_ort(out, feeds)[0], expected, atol=ATOL, rtol=1e-4)


def test_fold_batchnorm_leaves_shared_output_alone() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y, float[1, 2, 4, 4] c) {
        c = Conv (x, w)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }
    """
    model = model_from_text(text, {"w": rand((2, 2, 1, 1), 1)} | bn_params(2, 2))
    result = FoldBatchNormPass()(ir.serde.deserialize_model(model))
    assert result.modified is False


def test_fold_batchnorm_needs_constant_params() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, 4, 4] x, float[2] gamma) => (float[1, 2, 4, 4] y) {
        c = Conv (x, w)
        y = BatchNormalization (c, gamma, beta, mean, var)
    }
    """
    params = bn_params(2, 2)
    del params["gamma"]
    model = model_from_text(text, {"w": rand((2, 2, 1, 1), 1)} | params)
    assert FoldBatchNormPass()(ir.serde.deserialize_model(model)).modified is False


CONSTANTS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x) => (float[2, 3] y) {
    w = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
    two = Constant <value = float {2.0}> ()
    w2 = Mul (w, two)
    i = Identity (x)
    y = Add (i, w2)
}
"""


def test_fold_constants() -> None:
    model = model_from_text(CONSTANTS)
    feeds = {"x": rand((2, 3), 1)}
    expected = run_ort(model, feeds)[0]
    ir_model = ir.serde.deserialize_model(model)
    assert FoldConstantsPass()(ir_model).modified
    out = ir.serde.serialize_model(ir_model)
    assert "Mul" not in [n.op_type for n in out.graph.node]
    np.testing.assert_allclose(run_ort(out, feeds)[0], expected, atol=0)
    assert FoldConstantsPass()(ir.serde.deserialize_model(out)).modified is False


def test_cleanup_lifts_folds_and_removes_dead_code() -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3, 6, 6] x) => (float[1, 4, 6, 6] y) {
        w = Constant <value = float[4, 3, 1, 1] {1,2,3,4,5,6,7,8,9,10,11,12}> ()
        c = Conv (x, w)
        d = BatchNormalization (c, gamma, beta, mean, var)
        y = Identity (d)
        unused = Relu (x)
    }
    """
    model = model_from_text(text, bn_params(4, 7))
    feeds = {"x": rand((1, 3, 6, 6), 3)}
    expected = run_ort(model, feeds)[0]
    ir_model = ir.serde.deserialize_model(model)
    assert CleanupPass()(ir_model).modified
    out = ir.serde.serialize_model(ir_model)
    onnx.checker.check_model(out, full_check=True)
    assert [n.op_type for n in out.graph.node] == ["Conv"]
    assert {i.name for i in out.graph.initializer} >= {out.graph.node[0].input[1]}
    np.testing.assert_allclose(run_ort(out, feeds)[0], expected, atol=ATOL, rtol=1e-4)
    # Nothing left to do on a clean model.
    assert CleanupPass()(ir.serde.deserialize_model(out)).modified is False
