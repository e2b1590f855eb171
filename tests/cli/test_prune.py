"""``onnxsqueeze prune`` through typer's CliRunner: modes, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze.cli.app import app
from tests.graphs import residual_model
from tests.helpers import rand

runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = sio.save(residual_model(zero=False), tmp_path / "m.onnx")
    calib = sio.save_npz(tmp_path / "calib.npz", {"x": rand((48, 3, 8, 8), 1)})
    val = sio.save_npz(tmp_path / "val.npz", {"x": rand((24, 3, 8, 8), 2), "labels": np.arange(24) % 5})
    return model, calib, val


def test_sparsity_writes_and_reports(files, tmp_path: Path) -> None:
    model, _, _ = files
    out = tmp_path / "s.onnx"
    result = runner.invoke(
        app, ["prune", str(model), "-o", str(out), "--sparsity", "0.5", "--scope", "global"]
    )
    assert result.exit_code == 0, result.output
    assert out.exists() and "zipped file" in result.output and "zero weights per layer" in result.output
    assert "no calibration data" in result.output  # said on stderr (mixed in by the runner)
    sio.load(out)
    manifest = mf.read(out)
    assert manifest is not None and manifest["where"] == "sidecar"
    assert manifest["source"]["sha256"] == sio.sha256_file(model)
    assert [step["pass"] for step in manifest["recipe"]] == ["sparsity"]
    assert manifest["verification"]["max_abs"] > 0 and mf.check(out) == []


def test_channels_json_with_data(files, tmp_path: Path) -> None:
    model, calib, val = files
    out = tmp_path / "c.onnx"
    args = ["prune", str(model), "-o", str(out), "--channels", "0.25", "--data", str(calib)]
    result = runner.invoke(app, [*args, "--eval-data", str(val), "--round-to", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["mode"] == "channels" and report["output"] == str(out) and report["passed"]
    assert report["manifest"] == str(mf.sidecar_path(out)) and mf.check(out) == []
    assert report["after"]["macs"] < report["before"]["macs"]
    assert "pruned_without_reconstruction" in report["quality"]["accuracy"]
    assert all(g["kept"] % 2 == 0 for g in report["groups"] if g["status"] == "pruned")


def test_sensitivity_table_and_json(files) -> None:
    model, _, val = files
    result = runner.invoke(app, ["prune", str(model), "--sensitivity", "--data", str(val), "--ratios", "0.5"])
    assert result.exit_code == 0, result.output
    assert "sensitivity: accuracy" in result.output and "50% pruned" in result.output
    result = runner.invoke(app, ["prune", str(model), "--sensitivity", "--data", str(val), "--json"])
    rows = json.loads(result.stdout)["rows"]
    assert {r["ratio"] for r in rows if "ratio" in r} == {0.25, 0.5, 0.75}


def test_max_drop_fails_without_writing_unless_forced(files, tmp_path: Path) -> None:
    from tests.graphs import head_model as _head_model

    model = sio.save(_head_model("Flatten (ar)"), tmp_path / "head.onnx")
    data = sio.save_npz(tmp_path / "head.npz", {"x": rand((64, 3, 4, 4), 3)})
    out = tmp_path / "bad.onnx"
    # no labels: the metric is top-1 agreement with the original, which 75% pruning must break
    args = ["prune", str(model), "-o", str(out), "--channels", "0.75", "--eval-data", str(data)]
    result = runner.invoke(app, [*args, "--max-drop", "0"])
    assert result.exit_code == 1 and "not written" in result.output and not out.exists()
    result = runner.invoke(app, [*args, "--max-drop", "0", "--force"])
    assert result.exit_code == 0 and out.exists() and "written anyway" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "0.5", "--channels", "0.3"], "exactly one of"),
        ([], "exactly one of"),
        (["--channels", "0.3", "--criterion", "l7"], "--criterion"),
        (["--sparsity", "0.5", "--scope", "net"], "--scope"),
        (["--sparsity", "1.5"], "out of range"),
        (["--sensitivity"], "needs --data"),
        (["--sensitivity", "--data", "VAL", "--ratios", "0.5,x"], "--ratios"),
        (["--channels", "0.3", "--max-drop", "1"], "--max-drop needs"),
        (["--channels", "0.3", "--data", "missing.npz"], "no such data file"),
    ],
)
def test_bad_input_one_line_exit_2(files, tmp_path: Path, args: list[str], message: str) -> None:
    model, _, val = files
    args = [str(val) if a == "VAL" else a for a in args]
    out = [] if "--sensitivity" in args else ["-o", str(tmp_path / "o.onnx")]
    result = runner.invoke(app, ["prune", str(model), *out, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_refuses_missing_model_output_and_overwrite(files, tmp_path: Path) -> None:
    model, _, _ = files
    result = runner.invoke(
        app, ["prune", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx"), "--sparsity", "0.5"]
    )
    assert result.exit_code == 2 and "no such file" in result.output
    result = runner.invoke(app, ["prune", str(model), "--sparsity", "0.5"])
    assert result.exit_code == 2 and "--output" in result.output
    result = runner.invoke(app, ["prune", str(model), "-o", str(model), "--sparsity", "0.5"])
    assert result.exit_code == 2 and "refusing to overwrite" in result.output


def test_unprunable_model_is_one_line_error(tmp_path: Path) -> None:
    from tests.helpers import model_from_text

    text = (
        '<ir_version: 8, opset_import: ["" : 17]> '
        "g (float[N, 6] x) => (float[N, 4] y) { y = Gemm <transB = 1> (x, w, b) }"
    )
    model = sio.save(model_from_text(text, {"w": rand((4, 6), 1), "b": rand((4,), 2)}), tmp_path / "g.onnx")
    result = runner.invoke(app, ["prune", str(model), "-o", str(tmp_path / "o.onnx"), "--channels", "0.5"])
    assert (
        result.exit_code == 2
        and "no prunable channel group" in result.output
        and "model output" in result.output
    )
    assert not (tmp_path / "o.onnx").exists()
