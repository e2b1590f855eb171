"""Zero-weight (magnitude) pruning: exact sparsity, scopes, skipped layers, re-fit, sparse storage."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxsqueeze.errors import InputError
from onnxsqueeze.passes.sparsity import PruneWeightsPass, to_sparse_initializers
from tests.graphs import conv_matmul as model
from tests.helpers import model_from_text, rand, run_ort


def _arrays(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}


def _run(p: PruneWeightsPass, proto: onnx.ModelProto) -> tuple[onnx.ModelProto, object]:
    m = ir.serde.deserialize_model(proto)
    result = p(m)
    out = ir.serde.serialize_model(m)
    onnx.checker.check_model(out, full_check=True)
    return out, result


def test_layer_scope_exact_sparsity_biases_untouched() -> None:
    base = model()
    pruned, result = _run(PruneWeightsPass(sparsity=0.5), base)
    assert result.modified
    before, after = _arrays(base), _arrays(pruned)
    for name in ("w0", "w1", "w2", "w3"):
        zeros = int((after[name] == 0).sum())
        assert zeros == round(0.5 * after[name].size), name
        # the smallest magnitudes went: every kept weight is at least as large as every pruned one
        kept = np.abs(before[name][after[name] != 0])
        gone = np.abs(before[name][after[name] == 0])
        assert kept.min() >= gone.max()
        np.testing.assert_array_equal(after[name][after[name] != 0], before[name][after[name] != 0])
    for name in ("b0", "b1", "b3"):
        np.testing.assert_array_equal(after[name], before[name])
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert [layer["op"] for layer in result.layers] == ["Conv", "Conv", "MatMul", "Gemm"]


def test_global_scope_uses_one_threshold() -> None:
    base = model()
    pruned, result = _run(PruneWeightsPass(sparsity=0.5, scope="global"), base)
    per = {layer["weight"]: layer["sparsity"] for layer in result.layers}
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert per["w1"] > 0.6 and per["w0"] < 0.2  # the small-scale layer takes most of the zeros
    before, after = _arrays(base), _arrays(pruned)
    names = ("w0", "w1", "w2", "w3")
    kept = min(np.abs(before[n][after[n] != 0]).min() for n in names)
    gone = max(np.abs(before[n][after[n] == 0]).max() for n in names)
    assert gone <= kept


def test_skip_first_last() -> None:
    base = model()
    pruned, result = _run(PruneWeightsPass(sparsity=0.6, skip_first_last=True), base)
    before, after = _arrays(base), _arrays(pruned)
    np.testing.assert_array_equal(after["w0"], before["w0"])
    np.testing.assert_array_equal(after["w3"], before["w3"])
    assert (after["w1"] == 0).mean() == pytest.approx(0.6, abs=0.01)
    assert [layer["skipped"] for layer in result.layers] == [True, False, False, True]


def test_nothing_to_do_is_not_modified() -> None:
    _, result = _run(PruneWeightsPass(sparsity=0.0), model())
    assert result.modified is False
    relu = model_from_text(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[2] x) => (float[2] y) { y = Relu (x) }'
    )
    _, result = _run(PruneWeightsPass(sparsity=0.5), relu)
    assert result.modified is False and result.layers == []
    # pruning an already pruned model to the same sparsity changes nothing
    once, _ = _run(PruneWeightsPass(sparsity=0.5), model())
    _, again = _run(PruneWeightsPass(sparsity=0.5), once)
    assert again.modified is False


def test_bad_options() -> None:
    with pytest.raises(InputError, match="out of range"):
        PruneWeightsPass(sparsity=1.0)
    with pytest.raises(InputError, match="scope"):
        PruneWeightsPass(scope="model")  # type: ignore[arg-type]


def test_refit_keeps_the_mask_and_reduces_the_error() -> None:
    base = model()
    calib = {"x": rand((128, 3, 6, 6), 10)}
    test = {"x": rand((64, 3, 6, 6), 11)}
    ref = run_ort(base, test)[0]
    plain, _ = _run(PruneWeightsPass(sparsity=0.7), base)
    fitted, result = _run(PruneWeightsPass(sparsity=0.7, calibration=calib), base)
    a, b = _arrays(plain), _arrays(fitted)
    for name in ("w0", "w1", "w2", "w3"):
        np.testing.assert_array_equal(a[name] == 0, b[name] == 0)  # same pattern, new values
    err_plain = np.linalg.norm(run_ort(plain, test)[0] - ref) / np.linalg.norm(ref)
    err_fit = np.linalg.norm(run_ort(fitted, test)[0] - ref) / np.linalg.norm(ref)
    assert err_fit < 0.7 * err_plain
    assert [r["layer"] for r in result.reconstruction] == [
        n.name for n in base.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
    ]
    assert all(r["error_after"] <= r["error_before"] for r in result.reconstruction)


def test_sparse_storage_round_trip_is_smaller_with_varint_indices_and_identical_outputs() -> None:
    from onnxsqueeze import io as sio

    pruned, _ = _run(PruneWeightsPass(sparsity=0.9), model())
    stored, converted = to_sparse_initializers(pruned)
    assert converted == 4 and len(stored.graph.sparse_initializer) == 4
    assert stored.ByteSize() < pruned.ByteSize()
    for sparse in stored.graph.sparse_initializer:
        # linear indices as packed varints (int64_data), not 8-byte raw int64; values in their type
        assert sparse.indices.int64_data and not sparse.indices.raw_data
        assert sparse.values.data_type == onnx.TensorProto.FLOAT
        idx = np.asarray(sparse.indices.int64_data)
        assert np.all(np.diff(idx) > 0) and idx.max() < np.prod(sparse.dims)
    onnx.checker.check_model(stored)
    sio.check_model(stored)  # the full check runs on the densified form
    dense = _arrays(sio.densified(stored))
    for name, array in _arrays(pruned).items():
        np.testing.assert_array_equal(dense[name], array)
    feeds = {"x": rand((2, 3, 6, 6), 12)}
    for a, b in zip(run_ort(stored, feeds), run_ort(pruned, feeds), strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical: onnxruntime densifies at load


def test_a_tensor_stays_dense_when_its_sparse_form_is_larger() -> None:
    base = model()
    _, none = to_sparse_initializers(base)  # no zeros at all
    assert none == 0
    # 15% zeros in float32: 85% of the values (4 bytes) plus a 1-byte index each outweigh the zeros
    pruned, _ = _run(PruneWeightsPass(sparsity=0.15), base)
    stored, converted = to_sparse_initializers(pruned)
    assert converted == 0 and not stored.graph.sparse_initializer
    # per tensor: only w1 (16x8x3x3) is made 90% sparse; the others stay dense initializers
    arrays = _arrays(base)
    w1 = arrays["w1"].copy()
    w1[np.abs(w1) < np.quantile(np.abs(w1), 0.9)] = 0
    one = onnx.ModelProto()
    one.CopyFrom(base)
    for t in one.graph.initializer:
        if t.name == "w1":
            t.CopyFrom(onnx.numpy_helper.from_array(w1, "w1"))
    stored, converted = to_sparse_initializers(one)
    assert converted == 1 and [s.values.name for s in stored.graph.sparse_initializer] == ["w1"]
    assert {t.name for t in stored.graph.initializer} == set(arrays) - {"w1"}


INT8_CAST = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,8,6,6] y) {
  [cast] c = Cast <to=1> (q)
  [scale] w = Mul(c, s)
  [conv] y = Conv(x, w)
}
"""


def _int8_cast(zeros: float) -> onnx.ModelProto:
    w = rand((8, 4, 3, 3), 3)
    w[np.abs(w) < np.quantile(np.abs(w), zeros)] = 0
    s = (np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127).astype(np.float32)
    return model_from_text(INT8_CAST, {"q": np.round(w / s).astype(np.int8), "s": s})


def test_int8_weights_in_the_cast_form_are_stored_sparse_and_folded_by_onnxruntime(tmp_path) -> None:
    import onnxruntime as ort

    from onnxsqueeze import io as sio
    from onnxsqueeze.prune import store_sparse

    dense = _int8_cast(0.85)
    q = _arrays(dense)["q"]
    stored, why = store_sparse(dense)
    assert why == "" and [t.values.name for t in stored.graph.sparse_initializer] == ["q"]
    values = stored.graph.sparse_initializer[0].values
    assert values.data_type == onnx.TensorProto.INT8 and len(values.raw_data) == np.count_nonzero(q)
    assert stored.ByteSize() < dense.ByteSize()
    feeds = {"x": rand((1, 4, 8, 8), 4)}
    np.testing.assert_array_equal(run_ort(stored, feeds)[0], run_ort(dense, feeds)[0])
    # the optimized session folds Mul(Cast(q), s) into a float weight, as for the dense form
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(stored.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node] == ["Conv"]
    # written and loaded back: the loader's full check runs on the densified model
    path = tmp_path / "m.onnx"
    path.write_bytes(stored.SerializeToString())
    with pytest.raises(onnx.shape_inference.InferenceError):
        onnx.checker.check_model(str(path), full_check=True)  # why io checks the densified form
    loaded = sio.load(path)  # dense again, as onnxruntime (and onnx_ir, which would drop it) reads it
    assert not loaded.graph.sparse_initializer
    np.testing.assert_array_equal(_arrays(loaded)["q"], q)
    assert len(sio.load_ir(path).graph.initializers) == 2
    # 40% zeros in int8: a value byte plus an index byte each is more: the dense model, and why
    same, why = store_sparse(_int8_cast(0.4))
    assert same.graph.sparse_initializer == [] and "sparse enough" in why


DYNAMIC_HW = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,H,W] x) => (float[1,8,H2,W2] y) {
  [conv] y = Conv(x, w)
}
"""


def test_a_model_with_dynamic_spatial_inputs_is_stored_sparse_too() -> None:
    """No random inputs without shapes (YOLOv8's dynamic H and W): the tensors must come back
    from their sparse form bit for bit and onnxruntime must load it; then it runs the same."""
    from onnxsqueeze.prune import store_sparse

    w = rand((8, 4, 3, 3), 3)
    w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0
    dense = model_from_text(DYNAMIC_HW, {"w": w})
    stored, why = store_sparse(dense)
    assert why == "" and len(stored.graph.sparse_initializer) == 1
    feeds = {"x": rand((1, 4, 9, 7), 4)}
    np.testing.assert_array_equal(run_ort(stored, feeds)[0], run_ort(dense, feeds)[0])
