"""The ``fp16`` command: exit codes, messages, outputs (tiny models written to tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxsqueeze.cli.app import app
from tests.graphs import pow_layernorm_case as _pow_case
from tests.graphs import resize_scales_case as _resize_case
from tests.helpers import FP16_TOL, rand, run_ort
from tests.helpers import normalized_error as _normalized

runner = CliRunner()


def _write(tmp_path: Path, model: onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def resize_model(tmp_path: Path) -> Path:
    return _write(tmp_path, _resize_case()[0])


SHAPES = ["--input-shape", "x:1,4,6,6", "--input-shape", "ref:1,4,12,12"]


def test_converts_and_reports(resize_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["fp16", str(resize_model), "-o", str(out), *SHAPES])
    assert result.exit_code == 0, result.output
    assert "converted" in result.stdout and "nodes kept in float32" in result.stdout
    assert "scales" in result.stdout  # the Resize scales computation stays float32, with its reason
    assert "on CPU" in result.stderr  # the honest latency note
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert {vi.type.tensor_type.elem_type for vi in model.graph.input} == {onnx.TensorProto.FLOAT}
    assert json.loads(Path(f"{out}.manifest.json").read_text())["recipe"][-1]["pass"] == "fp16"
    assert not model.graph.value_info  # onnxruntime infers them; the stored ones are gone
    feeds = {"x": rand((1, 4, 6, 6), seed=20), "ref": rand((1, 4, 12, 12), seed=21)}
    ref = run_ort(onnx.load(resize_model), feeds)[0]
    assert _normalized(ref, run_ort(model, feeds)[0]) <= FP16_TOL


def test_json_lists_measured_nodes(tmp_path: Path) -> None:
    model, feeds = _pow_case()
    src = _write(tmp_path, model)
    data = tmp_path / "data.npz"
    np.savez(data, **feeds)
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["fp16", str(src), "-o", str(out), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] is True and doc["bytes_after"] > 0
    assert "overflows" in doc["fp32_nodes"]["pow"]
    assert doc["verify"]["outputs"][0]["cosine"] > 0.999


def test_budget_not_met_is_not_written_unless_forced(tmp_path: Path) -> None:
    # A max abs error of 1e-12 needs every node float32 (the grouped LayerNorm of _pow_case):
    # the guard does not turn the whole model back to float32, it refuses.
    model, _ = _pow_case()
    out = tmp_path / "out.onnx"
    args = ["fp16", str(_write(tmp_path, model)), "-o", str(out), "--input-shape", "x:2,6,16",
            "--tolerance", "1e-12", "--no-measure"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "beyond the budget" in result.stderr and "Traceback" not in result.output
    assert not out.exists()
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert out.exists() and "--force" in forced.stderr


def test_no_keep_io_types_and_block_op(resize_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    result = runner.invoke(
        app,
        [
            "fp16",
            str(resize_model),
            "-o",
            str(out),
            *SHAPES,
            "--no-keep-io-types",
            "--block-op",
            "Conv",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert "block list" in doc["fp32_nodes"]["conv"]
    model = onnx.load(out)
    assert {vi.type.tensor_type.elem_type for vi in model.graph.input} == {onnx.TensorProto.FLOAT16}


def test_bad_inputs(resize_model: Path, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["fp16", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    same = runner.invoke(app, ["fp16", str(resize_model), "-o", str(resize_model), *SHAPES])
    assert same.exit_code == 2 and "refusing to overwrite" in same.stderr
    shape = runner.invoke(app, ["fp16", str(resize_model), "-o", str(tmp_path / "o.onnx")])
    assert shape.exit_code == 2 and "--input-shape" in shape.stderr
    bad = runner.invoke(app, ["fp16", str(resize_model), "-o", str(tmp_path / "o.onnx"), "--data", "x.npz"])
    assert bad.exit_code == 2 and "x.npz" in bad.stderr


def test_bf16_on_cpu_says_why(resize_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["fp16", str(resize_model), "-o", str(tmp_path / "o.onnx"), *SHAPES, "--bf16"]
    )
    # onnxruntime's CPU provider has no bfloat16 kernels: one clear line, no traceback, no file.
    assert result.exit_code == 2, result.output
    assert "bfloat16" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "o.onnx").exists()
