"""Data at the front door: every bad array is one InputError naming it, before anything runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from onnxsqueeze import data as D
from onnxsqueeze import shapes
from onnxsqueeze.errors import InputError, UnsupportedModelError
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 3] y) {
    y = Gemm <transB = 1> (x, w, b)
}
"""


def model() -> onnx.ModelProto:
    return model_from_text(TEXT, {"w": rand((3, 4), 1), "b": rand((3,), 2)})


def test_good_data_is_cast_and_extra_arrays_dropped() -> None:
    out = D.validate_inputs(model(), {"x": np.ones((5, 4), np.float64), "labels": np.arange(5)})
    assert list(out) == ["x"] and out["x"].dtype == np.float32 and out["x"].shape == (5, 4)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.ones((2, 4))}, r"no array for model input\(s\) \['x'\]"),
        ({"x": np.array([["a"] * 4])}, "dtype <U1; the model's input is float32"),
        ({"x": np.ones((2, 4), complex)}, "dtype complex128"),
        ({"x": np.ones((2, 4, 1))}, r"rank 3 \[2, 4, 1\]; the model's input has rank 2 \[\?,4\]"),
        ({"x": np.ones((2, 5))}, "dimension 1 differs"),
        ({"x": np.float32(1.0)}, "is a scalar; its first axis must index samples"),
        ({"x": np.ones((0, 4))}, "holds 0 samples"),
        ({"x": np.full((3, 4), np.nan)}, "holds 12 NaN/Inf value"),
        ({"x": np.array([[1, 2, np.inf, 4]])}, "holds 1 NaN/Inf value"),
        ({"x": np.ones((3, 4)), "labels": np.arange(4)}, "4 labels for 3 samples"),
        ({"x": np.ones((3, 4)), "labels": np.int64(1)}, "one class index per sample"),
    ],
)
def test_bad_data_refused(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        shapes.select_inputs(model(), arrays, label="d.npz")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("d.npz")


def test_integer_input_refuses_fractions_and_mismatched_counts() -> None:
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[N, 2] ids, float[N, 2] x) => (float[N, 2] y) {
            f = Cast <to = 1> (ids)
            y = Add (f, x)
        }
        """
    )
    with pytest.raises(InputError, match="fractional values; the model's input is int64"):
        D.validate_inputs(m, {"ids": np.full((2, 2), 0.5), "x": np.ones((2, 2))})
    with pytest.raises(InputError, match="different sample counts"):
        D.validate_inputs(m, {"ids": np.ones((2, 2)), "x": np.ones((3, 2))})
    ok = D.validate_inputs(m, {"ids": np.full((2, 2), 3.0), "x": np.ones((2, 2))})
    assert ok["ids"].dtype == np.int64 and int(ok["ids"][0, 0]) == 3


def test_scalar_input_is_fed_whole() -> None:
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 2] x, int64 sr) => (float[N, 2] y) {
            s = Cast <to = 1> (sr)
            y = Mul (x, s)
        }
        """
    )
    from onnxsqueeze.verify import verify

    feeds = D.validate_inputs(m, {"x": np.ones((3, 2)), "sr": np.array(16000)})
    assert feeds["sr"].shape == () and feeds["x"].shape == (3, 2)
    report = verify(m, m, data={"x": np.ones((3, 2)), "sr": np.array(16000)})
    assert report.samples == 3 and report.max_abs == 0.0
    random_report = verify(m, m)  # random inputs: the scalar is generated as a scalar
    assert random_report.inputs["sr"] == ()
    with pytest.raises(InputError, match="the model's input is a scalar"):
        D.validate_inputs(m, {"x": np.ones((3, 2)), "sr": np.array([16000])})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("g () => (float[2] y) { y = Constant <value = float[2] {1, 2}> () }", "has no inputs"),
        ("g (bfloat16[N, 2] x) => (float[N, 2] y) { y = Cast <to = 1> (x) }", "is bfloat16"),
        ("g (seq(float) s) => (int64 y) { y = SequenceLength (s) }", "is a sequence, not a tensor"),
    ],
)
def test_unfeedable_models_refused(text: str, message: str) -> None:
    m = model_from_text('<ir_version: 8, opset_import: ["" : 17]>\n' + text)
    with pytest.raises(UnsupportedModelError, match=message):
        shapes.make_inputs(m, {vi.name: (1, 2) for vi in shapes.graph_inputs(m)})


def test_allocation_guard_refuses_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    m = model()
    with pytest.raises(
        InputError,
        match=r"input 'x' of shape 100000000000x4 \(float32\) would take 1490.1 GiB, over the 8.0 GiB limit",
    ):
        shapes.make_inputs(m, {"x": (100_000_000_000, 4)})
    monkeypatch.setattr(D, "MAX_INPUT_BYTES", 64)
    with pytest.raises(InputError, match="would take 80 B, over the 64 B limit"):
        shapes.make_inputs(m, {"x": (5, 4)})
    assert shapes.make_inputs(m, {"x": (4, 4)})["x"].shape == (4, 4)  # 64 bytes: at the limit


def test_names_with_line_breaks_stay_on_one_line() -> None:
    m = model()
    m.graph.input[0].name = "x\nevil"
    m.graph.node[0].input[0] = "x\nevil"
    with pytest.raises(InputError) as info:
        D.validate_inputs(m, {"x\nevil": np.ones((2, 5))})
    assert "\n" not in str(info.value) and "'x\\nevil'" in str(info.value)


def test_fp16_refuses_a_conversion_that_converted_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float16 "result" that kept every node float32 is a failed check, not a success."""
    from onnxsqueeze import precision
    from onnxsqueeze.errors import VerificationError
    from onnxsqueeze.optimize.fp16 import fp16

    real = precision.convert_fp16

    def keep_everything(*args, **kwargs):  # type: ignore[no-untyped-def]
        return dataclasses.replace(real(*args, **kwargs), converted_nodes=0)

    monkeypatch.setattr(precision, "convert_fp16", keep_everything)
    with pytest.raises(VerificationError, match="nothing was converted"):
        fp16(model())
