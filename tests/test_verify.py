from __future__ import annotations

import numpy as np
import pytest

from onnxsqueeze.errors import InputError, VerificationError
from onnxsqueeze.verify import output_metrics, verify
from tests.helpers import model_from_text, rand

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6] x) => (float[N, 4] y) {
    y = Gemm <transB = 1> (x, w, b)
}
"""


def gemm(w: np.ndarray):
    return model_from_text(TEXT, {"w": w, "b": rand((4,), 2)})


def test_identical_models_agree() -> None:
    m = gemm(rand((4, 6), 1))
    report = verify(m, m, input_shapes={"x": (5, 6)}, tolerance=0.0)
    assert report.max_abs == 0.0 and report.min_cosine == pytest.approx(1.0)
    assert report.outputs[0].top1_agreement == 1.0
    assert report.inputs == {"x": (5, 6)} and report.samples == 5


def test_perturbed_model_is_measured_and_rejected() -> None:
    w = rand((4, 6), 1)
    report = verify(gemm(w), gemm(w + 0.01), input_shapes={"x": (64, 6)})
    # |dy| <= 0.01 * sum|x|: positive, bounded, and cosine stays near 1
    assert 1e-4 < report.max_abs < 0.01 * 6 * 4
    assert report.min_cosine > 0.99
    with pytest.raises(VerificationError, match="exceeds tolerance"):
        verify(gemm(w), gemm(w + 0.01), input_shapes={"x": (64, 6)}, tolerance=1e-6)


def test_real_data_and_missing_inputs() -> None:
    m = gemm(rand((4, 6), 1))
    data = {"x": rand((10, 6), 5), "labels": np.arange(10)}
    report = verify(m, m, data=data, data_label="val.npz")
    assert report.samples == 10 and report.source == "val.npz"
    with pytest.raises(InputError, match="no array for model input"):
        verify(m, m, data={"other": data["x"]})


def test_metrics_by_hand() -> None:
    ref = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    cand = np.array([[1.0, 2.5, 0.0], [0.0, 4.0, 1.0]])
    m = output_metrics("y", ref, cand)
    assert m.max_abs == 4.0
    assert m.top1_agreement == 0.5
    cos = np.dot(ref.ravel(), cand.ravel()) / np.linalg.norm(ref) / np.linalg.norm(cand)
    assert m.cosine == pytest.approx(cos)
    nan = output_metrics("y", ref, np.where(ref > 2, np.nan, ref))
    assert nan.nonfinite == 1
