"""The front door (optimize/) on the exporters' patterns that broke the techniques (issue 13)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze import metrics, optimize, runtime
from onnxsqueeze.errors import InputError, VerificationError
from onnxsqueeze.optimize import base
from tests.graphs import constant_weights_model, ctc_model, near_zero_map_model
from tests.helpers import rand, run_ort


def test_normalize_lifts_constant_weights_folds_bn_and_is_verified() -> None:
    model = constant_weights_model("N", "8", "8")
    feeds = {"x": rand((2, 3, 8, 8), 1)}
    out, report = base.normalize(model, feeds=feeds)
    ops = [n.op_type for n in out.graph.node]
    assert "Constant" not in ops and "BatchNormalization" not in ops
    assert report.nodes_before == 8 and report.nodes_after == len(out.graph.node) < 8
    assert report.used in ("cleanup", "cleanup+onnxslim") and report.max_abs is not None
    assert report.max_abs <= 1e-4
    np.testing.assert_allclose(run_ort(out, feeds)[0], run_ort(model, feeds)[0], rtol=1e-4, atol=1e-5)
    onnx.checker.check_model(out, full_check=True)


def test_normalize_records_itself_and_prints_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        out, _ = base.normalize(constant_weights_model(), feeds=None)
    assert not [r for r in caplog.records if "is not known" in r.getMessage()]
    history = {p.key: p.value for p in out.metadata_props}["onnxsqueeze.passes"]
    assert '"normalize"' in history


def test_resolve_shapes_given_then_data_then_model_else_one_line() -> None:
    model = constant_weights_model()
    assert base.resolve_shapes(model, {"x": (1, 3, 16, 24)}) == {"x": (1, 3, 16, 24)}
    assert base.resolve_shapes(model, None, {"x": rand((5, 3, 8, 12), 0)}) == {"x": (1, 3, 8, 12)}
    static = constant_weights_model("N", "8", "8")
    assert base.resolve_shapes(static) == {"x": (1, 3, 8, 8)}
    with pytest.raises(InputError, match=r"input 'x' has a dynamic dimension 2 .*--input-shape x:"):
        base.resolve_shapes(model)


def test_prune_channels_on_constant_weights_with_dynamic_dims_and_input_shape(tmp_path) -> None:
    # paddle2onnx: Constant-node weights (no prunable group before normalization) and dynamic
    # H/W given with --input-shape, which the verification inside prune_channels used to drop
    src = sio.save(constant_weights_model(), tmp_path / "paddle.onnx")
    out = tmp_path / "pruned.onnx"
    model, report = optimize.prune(src, out, channels=0.5, input_shapes={"x": (1, 3, 8, 8)})
    assert report.written and out.exists()
    d = report.to_dict()
    assert any(g["status"] == "pruned" for g in d["groups"])
    assert d["after"]["macs"] < d["before"]["macs"]
    assert d["verify"]["inputs"] == {"x": [1, 3, 8, 8]}
    assert d["normalization"]["nodes_after"] < d["normalization"]["nodes_before"]
    onnx.checker.check_model(model, full_check=True)


def test_prune_weights_with_input_shape_and_reconstruction(tmp_path) -> None:
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    calib = {"x": rand((16, 3, 8, 8), 3)}
    _, plain = optimize.prune(
        src,
        sparsity=0.5,
        input_shapes={"x": (1, 3, 8, 8)},
        reconstruction="none",
        calibration=calib,
        force=True,  # without the re-fit the task metric refuses it (the default gate of --sparsity)
    )
    assert plain.details["reconstruction"] in ([], None) or all(
        "skipped" in r for r in plain.details["reconstruction"]
    )
    assert any("no re-fit" in n for n in plain.details["notes"])
    _, fitted = optimize.prune(
        src, sparsity=0.5, input_shapes={"x": (1, 3, 8, 8)}, calibration=calib, force=True
    )
    assert fitted.details["reconstruction"]


def test_prune_budget_by_metric_refuses_without_writing(tmp_path) -> None:
    src = sio.save(constant_weights_model("N", "8", "8"), tmp_path / "m.onnx")
    data = {"x": rand((32, 3, 8, 8), 4)}
    out = tmp_path / "o.onnx"
    with pytest.raises(VerificationError, match="agreement .* beyond the budget"):
        optimize.prune(src, out, channels=0.75, eval_data=data, acceptance=base.Acceptance("agreement", 0.0))
    assert not out.exists()
    _, report = optimize.prune(
        src, out, channels=0.75, eval_data=data, acceptance=base.Acceptance("cosine", 100.0)
    )
    assert report.written and report.judgement is not None and report.judgement.metric == "cosine"


def test_fp16_near_constant_output_on_random_inputs_warns_instead_of_refusing(tmp_path) -> None:
    src = sio.save(near_zero_map_model(), tmp_path / "det.onnx")
    ref = run_ort(near_zero_map_model(), {"x": rand((4, 3, 16, 16), 0)})[0]
    assert metrics.near_constant(ref)
    _, report = optimize.fp16(src, tmp_path / "o.onnx", measure=False)
    assert report.written and report.passed
    assert report.normalized_error > 0.01  # the normalized error alone would have refused it
    assert any("near-constant" in n and "--data" in n for n in report.notes)


def test_fp16_with_real_data_judged_by_metric(tmp_path) -> None:
    src = sio.save(near_zero_map_model(), tmp_path / "det.onnx")
    data = {"x": rand((8, 3, 16, 16), 5, 30.0)}  # large inputs: the map has text regions
    _, report = optimize.fp16(src, tmp_path / "o.onnx", data=data, acceptance=base.Acceptance("iou", 1.0))
    assert report.passed and report.judgement is not None
    assert report.judgement.metric == "iou" and report.judgement.value >= 99.0
    assert not any("near-constant" in n for n in report.notes)


def test_ctc_outputs_are_joined_on_their_sample_axis_and_scored_as_sequences() -> None:
    model = ctc_model()
    x = rand((5, 1, 8, 40), 9)
    out = runtime.run_batched(runtime.session(model), {"x": x})["y"]
    assert out.shape == (10, 5, 12)  # [T, N, C]: samples on axis 1, not 5 chunks stacked on T
    single = run_ort(model, {"x": x[3:4]})[0]
    np.testing.assert_allclose(out[:, 3:4], single, rtol=1e-6)
    assert metrics.default_metric(out, labels=False, samples=5) == "sequence"
    assert metrics.score("sequence", out, out, samples=5) == 100.0
    assert metrics.score("agreement", out, out, samples=5) == 100.0
    changed = out.copy()
    changed[:, 2, :] = 0.0
    changed[:, 2, 5] = 1.0  # sample 2 decodes to one label
    assert metrics.score("sequence", changed, out, samples=5) == pytest.approx(80.0)
    assert metrics.ctc_greedy(changed, samples=5)[2] == (5,)


def test_ctc_greedy_collapses_repeats_and_drops_blanks() -> None:
    steps = [0, 3, 3, 0, 3, 4, 4, 0]
    scores = np.zeros((len(steps), 1, 6), np.float32)
    scores[np.arange(len(steps)), 0, steps] = 1.0
    assert metrics.ctc_greedy(scores) == [(3, 3, 4)]


def test_class_axis_names_where_the_classes_are() -> None:
    ref = rand((4, 7, 3), 1)  # [N, T, C]: classes last
    cand = ref.copy()
    cand[0, 0] = -cand[0, 0]
    assert metrics.score("agreement", cand, ref, class_axis=-1) < 100.0
    with pytest.raises(InputError, match="--class-axis 5"):
        metrics.score("agreement", cand, ref, class_axis=5)


def test_judge_gates_only_when_asked_and_fails_on_nonfinite() -> None:
    ref = {"y": rand((8, 5), 1)}
    cand = {"y": ref["y"] + 0.001}
    j = base.judge(ref, cand, base.Acceptance())
    assert j.metric == "agreement" and j.passed and j.budget.startswith("measured only")
    bad = {"y": np.where(np.arange(40).reshape(8, 5) == 3, np.nan, ref["y"]).astype(np.float32)}
    assert not base.judge(ref, bad, base.Acceptance()).passed
    swapped = {"y": -ref["y"]}
    assert not base.judge(ref, swapped, base.Acceptance("agreement", 1.0)).passed
    assert base.judge(ref, swapped, base.Acceptance("mae")).passed  # mae has no default budget


def test_quantize_through_the_front_door(tmp_path) -> None:
    src = sio.save(constant_weights_model("N", "8", "8"), tmp_path / "m.onnx")
    model, report = optimize.quantize(src, tmp_path / "q.onnx", data={"x": rand((16, 3, 8, 8), 2)})
    assert report.written and report.judgement is not None
    assert report.judgement.metric == "agreement"
    ops = {n.op_type for n in model.graph.node}
    assert "ConvInteger" in ops and "Conv" not in ops  # the lifted Constant weights were quantized
    assert report.judgement.value >= 90.0
    onnx.checker.check_model(model)


def test_run_passes_types_every_shaped_value(caplog: pytest.LogCaptureFixture) -> None:
    import onnx_ir as ir

    from onnxsqueeze.pipeline import run_passes

    model = ir.serde.deserialize_model(constant_weights_model("N", "8", "8"))
    node = next(n for n in model.graph if n.op_type == "Relu")
    node.outputs[0].type = None  # what folding leaves behind: a shape without a type
    node.outputs[0].shape = ir.Shape([1, 8, 8, 8])
    with caplog.at_level(logging.WARNING):
        ir.serde.serialize_model(model)
    assert any("is not known" in r.getMessage() for r in caplog.records)
    caplog.clear()
    run_passes(model, [])
    with caplog.at_level(logging.WARNING):
        ir.serde.serialize_model(model)
    assert not any("is not known" in r.getMessage() for r in caplog.records)


def test_fp16_on_ctc_model_judged_per_sample_by_sequence(tmp_path) -> None:
    src = sio.save(ctc_model(), tmp_path / "ocr.onnx")
    data = {"x": rand((6, 1, 8, 40), 12)}
    _, report = optimize.fp16(src, tmp_path / "o.onnx", data=data, acceptance=base.Acceptance("sequence"))
    j = report.judgement
    assert j is not None and j.metric == "sequence" and j.samples == 6 and j.value == 100.0
    assert report.passed and report.written


def test_verify_reports_top1_per_step_on_a_batched_ctc_output() -> None:
    from onnxsqueeze.verify import verify

    model = ctc_model()
    report = verify(model, model, data={"x": rand((4, 1, 8, 40), 2)})
    (out,) = report.outputs
    assert out.shape == (10, 4, 12) and out.top1_agreement == 1.0


EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 32] x) => (float[N, 24] y) {
    h = MatMul (x, w)
    y = LpNormalization <axis = 1, p = 2> (h)
}
"""


def test_embeddings_are_judged_by_cosine_not_by_their_argmax(tmp_path) -> None:
    """L2-normalized [N, D] rows (sentence or face embeddings) are not class scores: the default
    metric of every command is the cosine (the argmax of MiniLM's embedding fell to 0 % agreement
    at 50 % sparsity and refused a model whose cosine is 0.9+)."""
    from tests.helpers import model_from_text

    model = model_from_text(EMBEDDING, {"w": rand((32, 24), 11)})
    x = rand((64, 32), 12)
    ref = run_ort(model, {"x": x})[0]
    assert metrics.unit_rows(ref) and not metrics.unit_rows(ref * 2.0)
    confident = np.array([[0.9999, 0.0001], [0.0002, 0.9998]])  # softmax rows: norm ~1, still scores
    assert not metrics.unit_rows(confident) and metrics.default_metric(confident, labels=False) == "agreement"
    assert metrics.default_metric(ref, labels=False) == "cosine"
    assert metrics.default_metric(ref * 2.0, labels=False) == "agreement"  # scores: argmax
    assert metrics.default_metric(ref, labels=True) == "accuracy"
    src = sio.save(model, tmp_path / "emb.onnx")
    with pytest.raises(VerificationError, match="^cosine .* beyond the budget"):
        optimize.prune(src, tmp_path / "o.onnx", sparsity=0.3, eval_data={"x": x})
    _, report = optimize.prune(
        src, tmp_path / "o.onnx", sparsity=0.3, eval_data={"x": x}, acceptance=base.Acceptance(max_drop=2.0)
    )
    assert report.written and report.judgement is not None and report.judgement.metric == "cosine"
