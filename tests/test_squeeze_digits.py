"""Acceptance on the trained digits CNN (issue 8's "Done when"): ``squeeze --max-drop 2`` finds a
model within 2 accuracy points with a file >= 4x smaller, the report shows the Pareto front,
``apply`` rebuilds it byte for byte, and a rerun is served from the cache (nothing measured
again). No wall-clock or latency assertion: timing is for benchmarks/squeeze_speed.py; here the
latency objective's outcome is checked for structure (a timed best, or the Pareto models).

Evaluation is on ``digits_val.npz``; calibration (int8 static, channel re-fit) and distillation
train on ``digits_train.npz``, so no evaluated sample is seen by a candidate before it is scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def _squeeze(model: Path, val: Path, out: Path, *extra: str, codes: tuple[int, ...] = (0,)) -> dict:
    args = ["squeeze", str(model), "--data", str(val), "--max-drop", "2", "-o", str(out), *extra]
    r = runner.invoke(app, args)
    assert r.exit_code in codes, r.output
    return json.loads((out / "results.json").read_text())


def _assert_done_when(results: dict) -> None:
    base, best = results["baseline"], results["best"]
    assert best["drop"] <= 2.0 and best["metric"] >= base["metric"] - 2.0
    assert base["size"] / best["size"] >= 4.0  # file bytes, serialized
    assert best["latency_ratio"] is not None  # the best was timed (interleaved with the original)
    assert results["pareto"] and any(p["label"] == results["best"]["label"] for p in results["pareto"])


def _assert_latency_outcome(results: dict, out: Path) -> None:
    """Objective latency: a best that fits and was timed, or (nothing measurably faster on this
    machine, exit 3) the Pareto-front models within budget under OUT/pareto/."""
    if results["best"] is not None:
        best = results["best"]
        assert best["drop"] <= 2.0 and best["latency_ratio"] is not None
        assert results["baseline"]["size"] / best["size"] >= 3.0
    else:
        assert results["not_improved"], "exit 3 must come with the Pareto models"
        for alt in results["not_improved"]:
            assert alt["drop"] <= 2.0 and (out / alt["model"]).is_file()


def test_digits_squeeze_with_distillation(digits, tmp_path):
    """With training data the search also distills into catalog students (issue 9)."""
    model, val, train = digits
    out = tmp_path / "out"
    TRAIN = ("--train-data", str(train), "--train-epochs", "2")
    results = _squeeze(model, val, out, *TRAIN, "--objective", "size")
    _assert_done_when(results)
    assert results["calibration"]["data"] == str(Path(train).resolve())
    assert set(results["knobs"]) == {
        "channels", "int8", "int8-dynamic", "int8-weights", "fp16", "distill",
        "channels+ft",  # a fine-tuned base: offered with training data
    }  # fmt: skip
    assert "MatMul weights are" in results["not_offered"]["int4"]  # convolutions and a Gemm: no MatMul
    for name in ("sparsity", "sparsity+ft"):  # stored sparse where smaller, but offered by name
        assert "name it in --techniques" in results["not_offered"][name]
    for name in ("resolution", "resolution+ft"):  # the interface is kept: the file never shrinks
        assert "cannot lower size" in results["not_offered"][name]
    report = (out / "report.md").read_text()
    assert "## Pareto front" in report and "Distilled students" in report

    rebuilt = tmp_path / "rebuilt.onnx"
    r = runner.invoke(app, ["apply", str(out / "recipe.toml"), str(model), "-o", str(rebuilt)])
    assert r.exit_code == 0, r.output
    assert sio.sha256_file(rebuilt) == results["best"]["sha256"]

    cached = _squeeze(model, val, out, *TRAIN, "--objective", "size")
    assert cached["evaluations"] == 0 and cached["cache_hits"] == len(results["points"])
    assert cached["best"]["sha256"] == results["best"]["sha256"]
    assert cached["students"] == results["students"]  # read back, not trained again


def test_digits_squeeze_graph_passes_only(digits, tmp_path):
    """Without training data: the graph passes alone, calibrated on the training split."""
    model, val, train = digits
    common = ["--calibration-data", str(train)]
    # Objective size: the smallest file within budget, and it must still run faster.
    results = _squeeze(model, val, tmp_path / "size", *common, "--objective", "size")
    _assert_done_when(results)
    assert "distill" in results["not_offered"]
    # Objective latency (the default): the fastest model within budget. It is smaller, but the
    # fastest knobs (resolution + int8) leave int8's ~3.2x, not 4x: see benchmarks/RESULTS.md.
    out = tmp_path / "latency"
    _assert_latency_outcome(_squeeze(model, val, out, *common, codes=(0, 3)), out)


def test_digits_squeeze_literal_issue_command(digits, tmp_path):
    """The issue's command as written: calibration held out from the first 64 samples of --data
    (the other 296 are evaluated), objective latency."""
    model, val, _ = digits
    out = tmp_path / "out"
    results = _squeeze(model, val, out, codes=(0, 3))
    _assert_latency_outcome(results, out)
    assert results["samples"] == 296 and results["calibration"]["stop"] == 64
