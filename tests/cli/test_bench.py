"""``onnxsqueeze bench``: exit codes, messages, the files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxsqueeze.cli.app import app
from tests.graphs import tiny_mlp

runner = CliRunner()
FAST = ["--warmup", "1", "--iterations", "4", "--rounds", "2"]


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return tiny_mlp(tmp_path / "base.onnx", 64), tiny_mlp(tmp_path / "cand.onnx", 16)


def test_writes_json_markdown_and_plot(models: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["bench", *map(str, models), *FAST, "--batch", "1,2", "--instance", "c7i.xlarge"]
    args += ["--report", str(out / "b.json"), "--markdown", str(out / "b.md"), "--plot", str(out / "b.png")]
    args += ["--fail-if", "p90>100x", "--fail-if", "size>1x"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "b.json").read_text())
    assert doc["schema"] == "onnxsqueeze.bench/1" and len(doc["results"]) == 4
    assert doc["cost"]["label"] == "aws/c7i.xlarge" and doc["settings"]["min_duration_s"] == 0
    assert "`base.onnx` (baseline) vs `cand.onnx`" in (out / "b.md").read_text()
    assert (out / "b.png").read_bytes().startswith(b"\x89PNG")
    assert "cand.onnx" in result.stdout and "all 2 gate(s) passed" in result.output


def test_json_to_stdout(models: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["bench", str(models[0]), *FAST, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["models"][0]["name"] == "base.onnx" and doc["comparisons"] == []


def test_failed_gate_exits_1_after_writing_the_report(models: tuple[Path, Path], tmp_path: Path) -> None:
    md = tmp_path / "b.md"
    result = runner.invoke(
        app, ["bench", *map(str, models), *FAST, "--markdown", str(md), "--fail-if", "size>0.01x"]
    )
    assert result.exit_code == 1
    assert "gate 'size>0.01x' failed: cand.onnx at batch 1" in result.output
    assert "❌ **failed** `size>0.01x`" in md.read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--provider", "cuda"], "provider 'cuda' is not available; available:"),
        (["--provider", "tensorrt"], "provider 'tensorrt' is not available; available:"),
        (["--fail-if", "p90 is big"], "expected METRIC OP VALUE"),
        (["--fail-if", "cost>1x"], "cost gates need --price-per-hour or --instance"),
        (["--batch", "1,x"], "--batch '1,x'"),
        (["--batch", "0"], "--batch '0'"),
        (["--instance", "nope.large"], "not in the price table"),
        (["--price-per-hour", "1", "--instance", "g5.xlarge"], "not both"),
        (["--plot", "out.jpg"], "ending in .png"),
        (["--input-shape", "y:1,16"], "--input-shape names ['y']"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(models: tuple[Path, Path], extra: list[str], message: str) -> None:
    import onnxruntime as ort

    if "--provider" in extra and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a GPU build of onnxruntime is installed")
    result = runner.invoke(app, ["bench", *map(str, models), *FAST, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_model_and_overwrite(models: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", str(tmp_path / "nope.onnx"), *FAST])
    assert result.exit_code == 2 and "no such model file" in result.output
    result = runner.invoke(app, ["bench", str(models[0]), *FAST, "--report", str(models[0])])
    assert result.exit_code == 2 and "refusing to overwrite" in result.output


def test_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    result = runner.invoke(app, ["bench", str(bad), *FAST])
    assert result.exit_code == 2 and "bad.onnx" in result.output and "Traceback" not in result.output


def test_list_instances() -> None:
    result = runner.invoke(app, ["bench", "--list-instances"])
    assert result.exit_code == 0 and "aws/g4dn.xlarge" in result.stdout and "taken" in result.stdout


def test_schema_flag_prints_the_json_schema() -> None:
    result = runner.invoke(app, ["bench", "--schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["properties"]["schema"]["const"] == "onnxsqueeze.bench/1"


def test_real_inputs_from_data(models: tuple[Path, Path], tmp_path: Path) -> None:
    import numpy as np

    from onnxsqueeze.io import save_npz

    data = save_npz(
        tmp_path / "x.npz", {"x": np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)}
    )
    result = runner.invoke(
        app, ["bench", str(models[0]), *FAST, "--batch", "4", "--data", str(data), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["settings"]["data"] == str(data) and doc["results"][0]["input_shapes"] == {"x": [4, 16]}
    bad = save_npz(tmp_path / "y.npz", {"y": np.zeros((3, 16), np.float32)})
    result = runner.invoke(app, ["bench", str(models[0]), *FAST, "--data", str(bad)])
    assert result.exit_code == 2 and "no array for input 'x'" in result.output
