"""Acceptance on the trained digits CNN: ``squeeze --max-drop 2`` finds a smaller, faster model
within 2 accuracy points, ``apply`` rebuilds it byte for byte, and a rerun is served from cache."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app

pytestmark = pytest.mark.slow


def test_digits_squeeze_within_two_points(digits, tmp_path):
    model, val, _ = digits
    out = tmp_path / "out"
    args = ["squeeze", str(model), "--data", str(val), "--max-drop", "2", "-o", str(out)]
    runner = CliRunner()
    t = time.perf_counter()
    r = runner.invoke(app, args)
    first = time.perf_counter() - t
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    base, best = results["baseline"], results["best"]
    assert best["drop"] <= 2.0
    assert best["size"] < base["size"] / 3  # int8 weights (4x on the weights, graph overhead aside)
    assert best["latency_ms"] < base["latency_ms"]  # interleaved A/B ratio below 1
    assert first < 300

    rebuilt = tmp_path / "rebuilt.onnx"
    r = runner.invoke(app, ["apply", str(out / "recipe.toml"), str(model), "-o", str(rebuilt)])
    assert r.exit_code == 0, r.output
    assert sio.sha256_file(rebuilt) == best["sha256"]

    t = time.perf_counter()
    r = runner.invoke(app, args)
    again = time.perf_counter() - t
    assert r.exit_code == 0, r.output
    cached = json.loads((out / "results.json").read_text())
    assert cached["evaluations"] == 0 and cached["cache_hits"] == len(results["points"])
    assert cached["best"]["sha256"] == best["sha256"]
    assert again < first
