"""QuantizeInt8Pass: positive (structure), negative (nothing to do), numerical and determinism tests.

Tolerances: int8 with per-channel weights on these small, well-scaled graphs keeps every output
within 5 % of the output's own range of the float model (max abs error / max |ref|); dynamic and
static both meet it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.passes import CalibrationData, QuantizeInt8Pass
from onnxsqueeze.passes.quantize import sensitivity
from onnxsqueeze.pipeline import run_passes
from tests.graphs import cnn
from tests.helpers import model_from_text, rand, run_ort

NO_WEIGHTS = """
<ir_version: 8, opset_import: ["" : 17]>
elementwise (float[N, 4] x) => (float[N, 4] y) {
    r = Relu (x)
    y = Add (r, x)
}
"""


def inputs(n: int = 32, seed: int = 7) -> np.ndarray:
    return rand((n, 3, 8, 8), seed)


def quantize(model: onnx.ModelProto, **kw) -> tuple[onnx.ModelProto, bool]:
    m = ir.serde.deserialize_model(model)
    result = QuantizeInt8Pass(**kw)(m)
    assert result.model is m  # in place
    return ir.serde.serialize_model(m), result.modified


def static_kw(n: int = 32) -> dict:
    return {"mode": "static", "calibration": {"x": inputs(n, seed=11)}}


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def test_dynamic_rewrites_weights_to_int8():
    out, modified = quantize(cnn())
    assert modified
    onnx.checker.check_model(out, full_check=True)
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops(out)
    int8 = [t for t in out.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert {tuple(t.dims) for t in int8} >= {(8, 3, 3, 3), (16, 8, 3, 3)}
    assert not [
        t for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims == [16, 8, 3, 3]
    ]


def test_static_writes_qdq():
    out, modified = quantize(cnn(), **static_kw())
    assert modified
    onnx.checker.check_model(out, full_check=True)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops(out)
    assert sum(n.op_type == "QuantizeLinear" for n in out.graph.node) >= 3  # activations too


def test_nothing_to_quantize_is_not_modified():
    model = model_from_text(NO_WEIGHTS)
    out, modified = quantize(model)
    assert modified is False
    assert out.graph.node[0].op_type == "Relu" and len(out.graph.node) == 2


@pytest.mark.parametrize("kw", [{}, {"per_channel": False}, "static", "static-entropy"], ids=str)
def test_numerically_close_to_float(kw):
    if kw == "static":
        kw = static_kw()
    elif kw == "static-entropy":
        kw = static_kw() | {"calibrate_method": "entropy"}
    model = cnn()
    out, _ = quantize(model, **kw)
    x = inputs(16, seed=3)  # not the calibration samples
    (ref,) = run_ort(model, {"x": x})
    (got,) = run_ort(out, {"x": x})
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.max(np.abs(got - ref)) <= 0.05 * np.max(np.abs(ref))
    assert np.mean(np.argmax(got, 1) == np.argmax(ref, 1)) >= 0.85


@pytest.mark.parametrize("kw", [{}, "static"], ids=["dynamic", "static"])
def test_deterministic_bytes(kw):
    kw = static_kw() if kw == "static" else kw
    a, _ = quantize(cnn(), **kw)
    b, _ = quantize(cnn(), **kw)
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def test_static_without_calibration_is_refused():
    with pytest.raises(ir.passes.PreconditionError, match="calibration"):
        quantize(cnn(), mode="static")


def test_calibration_with_a_static_batch_model():
    model = cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # batch fixed at 4
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    out, modified = quantize(model, **static_kw(10))  # 10 samples: two full batches of 4 are used
    assert modified
    (got,) = run_ort(out, {"x": inputs(4, seed=3)})
    assert got.shape == (4, 4)


def test_provenance_records_the_calibration_hash_not_the_arrays():
    m = ir.serde.deserialize_model(cnn())
    p = QuantizeInt8Pass(**static_kw(8))
    run_passes(m, [p], source_sha256="abc")
    history = json.loads(m.metadata_props["onnxsqueeze.passes"])
    opts = history[-1]["options"]
    assert history[-1]["pass"] == "int8" and opts["mode"] == "static"
    assert (
        opts["calibration_samples"] == 8
        and opts["calibration_sha256"] == CalibrationData(p.calibration).sha256()
    )
    assert "calibration" not in opts
    assert not any(k.startswith("onnx.quant") for k in m.metadata_props)


def _named_cnn() -> onnx.ModelProto:
    model = cnn()
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}_{node.op_type}"
    return model


def test_sensitivity_ranks_the_layer_with_an_outlier_weight_first():
    model = _named_cnn()
    w2 = next(t for t in model.graph.initializer if t.name == "w2")
    array = onnx.numpy_helper.to_array(w2).copy()
    array[3, 0, 0, 0] = 50.0  # one huge weight: channel 3's step is huge for its other weights
    w2.CopyFrom(onnx.numpy_helper.from_array(array, "w2"))
    ranked = sensitivity(model, CalibrationData({"x": inputs(16)}))
    assert ranked[0][0] == "n2_Conv"
    assert {name for name, _ in ranked} == {"n0_Conv", "n2_Conv", "n6_Gemm"}
    assert all(v > 0 for _, v in ranked)


def test_fraction_keeps_the_most_sensitive_layers_float():
    model = _named_cnn()
    calibration = CalibrationData({"x": inputs(16)})
    ranked = sensitivity(model, calibration)
    out, modified = quantize(model, mode="static", fraction=0.34, calibration=calibration)  # 1 of 3
    assert modified
    float_weights = {
        t.name for t in out.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2
    }
    quantized = {
        n.name
        for n in out.graph.node
        if n.op_type in ("Conv", "Gemm") and any(i.endswith("DequantizeLinear_Output") for i in n.input[1:2])
    }
    assert quantized == {ranked[-1][0]}  # only the least sensitive layer
    assert len(float_weights) == 2
    (ref,) = run_ort(model, {"x": inputs(8, seed=3)})
    (got,) = run_ort(out, {"x": inputs(8, seed=3)})
    assert np.max(np.abs(got - ref)) <= 0.05 * np.max(np.abs(ref))


def test_bad_fraction_is_refused():
    with pytest.raises(ir.passes.PreconditionError, match="fraction"):
        quantize(cnn(), mode="static", fraction=0.0, calibration=CalibrationData({"x": inputs(4)}))
    with pytest.raises(ir.passes.PreconditionError, match="ranks layers"):
        quantize(cnn(), mode="dynamic", fraction=0.5)
