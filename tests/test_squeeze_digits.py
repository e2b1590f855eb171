"""Acceptance on the trained digits CNN (issue 8's "Done when"): ``squeeze --max-drop 2`` finds a
model within 2 accuracy points with a file >= 4x smaller and lower CPU latency in under 5 minutes,
the report shows the Pareto front, ``apply`` rebuilds it byte for byte, and a rerun is served from
cache in seconds.

Evaluation is on ``digits_val.npz``; calibration (int8 static, channel re-fit) and distillation
train on ``digits_train.npz``, so no evaluated sample is seen by a candidate before it is scored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def _squeeze(model: Path, val: Path, out: Path, *extra: str) -> tuple[dict, float]:
    args = ["squeeze", str(model), "--data", str(val), "--max-drop", "2", "-o", str(out), *extra]
    t = time.perf_counter()
    r = runner.invoke(app, args)
    elapsed = time.perf_counter() - t
    assert r.exit_code == 0, r.output
    return json.loads((out / "results.json").read_text()), elapsed


def _assert_done_when(results: dict, elapsed: float) -> None:
    base, best = results["baseline"], results["best"]
    assert elapsed < 300
    assert best["drop"] <= 2.0 and best["metric"] >= base["metric"] - 2.0
    assert base["size"] / best["size"] >= 4.0  # file bytes, serialized
    assert best["latency_ratio"] < 1.0  # interleaved A/B median vs the original, same run
    assert results["pareto"] and any(p["label"] == results["best"]["label"] for p in results["pareto"])


def test_digits_squeeze_with_distillation(digits, tmp_path):
    """With training data the search also distills into catalog students (issue 9)."""
    model, val, train = digits
    out = tmp_path / "out"
    results, first = _squeeze(model, val, out, "--train-data", str(train))
    _assert_done_when(results, first)
    assert results["calibration"]["data"] == str(Path(train).resolve())
    assert set(results["knobs"]) == {
        "resolution", "channels", "sparsity", "int8", "int8-dynamic", "int8-weights", "int4", "fp16", "distill",
    }  # fmt: skip
    report = (out / "report.md").read_text()
    assert "## Pareto front" in report and "Distilled students" in report

    rebuilt = tmp_path / "rebuilt.onnx"
    r = runner.invoke(app, ["apply", str(out / "recipe.toml"), str(model), "-o", str(rebuilt)])
    assert r.exit_code == 0, r.output
    assert sio.sha256_file(rebuilt) == results["best"]["sha256"]

    cached, again = _squeeze(model, val, out, "--train-data", str(train))
    assert cached["evaluations"] == 0 and cached["cache_hits"] == len(results["points"])
    assert cached["best"]["sha256"] == results["best"]["sha256"]
    assert again < 15  # seconds: nothing is trained, built or timed again


def test_digits_squeeze_graph_passes_only(digits, tmp_path):
    """Without training data: the graph passes alone, calibrated on the training split."""
    model, val, train = digits
    common = ["--calibration-data", str(train)]
    # Objective size: the smallest file within budget, and it must still run faster.
    results, elapsed = _squeeze(model, val, tmp_path / "size", *common, "--objective", "size")
    _assert_done_when(results, elapsed)
    assert "distill" in results["not_offered"]
    # Objective latency (the default): the fastest model within budget. It is smaller, but the
    # fastest knobs (resolution + int8) leave int8's ~3.2x, not 4x: see benchmarks/RESULTS.md.
    results, elapsed = _squeeze(model, val, tmp_path / "latency", *common)
    base, best = results["baseline"], results["best"]
    assert elapsed < 300 and best["drop"] <= 2.0 and best["latency_ratio"] < 0.9
    assert base["size"] / best["size"] >= 3.0


def test_digits_squeeze_literal_issue_command(digits, tmp_path):
    """The issue's command as written: calibration held out from the first 64 samples of --data
    (the other 296 are evaluated), objective latency."""
    model, val, _ = digits
    results, elapsed = _squeeze(model, val, tmp_path / "out")
    _assert_done_when(results, elapsed)
    assert results["samples"] == 296 and results["calibration"]["stop"] == 64
