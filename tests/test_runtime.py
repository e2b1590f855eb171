"""runtime helpers: intermediate outputs exposed on a copy, interleaved timing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxsqueeze import runtime
from onnxsqueeze.verify import compare
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 3] y) {
    h = Gemm <transB = 1> (x, w, b)
    r = Relu (h)
    y = Neg (r)
}
"""


def model() -> onnx.ModelProto:
    return model_from_text(TEXT, {"w": rand((3, 4), 1), "b": rand((3,), 2)})


def test_with_outputs_exposes_intermediates_on_a_copy() -> None:
    m = model()
    exposed = runtime.with_outputs(m, ["h", "y", "h"])  # y is an output already; h asked twice
    assert [o.name for o in exposed.graph.output] == ["y", "h"]
    assert [o.name for o in m.graph.output] == ["y"]  # the model itself is not modified
    x = rand((5, 4), 3)
    out = runtime.run_batched(runtime.session(exposed), {"x": x})
    np.testing.assert_allclose(out["y"], -np.maximum(out["h"], 0), rtol=0, atol=0)
    assert not exposed.graph.output[1].type.HasField("tensor_type")  # untyped by default


def test_with_outputs_infers_types_when_asked() -> None:
    exposed = runtime.with_outputs(model(), ["r"], infer_types=True)
    vi = exposed.graph.output[1]
    assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim] == ["N", 3]
    onnx.checker.check_model(exposed, full_check=True)


def test_time_sessions_gives_one_positive_median_per_session() -> None:
    sess = runtime.session(model())
    feeds = {"x": rand((2, 4), 4)}
    ms = runtime.time_sessions([sess, sess], [feeds, feeds], rounds=2, runs=3)
    assert len(ms) == 2 and all(t > 0 for t in ms)


def test_compare_takes_samples_and_shapes_from_the_feeds() -> None:
    y = {"y": rand((6, 3), 5)}
    report = compare(y, y, feeds={"x": rand((6, 4), 6)}, source="s")
    assert report.samples == 6 and report.inputs == {"x": (6, 4)} and report.max_abs == 0.0


def test_outputs_kept_over_many_samples_are_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The outputs of every sample are kept to compare: refused after the first batch when they
    would pass the allocation limit, naming the output, before the memory is spent."""
    from onnxsqueeze import data as sdata
    from onnxsqueeze.errors import InputError

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4, 256] y) {
        u = Unsqueeze (x, a)
        y = Expand (u, e)
    }
    """
    model = model_from_text(
        text,
        {"a": np.array([2], np.int64), "e": np.array([1, 4, 256], np.int64)},
    )
    sess = runtime.session(model)
    x = np.ones((64, 4), np.float32)
    assert runtime.run_batched(sess, {"x": x}, batch_size=8)["y"].shape == (64, 4, 256)
    monkeypatch.setattr(sdata, "MAX_INPUT_BYTES", 64 * 4 * 256 * 4)  # one copy fits, two do not
    with pytest.raises(InputError, match=r"output 'y' over 64 samples would take about 512\.0 KiB"):
        runtime.run_batched(sess, {"x": x}, batch_size=8)
