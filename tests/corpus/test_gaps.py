"""Regression tests for the corpus gaps of issue 13 found after the first matrix (tiny graphs).

Each test reproduces the pattern of the corpus model that showed the gap; the corpus cells
themselves are in ``test_corpus.py`` (slow).
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest

from onnxsqueeze import prune as api
from onnxsqueeze import shapes
from onnxsqueeze.errors import VerificationError
from tests.helpers import model_from_text, rand

# all-MiniLM's pattern: an FFN (MatMul -> Relu -> MatMul) whose output dim is declared with a
# symbol the exporter made up ('Divembeddings_dim_1'); shape inference finds it is 8.
FFN = """
<ir_version: 8, opset_import: ["" : 17]>
ffn (float[batch, 8] x) => (float[batch, Divembeddings_dim_1] y) {
    h = MatMul (x, w1)
    r = Relu (h)
    y = MatMul (r, w2)
}
"""


def _ffn() -> onnx.ModelProto:
    return model_from_text(FFN, {"w1": rand((8, 16), 1, 0.5), "w2": rand((16, 8), 2, 0.5)})


def test_prune_channels_keeps_a_symbolic_output_dim():
    """MiniLM: 'pruning changed the model's inputs or outputs (a bug)' came from the output's
    symbolic dim turning into the inferred number, not from a changed interface."""
    model = _ffn()
    x = rand((6, 8), 3)
    pruned, report = api.prune_channels(model, ratio=0.25, reconstruction="none", input_shapes={"x": [1, 8]})
    assert [g["status"] for g in report["groups"]].count("pruned") == 1
    assert shapes.declared_shape(pruned.graph.output[0]) == ["batch", "Divembeddings_dim_1"]
    w1 = next(i for i in pruned.graph.initializer if i.name == "w1")
    assert list(w1.dims) == [8, 12]
    import onnxruntime as ort

    got = ort.InferenceSession(pruned.SerializeToString()).run(None, {"x": x})[0]
    assert got.shape == (6, 8)


def test_a_changed_concrete_output_dim_is_still_refused():
    model = _ffn()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 8  # declared concretely
    other = onnx.ModelProto()
    other.CopyFrom(model)
    other.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 6  # a real change of the interface
    api.keep_declared_outputs(model, other)
    assert shapes.declared_shape(other.graph.output[0]) == ["batch", 6]  # not papered over
    with pytest.raises(VerificationError):
        api.check_result(model, other)


def test_prune_sparsity_is_judged_by_the_task_metric_by_default(tmp_path):
    """Zero-weight pruning was written without a task-metric check (YOLOv8n at 50%: box agreement
    0, digits at 50%: 18.8% accuracy); now the default metric gates it like every other technique."""
    from onnxsqueeze import optimize
    from tests.graphs import cnn

    model = cnn()
    out = tmp_path / "sparse.onnx"
    with pytest.raises(VerificationError, match="beyond the budget.*--force"):
        optimize.prune(model, out, sparsity=0.95)
    assert not out.exists()
    _, forced = optimize.prune(model, out, sparsity=0.95, force=True)
    assert out.exists() and forced.passed is False
    assert forced.judgement is not None and forced.judgement.metric == "agreement"
    _, mild = optimize.prune(model, tmp_path / "mild.onnx", sparsity=0.05)
    assert mild.passed and mild.judgement is not None and "measured only" not in mild.judgement.budget


# ddddocr's OCR pattern: the classifier's input is reshaped to a shape computed from Shape ops
# (Gather, Mul, Unsqueeze, Concat) at opset 12, which onnx's data propagation does not follow; normalization
# folds it, so the pruned model's classifier was counted and the original's was not (1.14x MACs).
COMPUTED_RESHAPE = """
<ir_version: 6, opset_import: ["" : 12]>
ocr (float[N, 4, 3, W] x) => (float[T, 5] y) {
    s = Shape (x)
    one = Constant <value = int64 one {1}> ()
    c = Gather <axis = 0> (s, one)
    h = Gather <axis = 0> (s, two)
    w = Gather <axis = 0> (s, three)
    ch = Mul (c, h)
    a = Unsqueeze <axes = [0]> (w)
    b = Unsqueeze <axes = [0]> (ch)
    shape = Concat <axis = 0> (a, b)
    t = Transpose <perm = [0, 3, 1, 2]> (x)
    f = Reshape (t, shape)
    y = MatMul (f, wy)
}
"""


def test_macs_follow_a_reshape_computed_from_shape_ops():
    from onnxsqueeze.summary import count_macs

    init = {
        "two": np.array(2, np.int64),
        "three": np.array(3, np.int64),
        "wy": rand((12, 5), 1),
    }
    model = model_from_text(COMPUTED_RESHAPE, init)
    total, per_node = count_macs(model, {"x": [1, 4, 3, 10]})
    assert total == 10 * 5 * 12  # T=10 rows of 12 features into 5 outputs
    assert len(per_node) == 1


LSTM = """
<ir_version: 8, opset_import: ["" : 17]>
rnn (float[T, 1, 6] x) => (float[T, 2, 1, 4] y) {
    y, h, c = LSTM <hidden_size = 4, direction = "bidirectional"> (x, w, r)
}
"""


def test_macs_count_the_lstm():
    from onnxsqueeze.summary import count_macs

    model = model_from_text(LSTM, {"w": rand((2, 16, 6), 1), "r": rand((2, 16, 4), 2)})
    total, _ = count_macs(model, {"x": [7, 1, 6]})
    assert total == 2 * 7 * 1 * 16 * (6 + 4)


def test_fp16_judges_a_channels_last_probability_map_per_pixel():
    """MTCNN PNet (Keras, tf2onnx) returns [N, H, W, 2] softmax maps: the map IoU took axis 1 (H)
    as the class axis, so float16 noise between equal rows read as a changed mask (IoU 0.86 at a
    max abs error of 4e-4) and the guard kept the whole model float32."""
    from onnxsqueeze.precision import check_outputs

    rng = np.random.default_rng(0)
    face = np.where(rng.random((3, 1, 7, 1)) > 0.7, 0.9, 0.1)  # one class per pixel column...
    face = np.repeat(face, 9, axis=1).astype(np.float32)  # ...the same in every row (ties along H)
    ref = np.concatenate([1 - face, face], axis=-1)  # [N, H, W, 2], sums to one over the last axis
    cand = ref + rng.normal(0, 1e-4, ref.shape).astype(np.float32)
    (check,) = check_outputs({"prob": ref}, {"prob": cand})
    assert check.metric == "iou"
    assert check.value == pytest.approx(1.0)
    flipped = cand.copy()
    flipped[0, 0, 0] = flipped[0, 0, 0, ::-1]  # one pixel changes class: seen
    (check,) = check_outputs({"prob": ref}, {"prob": flipped})
    assert check.value < 1.0


def test_squeeze_time_budget_counts_from_the_start_and_bounds_the_plans():
    """YOLOv8n / ddddocr-det: `squeeze --time-budget 1` ran for 6+ minutes: the budget started
    after loading and the knobs' plans (channel analysis, int8 sensitivity), which it did not
    bound. Now a budget spent before the search measures the original only and plans nothing."""
    from tests.graphs import cnn
    from tests.helpers import rand, self_labelled_squeezer

    squeezer = self_labelled_squeezer(
        cnn(), rand((40, 3, 8, 8), 5), 8, techniques=("fp16", "channels", "int8"), time_budget_s=1.0
    )
    squeezer.started -= 2.0  # loading took longer than the whole budget
    result = squeezer.run()
    assert [p.settings for p in result.points] == [{}]  # the original, measured once
    assert result.baseline.metric is not None
    assert result.truncated == "time budget reached"
    assert any("not planned (time budget reached)" in n for n in squeezer.notes)
    assert {"channels", "int8"} <= set(squeezer.skipped)
    # ddddocr-det at load 20: the original's measurement spent the minute; said as such, not as
    # "no candidate fits ... closest: none evaluated".
    from onnxsqueeze.search.report import nothing_fits_message

    message = nothing_fits_message(squeezer, result)
    assert "time budget reached before any candidate was measured" in message
    assert "give a larger --time-budget" in message


def test_a_time_budget_is_spent_on_the_cheapest_knobs_first(monkeypatch):
    """orientation, ONet, MiniLM, mobilenet: `squeeze --time-budget 1` ended with "time budget
    reached before a cheaper candidate was found; closest: none evaluated": the plans (channel
    sensitivity, int8 layer ranking) ran first and took the whole budget. Now the cheapest knobs
    are measured first and a plan is made only when the search reaches its knob."""
    from tests.graphs import cnn
    from tests.helpers import rand, self_labelled_squeezer

    squeezer = self_labelled_squeezer(
        cnn(), rand((40, 3, 8, 8), 5), 8, techniques=("channels", "int8", "fp16"), time_budget_s=1e4
    )
    measure, clock, late = squeezer.evaluate, time.monotonic, [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock() + late[0])

    def budget_spent_by_the_first_candidate(settings):  # type: ignore[no-untyped-def]
        point = measure(settings)
        if settings:
            late[0] = 1e5
        return point

    squeezer.evaluate = budget_spent_by_the_first_candidate  # type: ignore[method-assign]
    result = squeezer.run()
    assert [p.settings for p in result.points] == [{}, {"fp16": True}]
    assert result.best is not None and result.best.settings == {"fp16": True}
    assert result.truncated == "time budget reached"
    assert squeezer.plans == {}  # neither plan was started
    assert result.skipped["channels"] == result.skipped["int8"] == "time budget reached before its plan"


# YOLOv8's decode after the keep-interface Resize: boxes (anchor +- distance) times a stride tensor
# built from scalar strides (ConstantOfShape + 8.0), concatenated with the class scores.
DECODE = """
<ir_version: 8, opset_import: ["" : 17]>
decode (float[1, 3, H, W] img) => (float[1, 5, A] out) {
    small = Resize <mode = "linear"> (img, roi, scales)
    pooled = MaxPool <kernel_shape = [8, 8], strides = [8, 8]> (small)
    flat = Reshape (pooled, flat_shape)
    boxes = Slice (flat, zero, four, one)
    zeros = ConstantOfShape (stride_shape)
    strides = Add (zeros, eight)
    scaled = Mul (boxes, strides)
    scores = Slice (flat, zero, one_end, one)
    out = Concat <axis = 1> (scaled, scores)
}
"""


def test_resized_detector_boxes_come_back_in_the_callers_coordinates():
    """YOLOv8n resized x0.5 with --keep-interface decoded its boxes in the internal (half-size)
    image's pixels; the stride tensor is now multiplied by caller width / internal width."""
    from onnxsqueeze.passes.resolution.rewrite import _rescale_box_strides, _stride_tensor
    from tests.helpers import run_ort

    # flat is [1, 3, A]: rows 0..2 of the pooled map; 'boxes' = rows [0, 3), scores = row [0, 1).
    init = {
        "roi": np.zeros(0, np.float32),
        "scales": np.array([1, 1, 0.5, 0.5], np.float32),
        "flat_shape": np.array([1, 3, -1], np.int64),
        "zero": np.array([0], np.int64),
        "four": np.array([3], np.int64),
        "one": np.array([1], np.int64),
        "one_end": np.array([1], np.int64),
        "stride_shape": np.array([1, 1, 1], np.int64),
        "eight": np.array(8.0, np.float32),
    }
    model = model_from_text(DECODE.replace("float[1, 5, A]", "float[1, 4, A]"), init)
    assert _stride_tensor(model, "strides") and not _stride_tensor(model, "boxes")
    img = rand((1, 3, 32, 32), 0)
    (before,) = run_ort(model, {"img": img})
    assert _rescale_box_strides(model, ["out"], "img", "small", 3) == ["out"]
    onnx.checker.check_model(model, full_check=True)
    (after,) = run_ort(model, {"img": img})
    np.testing.assert_allclose(after[:, :3], before[:, :3] * 2.0, rtol=1e-6)  # 32 / 16
    np.testing.assert_allclose(after[:, 3:], before[:, 3:])  # the scores are untouched


@pytest.mark.slow
def test_resized_yolov8n_boxes_agree_in_original_coordinates(tmp_path):
    """On nudenet's 320n: x0.5 inside, the interface kept, boxes in the 320x320 caller's pixels
    (matched against the original's at IoU >= 0.5; at the scaled coordinates none would match)."""
    import onnxruntime as ort

    from models import corpus
    from onnxsqueeze import optimize

    entry = {e.name: e for e in corpus.load()}.get("yolov8n-320n")
    if entry is None:
        pytest.skip("corpus not built (python -m models.corpus)")
    x = dict(np.load(entry.data))["images"]
    out = tmp_path / "r.onnx"
    optimize.resize(
        entry.path, out, scale=0.5, keep_interface=True, input_shapes={"images": [1, 3, 320, 320]}
    )
    a, b = ort.InferenceSession(entry.path), ort.InferenceSession(str(out))
    ref = [corpus.decode_yolov8(a.run(None, {"images": s[None]})[0]) for s in x]
    cand = [corpus.decode_yolov8(b.run(None, {"images": s[None]})[0]) for s in x]
    assert sum(len(r[0]) for r in ref) >= 5
    agreement = corpus.box_agreement(ref, cand)
    halved = [(c[0] / 2.0, c[1]) for c in cand]  # what the scaled coordinates would give
    assert agreement >= 0.4 > corpus.box_agreement(ref, halved)


@pytest.mark.slow
@pytest.mark.xdist_group("corpus")
@pytest.mark.parametrize("name", ["facenet-pnet", "facenet-rnet"])
def test_family_members_outside_the_corpus(matrix_module, tmp_path, name):
    """'The same must hold on models of the same families that are not in the corpus': the MTCNN
    PNet/RNet that facenet-pytorch ships (torch exports; the corpus has the Keras ones)."""
    from models import corpus

    try:
        entry = {e.name: e for e in corpus.family_members(tmp_path / "cache")}[name]
    except Exception as e:  # facenet-pytorch missing: nothing to export
        pytest.skip(f"family members not available: {type(e).__name__}: {e}")
    cells = {
        c.command: c
        for c in matrix_module.matrix_for(
            entry, ["fp16", "prune-channels"], tmp_path / "work", timeout=600, samples=12, latency=False
        )
    }
    fp16, channels = cells["fp16"], cells["prune-channels"]
    assert fp16.status == "ok", (fp16.message, fp16.argv)
    # PNet is 28 KB: the file ratio holds since the provenance moved to the sidecar (0.546x)
    assert fp16.ratios["size"] <= 0.6, fp16.ratios
    key = "agreement" if entry.decoder == "classes" else "cosine"
    assert fp16.metrics[key] >= (0.99 if key == "agreement" else 0.999), fp16.metrics
    assert channels.status == "ok", (channels.message, channels.argv)
    assert channels.ratios["size"] < 0.95, channels.ratios


# ddddocr common_old.onnx (torch + onnx.quantize): a contrib op with no ONNX schema
# (com.microsoft DynamicQuantizeLSTM) makes a float value whose type nothing declares, and a
# Transpose whose output is declared float reads it.
CONTRIB = """
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
contrib (float[2, 3, 4] x) => (float[3, 2, 4] y) {
    g = com.microsoft.Gelu (x)
    y = Transpose <perm = [1, 0, 2]> (g)
}
"""


def test_fp16_keeps_float32_what_reads_a_value_of_unknown_type():
    """fp16 on ddddocr common_old: 'onnxruntime cannot load it: Type (tensor(float16)) of output
    arg (364) ... does not match expected type (tensor(float))': the Transpose after the contrib
    LSTM was converted without a cast, its input's type being unknown."""
    import onnx_ir as ir

    from onnxsqueeze.passes.fp16 import ConvertToFloat16Pass
    from tests.helpers import run_ort

    model = model_from_text(CONTRIB)
    m = ir.serde.deserialize_model(model)
    result = ConvertToFloat16Pass()(m)
    converted = ir.serde.serialize_model(m)
    x = rand((2, 3, 4), 7)
    (want,) = run_ort(model, {"x": x})
    (got,) = run_ort(converted, {"x": x})  # loads: no float16 output on a float32 input
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert any("unknown" in why or "no known" in why for why in result.fp32_nodes.values())


QUANTIZED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 64] x) => (float[1, 32] y) {
  w = DequantizeLinear(wq, scale, zero)
  y = MatMul(x, w)
}
"""


def test_fp16_refuses_a_model_that_is_quantized_already(tmp_path):
    """ddddocr's onnx.quantize'd export: fp16 wrote a file of 1.00x its size (its weights are int8)."""
    from onnxsqueeze.errors import InputError
    from onnxsqueeze.optimize import fp16

    wq = np.random.default_rng(0).integers(-127, 127, (64, 32)).astype(np.int8)
    model = model_from_text(QUANTIZED, {"wq": wq, "scale": np.float32(0.01), "zero": np.int8(0)})
    src = tmp_path / "int8.onnx"
    onnx.save(model, src)
    out = tmp_path / "out.onnx"
    with pytest.raises(InputError, match=r"quantized already \(2,049 bytes of 8-bit"):
        fp16(src, output=out)
    assert not out.exists()
    _, report = fp16(src, output=out, force=True)  # converts the float part when asked
    assert report.written and out.exists()
