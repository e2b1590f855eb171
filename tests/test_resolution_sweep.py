"""The resolution technique layer: metrics, the sweep, and ``resize_model`` on real third-party models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze.errors import UnsupportedModelError
from onnxsqueeze.passes.resolution import analyze_resolution
from onnxsqueeze.resolution_sweep import compare_outputs, map_iou, resize_model, sweep_resolutions
from tests.graphs import fcn, gap_classifier
from tests.helpers import rand, run_ort

CORPUS = Path("/work/corpus")


def corpus_model(name: str) -> Path:
    for path in (Path(__file__).resolve().parent.parent / ".cache" / "corpus" / name, CORPUS / name):
        if path.exists():
            return path
    pytest.skip(f"corpus model {name} is not fetched (.cache/corpus/ or {CORPUS})")


def letterboxed_photos(size: int) -> np.ndarray:
    """scikit-image photographs the way nudenet feeds them: padded square, resized, RGB / 255."""
    from PIL import Image
    from skimage import data

    out = []
    for image in (data.astronaut(), data.coffee(), data.chelsea()):
        side = max(image.shape[:2])
        pad = np.zeros((side, side, 3), np.uint8)
        pad[: image.shape[0], : image.shape[1]] = image[..., :3]
        small = Image.fromarray(pad).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(small, np.float32).transpose(2, 0, 1) / 255.0)
    return np.stack(out)


def test_metrics() -> None:
    a = np.array([[True, False], [True, True]])
    b = np.array([[True, True], [False, True]])
    assert map_iou(a, b) == pytest.approx(2 / 4)
    ref = np.array([[0.1, 2.0], [3.0, 1.0]])
    m = compare_outputs(ref, np.array([[0.0, 1.0], [0.0, 1.0]]), labels=np.array([1, 0]))
    assert m["top1_agreement"] == 0.5 and m["accuracy"] == 0.5


def test_sweep_returns_points() -> None:
    x = rand((6, 3, 32, 32), 11)
    points = sweep_resolutions(fcn(), [(16, 16), (24, 24)], data={"image": x}, latency=True, rounds=1, runs=2)
    assert [p.resolution for p in points] == [(32, 32), (16, 16), (24, 24)]
    assert points[0].macs_ratio == 1.0 and points[0].iou == 1.0
    assert points[1].macs_ratio == pytest.approx(0.25, rel=0.02)
    assert 0.0 <= points[1].iou <= 1.0 and points[1].mean_abs_error > 0
    assert points[1].latency_ms is not None and points[1].latency_ratio is not None
    cls = sweep_resolutions(gap_classifier(), [(16, 16)], latency=False)
    assert cls[1].top1_agreement is not None and cls[1].iou is None


@pytest.mark.slow
def test_yolov8n_half_scale_keeps_its_interface(tmp_path: Path) -> None:
    path = corpus_model("320n.onnx")
    source = sio.load(path)
    assert analyze_resolution(source).stride == (32, 32)
    x = letterboxed_photos(320)
    out = tmp_path / "small.onnx"
    report = resize_model(
        source, path, out, resolution=None, scale=0.5, keep_interface=True, data={"images": x}
    )
    assert report["internal_size"] == (160, 160) and report["macs"]["ratio"] == pytest.approx(0.25, rel=0.02)
    written = sio.load(out)
    for a, b in zip(source.graph.input, written.graph.input, strict=True):
        assert a == b  # the declared interface: batch, 3, height, width
    (ref,) = run_ort(source, {"images": x})
    (got,) = run_ort(written, {"images": x})
    assert got.shape == (3, 22, ref.shape[2] // 4)  # anchors of the 160x160 internal image
    # the class-score profile per photo (max over anchors) follows the original's
    a, b = ref[:, 4:].max(2), got[:, 4:].max(2)
    cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert float(np.mean(cosine)) > 0.8
    # 416 x 0.5 = 208 is no multiple of 32 (the model fails there): rounded to 224 at run time
    (y,) = run_ort(written, {"images": letterboxed_photos(416)[:1]})
    assert y.shape == (1, 22, 7 * 7 + 14 * 14 + 28 * 28) and np.all(np.isfinite(y))


@pytest.mark.slow
def test_ddddocr_ocr_refused_naming_the_lstm(tmp_path: Path) -> None:
    path = corpus_model("common.onnx")
    with pytest.raises(UnsupportedModelError, match="LSTM 'LSTM_79' contracts its weight .* feature axis"):
        resize_model(
            sio.load(path), path, tmp_path / "o.onnx", resolution=None, scale=0.5, keep_interface=True
        )


@pytest.mark.slow
def test_ddddocr_detector_fixed_output_refused_kept_but_rewritten_plainly(tmp_path: Path) -> None:
    path = corpus_model("common_det.onnx")
    source = sio.load(path)
    with pytest.raises(UnsupportedModelError, match="output 'output' \\[1, 3549, 6\\]"):
        resize_model(source, path, tmp_path / "k.onnx", resolution=None, scale=0.5, keep_interface=True)
    report = resize_model(source, path, tmp_path / "p.onnx", resolution=None, scale=0.5)
    assert report["new_size"] == (224, 224) and "rounded to 224x224" in report["rounded"]
    (y,) = run_ort(sio.load(tmp_path / "p.onnx"), {"images": np.zeros((1, 3, 224, 224), np.float32)})
    assert y.shape == (1, 7 * 7 + 14 * 14 + 28 * 28, 6)  # YOLOX anchors at strides 32, 16, 8
