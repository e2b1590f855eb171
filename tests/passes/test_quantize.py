"""QuantizeInt8Pass: structure, nothing to do, numerics, determinism, validation and purity.

Tolerances: int8 with per-channel weights on these small, well-scaled graphs keeps every output
within 5 % of the output's own range of the float model (max abs error / max |ref|); dynamic and
static (QDQ and QOperator, uint8 or int8 activations) all meet it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.optimize.quantize import calibrate
from onnxsqueeze.passes import CalibrationData, QuantizeInt8Pass
from onnxsqueeze.pipeline import run_passes
from tests.graphs import NO_WEIGHTS, cnn
from tests.graphs import cnn_inputs as inputs
from tests.helpers import model_from_text, run_ort


def quantize(model: onnx.ModelProto, **kw) -> tuple[onnx.ModelProto, bool]:
    m = ir.serde.deserialize_model(model)
    result = QuantizeInt8Pass(**kw)(m)
    assert result.model is m  # in place
    return ir.serde.serialize_model(m), result.modified


def static_kw(n: int = 32, method: str = "minmax") -> dict:
    ranges = calibrate(cnn(), {"x": inputs(n, seed=11)}, method=method)
    return {"mode": "static", "ranges": ranges, "calibrate_method": method}


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


def test_dynamic_matches_onnxruntime_quantize_dynamic(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    out, _ = quantize(cnn())
    ops_ = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
    quantize_dynamic(cnn(), tmp_path / "ref.onnx", op_types_to_quantize=ops_, per_channel=True)
    ref = onnx.load(str(tmp_path / "ref.onnx"))
    x = inputs(8, seed=3)
    np.testing.assert_array_equal(run_ort(out, {"x": x})[0], run_ort(ref, {"x": x})[0])


def test_static_writes_qdq():
    out, modified = quantize(cnn(), **static_kw())
    assert modified
    onnx.checker.check_model(out, full_check=True)
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops(out)
    assert sum(n.op_type == "QuantizeLinear" for n in out.graph.node) >= 3  # activations too


def test_static_qdq_keeps_biases_float_and_onnxruntime_still_fuses_integer_convs(tmp_path):
    """A float bias is half the bytes of an int32 bias with its scale and zero point; onnxruntime
    quantizes it itself when it fuses the group (QLinearConv/QGemm), so the fused graph is alike."""
    import onnxruntime as ort

    out, _ = quantize(cnn(), **static_kw())
    assert not [t.name for t in out.graph.initializer if t.data_type == onnx.TensorProto.INT32]
    convs = sum(n.op_type == "Conv" for n in cnn().graph.node)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "fused.onnx")
    ort.InferenceSession(out.SerializeToString(), so, providers=["CPUExecutionProvider"])
    fused = onnx.load(str(tmp_path / "fused.onnx"))
    assert sum(n.op_type == "QLinearConv" for n in fused.graph.node) == convs > 0


def test_static_qoperator_writes_integer_ops():
    out, modified = quantize(cnn(), **static_kw(), quant_format="qoperator")
    assert modified
    onnx.checker.check_model(out, full_check=True)
    assert "QLinearConv" in ops(out) and "Conv" not in ops(out)


def test_nothing_to_quantize_is_not_modified():
    model = model_from_text(NO_WEIGHTS)
    out, modified = quantize(model)
    assert modified is False
    assert out.graph.node[0].op_type == "Relu" and len(out.graph.node) == 2


@pytest.mark.parametrize(
    "kw",
    [{}, {"per_channel": False}, "static", "static-entropy", "static-percentile", "qoperator", "s8s8"],
    ids=str,
)
def test_numerically_close_to_float(kw):
    if kw == "static":
        kw = static_kw()
    elif kw in ("static-entropy", "static-percentile"):
        kw = static_kw(method=kw.split("-")[1])
    elif kw == "qoperator":
        kw = static_kw() | {"quant_format": "qoperator"}
    elif kw == "s8s8":
        kw = static_kw() | {"activation_type": "int8"}
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


def test_static_without_ranges_is_refused():
    with pytest.raises(ir.passes.PreconditionError, match="calibrated activation ranges"):
        quantize(cnn(), mode="static")


def test_per_channel_qdq_below_opset_13_is_refused_not_written():
    model = cnn()
    model.opset_import[0].version = 11
    with pytest.raises(ir.passes.PreconditionError, match="opset >= 13"):
        quantize(model, **static_kw())
    out, modified = quantize(model, **static_kw(), per_channel=False)
    assert modified
    onnx.checker.check_model(out, full_check=True)
    run_ort(out, {"x": inputs(2)})


def test_the_pass_touches_no_file_no_logging_no_stdout(monkeypatch, capsys):
    import logging
    import tempfile

    def no_disk(*args, **kwargs):
        raise AssertionError("the pass touched the disk")

    kw = static_kw()
    for name in ("TemporaryDirectory", "mkdtemp", "mkstemp", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, no_disk)
    monkeypatch.setattr(onnx, "save_model", no_disk)
    disabled, level = logging.root.manager.disable, logging.root.level
    for mode_kw in ({}, kw, kw | {"quant_format": "qoperator"}):
        _, modified = quantize(cnn(), **mode_kw)
        assert modified
    assert (logging.root.manager.disable, logging.root.level) == (disabled, level)
    assert capsys.readouterr().out == ""


def test_provenance_records_the_calibration_hash_not_the_ranges():
    m = ir.serde.deserialize_model(cnn())
    data = CalibrationData({"x": inputs(8, seed=11)})
    p = QuantizeInt8Pass(mode="static", ranges=calibrate(cnn(), data))
    run_passes(m, [p], source_sha256="abc")
    history = json.loads(m.metadata_props["onnxsqueeze.passes"])
    opts = history[-1]["options"]
    assert history[-1]["pass"] == "int8" and opts["mode"] == "static"
    assert opts["calibration_samples"] == 8 and opts["calibration_sha256"] == data.sha256()
    assert opts["calibrate_method"] == "minmax" and "ranges" not in opts
    assert not any(k.startswith("onnx.") for k in m.metadata_props)
