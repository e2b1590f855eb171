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


def test_sparse_initializers_load_and_match() -> None:
    pruned, _ = _run(PruneWeightsPass(sparsity=0.9), model())
    stored, converted = to_sparse_initializers(pruned, min_sparsity=0.5)
    assert converted == 4 and len(stored.graph.sparse_initializer) == 4
    onnx.checker.check_model(stored)  # full_check: onnx shape inference rejects sparse Conv inputs
    feeds = {"x": rand((2, 3, 6, 6), 12)}
    np.testing.assert_allclose(run_ort(stored, feeds)[0], run_ort(pruned, feeds)[0], rtol=1e-6, atol=1e-6)
    # dense tensors are left alone
    _, none = to_sparse_initializers(model())
    assert none == 0
