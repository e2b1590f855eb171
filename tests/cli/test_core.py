"""inspect and verify through the CLI: results, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app
from tests.helpers import model_from_text, rand

runner = CliRunner()

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 6] x) => (float[N, 4] y) {
    y = Gemm <transB = 1> (x, w, b)
}
"""


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    w = rand((4, 6), 1)
    a = sio.save(model_from_text(TEXT, {"w": w, "b": rand((4,), 2)}), tmp_path / "a.onnx")
    b = sio.save(model_from_text(TEXT, {"w": w + 0.01, "b": rand((4,), 2)}), tmp_path / "b.onnx")
    return a, b


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "inspect" in result.output and "verify" in result.output
    assert runner.invoke(app, ["-h"]).exit_code == 0
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("onnxsqueeze ")


def test_inspect_json(models: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(models[0]), "--json", "--input-shape", "x:3,6"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["macs"] == 3 * 4 * 6 and data["params"] == 28
    assert data["inputs"][0]["shape"] == ["N", 6]


def test_inspect_table(models: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(models[0])])
    assert result.exit_code == 0
    assert "Gemm 1" in result.output and "[N, 6]" in result.output


def test_verify_exit_codes(models: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = models
    ok = runner.invoke(app, ["verify", str(a), str(a), "--tolerance", "0"])
    assert ok.exit_code == 0 and "within tolerance" in ok.output
    bad = runner.invoke(app, ["verify", str(a), str(b), "--tolerance", "1e-6"])
    assert bad.exit_code == 1
    assert "exceeds tolerance" in bad.output
    js = runner.invoke(app, ["verify", str(a), str(b), "--json", "--input-shape", "x:4,6"])
    assert js.exit_code == 0
    data = json.loads(js.stdout)
    assert data["samples"] == 4 and data["max_abs"] > 0 and data["passed"] is True
    npz = sio.save_npz(tmp_path / "d.npz", {"x": rand((7, 6), 3), "labels": np.zeros(7)})
    real = runner.invoke(app, ["verify", str(a), str(b), "--data", str(npz), "--json"])
    assert json.loads(real.stdout)["samples"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "missing.onnx"], "no such file"),
        (["inspect", "."], "is a directory"),
        (["inspect", "{a}", "--input-shape", "x:0"], "positive integers"),
        (["verify", "{a}", "{a}", "--input-shape", "nope:1,6"], "model's inputs are"),
        (["verify", "{a}", "{a}", "--data", "missing.npz"], "no such data file"),
        (["verify", "{a}", "{a}", "--provider", "cuda"], "not available"),
    ],
)
def test_bad_input_is_one_line(models: tuple[Path, Path], args: list[str], message: str) -> None:
    args = [x.format(a=models[0]) for x in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
