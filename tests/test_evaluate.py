"""Datasets (npz, image folders with preprocessing), metrics with hand-computed values, evaluator."""

from __future__ import annotations

import numpy as np
import pytest

from onnxsqueeze import evaluate as E
from onnxsqueeze.errors import InputError
from onnxsqueeze.io import save_npz
from tests.helpers import model_from_text, rand

CLASSIFIER = """
<ir_version: 8, opset_import: ["" : 17]>
clf (float[N, 3, 8, 8] x) => (float[N, 5] y) {
    g = GlobalAveragePool (x)
    f = Flatten (g)
    y = Gemm <transB = 1> (f, w, b)
}
"""


def classifier():
    return model_from_text(CLASSIFIER, {"w": rand((5, 3), 1), "b": rand((5,), 2, 0.1)})


# ------------------------------------------------------------------------------------- metrics


def test_accuracy_and_agreement():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert E.accuracy(scores, np.array([1, 0, 0, 0])) == pytest.approx(75.0)
    ref = np.array([[0, 1], [1, 0], [1, 0], [1, 0]], dtype=float)
    assert E.agreement(scores, ref) == pytest.approx(75.0)
    with pytest.raises(InputError, match="class scores"):
        E.accuracy(np.zeros(4), np.zeros(4, int))


def test_iou_thresholded_and_class_maps():
    a = np.zeros((2, 1, 2, 2))
    b = np.zeros((2, 1, 2, 2))
    a[0, 0, 0, :] = 1  # 2 pixels
    b[0, 0, :, 0] = 1  # 2 pixels, 1 shared: IoU 1/3; sample 1 both empty: 1
    assert E.iou(a, b) == pytest.approx((1 / 3 + 1) / 2 * 100)
    logits = np.zeros((1, 3, 2, 2))
    logits[0, 1] = 1  # every pixel class 1
    ref = logits.copy()
    ref[0, 2, 0, 0] = 5  # one pixel class 2: class 1 IoU 3/4, class 2 IoU 0
    assert E.iou(logits, ref) == pytest.approx((0.75 + 0.0) / 2 * 100)


def test_cosine_and_mae():
    x = np.array([[1.0, 0.0], [0.0, 0.0]])
    r = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert E.cosine(x, r) == pytest.approx((np.sqrt(0.5) + 1.0) / 2 * 100)
    assert E.mae(x, r) == pytest.approx(0.25)


# ------------------------------------------------------------------------------------ datasets


def test_npz_dataset(tmp_path):
    path = tmp_path / "d.npz"
    save_npz(path, {"x": rand((6, 3, 8, 8)), "labels": np.arange(6)})
    ds = E.load_npz_dataset(path)
    assert len(ds) == 6 and list(ds.inputs) == ["x"] and ds.labels.tolist() == list(range(6))
    part = ds.take(2, 5)
    assert len(part) == 3 and part.labels.tolist() == [2, 3, 4]
    assert ds.sha256() == E.load_npz_dataset(path).sha256() != part.sha256()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"labels": np.arange(3)}, "no input arrays"),
        ({"x": np.zeros((3, 2)), "labels": np.arange(4)}, "4 labels for 3 samples"),
        ({"x": np.zeros((3, 2)), "labels": np.zeros(3)}, "integer class indices"),
        ({"x": np.zeros((3, 2)), "z": np.zeros((2, 2))}, "differ in sample count"),
    ],
)
def test_npz_dataset_bad_input(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    save_npz(path, arrays)
    with pytest.raises(InputError, match=message):
        E.load_npz_dataset(path)


def test_missing_data_file(tmp_path):
    with pytest.raises(InputError, match="no such data file"):
        E.load_npz_dataset(tmp_path / "nope.npz")


def _write_images(root, layout):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, n in layout.items():
        folder = root / cls if cls else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(20 + i, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_with_classes(tmp_path):
    _write_images(tmp_path, {"cat": 2, "dog": 3})
    spec = E.Preprocess(size=(16, 16), resize="crop")
    ds = E.load_image_folder(tmp_path, spec, input_name="x")
    assert ds.inputs["x"].shape == (5, 3, 16, 16) and ds.inputs["x"].dtype == np.float32
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]


def test_image_folder_flat_nhwc_bgr_and_normalization(tmp_path):
    from PIL import Image

    tmp_path.mkdir(exist_ok=True)
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # pure red
    Image.fromarray(pixels).save(tmp_path / "red.png")
    spec = E.Preprocess(size=(4, 4), resize="stretch", mean=(0.5,), std=(0.5,), layout="NHWC", channels="BGR")
    ds = E.load_image_folder(tmp_path, spec)
    x = ds.inputs["input"]
    assert ds.labels is None and x.shape == (1, 4, 4, 3)
    # red in RGB is the last channel in BGR; (1 - 0.5) / 0.5 = 1 and (0 - 0.5) / 0.5 = -1
    assert np.allclose(x[0, :, :, 2], 1.0) and np.allclose(x[0, :, :, :2], -1.0)


def test_image_folder_pad_keeps_aspect(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((10, 20, 3), 255, np.uint8)).save(tmp_path / "wide.png")
    spec = E.Preprocess(size=(8, 8), resize="pad", mean=(0.0,), std=(1.0,))
    x = E.load_image_folder(tmp_path, spec).inputs["input"][0]
    assert np.allclose(x[:, 2:6, :], 1.0) and np.allclose(x[:, 0, :], 0.0)  # letterboxed rows


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(InputError, match="not a folder"):
        E.load_image_folder(tmp_path / "missing", E.Preprocess())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        E.load_image_folder(tmp_path / "empty", E.Preprocess())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read the image"):
        E.load_image_folder(tmp_path / "broken", E.Preprocess())
    with pytest.raises(InputError, match="layout"):
        E.Preprocess(layout="CHW")  # type: ignore[arg-type]


def test_resize_inputs_to_a_smaller_model_resolution():
    model = classifier()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 4, 4
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    out = E.resize_inputs(model, {"x": x})["x"]
    assert out.shape == (2, 3, 4, 4)
    # half-pixel bilinear 8 -> 4 averages 2x2 blocks of a linear ramp exactly
    assert out[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].mean())


# ----------------------------------------------------------------------------------- evaluator


def test_evaluator_scores_and_agrees_with_itself():
    model = classifier()
    x = rand((20, 3, 8, 8), 4)
    from tests.helpers import run_ort

    (y,) = run_ort(model, {"x": x})
    labels = np.argmax(y, 1)
    labels[:5] = (labels[:5] + 1) % 5  # 5 of 20 wrong: 75 %
    ds = E.Dataset({"x": x}, labels)
    assert E.Evaluator(model, ds, "accuracy", batch_size=6).score(model) == pytest.approx(75.0)
    for metric, expected in (("agreement", 100.0), ("cosine", 100.0), ("mae", 0.0), ("iou", 100.0)):
        ev = E.Evaluator(model, ds, metric)
        assert ev.score(model) == pytest.approx(expected, abs=1e-4)
    calls = []
    E.Evaluator(model, ds, "accuracy", batch_size=8, on_batch=lambda d, t: calls.append((d, t))).score(model)
    assert calls == [(8, 20), (16, 20), (20, 20)]


def test_evaluator_bad_input():
    model = classifier()
    ds = E.Dataset({"x": rand((4, 3, 8, 8))})
    with pytest.raises(InputError, match="needs 'labels'"):
        E.Evaluator(model, ds, "accuracy")
    with pytest.raises(InputError, match="unknown metric"):
        E.Evaluator(model, ds, "f1")
    with pytest.raises(InputError, match="not an output"):
        E.Evaluator(model, ds, "agreement", output="nope")
    with pytest.raises(InputError, match="no array for model input 'x'"):
        E.Evaluator(model, E.Dataset({"img": rand((4, 3, 8, 8))}), "agreement").score(model)
