"""One vocabulary of flags across commands (issue 13), through typer's CliRunner, on the
exporters' patterns: Constant-node weights, dynamic dims, near-zero maps, CTC outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app
from tests.graphs import constant_weights_model, ctc_model, near_zero_map_model
from tests.helpers import rand

runner = CliRunner()


def test_prune_channels_on_constant_weights_with_input_shape(tmp_path: Path) -> None:
    src = sio.save(constant_weights_model(), tmp_path / "paddle.onnx")
    out = tmp_path / "p.onnx"
    args = ["prune", str(src), "-o", str(out), "--channels", "0.5", "--input-shape", "x:1,3,8,8", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verify"]["inputs"] == {"x": [1, 3, 8, 8]} and out.exists()
    missing = runner.invoke(app, ["prune", str(src), "-o", str(out), "--channels", "0.5"])
    assert (
        missing.exit_code == 2 and "--input-shape x:" in missing.output and "Traceback" not in missing.output
    )


def test_prune_sparsity_passes_input_shape_and_reconstruction(tmp_path: Path) -> None:
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    calib = sio.save_npz(tmp_path / "c.npz", {"x": rand((16, 3, 8, 8), 1)})
    base = [
        "prune",
        str(src),
        "--sparsity",
        "0.5",
        "--input-shape",
        "x:1,3,8,8",
        "--data",
        str(calib),
        "--json",
        "--force",  # the flags reach the technique; the task-metric gate is tested in tests/corpus/test_gaps.py
    ]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "a.onnx"), "--reconstruction", "none"])
    assert result.exit_code == 0, result.output
    assert not json.loads(result.stdout)["reconstruction"]
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "b.onnx"), "--calibration-samples", "8"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["reconstruction"]


def test_fp16_near_zero_map_without_data_warns_and_writes(tmp_path: Path) -> None:
    src = sio.save(near_zero_map_model(), tmp_path / "det.onnx")
    out = tmp_path / "o.onnx"
    result = runner.invoke(app, ["fp16", str(src), "-o", str(out), "--no-measure"])
    assert result.exit_code == 0, result.output
    assert out.exists() and "near-constant" in result.output and "--data" in result.output


def test_fp16_metric_budget_decides(tmp_path: Path) -> None:
    src = sio.save(near_zero_map_model(), tmp_path / "det.onnx")
    data = sio.save_npz(tmp_path / "d.npz", {"x": rand((8, 3, 16, 16), 5, 30.0)})
    out = tmp_path / "o.onnx"
    args = [
        "fp16",
        str(src),
        "-o",
        str(out),
        "--data",
        str(data),
        "--metric",
        "iou",
        "--max-drop",
        "1",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["judgement"]["metric"] == "iou" and report["passed"]
    bad = runner.invoke(app, ["fp16", str(src), "-o", str(out), "--metric", "accuracy", "--force"])
    assert bad.exit_code == 2 and "labels" in bad.output


def _ctc_pair(tmp_path: Path) -> tuple[Path, Path]:
    ref = ctc_model()
    noisy = onnx.ModelProto()
    noisy.CopyFrom(ref)
    w = onnx.numpy_helper.to_array(ref.graph.initializer[0])
    w = w + rand(w.shape, 11, 0.4)
    noisy.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), "w"))
    return sio.save(ref, tmp_path / "ocr.onnx"), sio.save(noisy, tmp_path / "n.onnx")


def test_verify_sequence_metric_on_ctc_output(tmp_path: Path) -> None:
    ref, noisy = _ctc_pair(tmp_path)
    shape = ["--input-shape", "x:1,1,8,40"]
    same = runner.invoke(app, ["verify", str(ref), str(ref), *shape, "--metric", "sequence", "--json"])
    assert same.exit_code == 0, same.output
    judged = json.loads(same.stdout)["judgement"]
    assert judged["metric"] == "sequence" and judged["value"] == 100.0
    data = sio.save_npz(tmp_path / "lines.npz", {"x": rand((6, 1, 8, 40), 3)})
    worse = runner.invoke(app, ["verify", str(ref), str(noisy), "--data", str(data), "--metric", "sequence"])
    assert worse.exit_code == 1 and "sequence" in worse.output and "beyond the budget" in worse.output
    agree = runner.invoke(
        app,
        ["verify", str(ref), str(noisy), "--data", str(data), "--metric", "agreement", "--max-drop", "100"],
    )
    assert agree.exit_code == 0, agree.output


def test_export_triton_takes_output_dims_from_a_run(tmp_path: Path) -> None:
    ref, _ = _ctc_pair(tmp_path)
    repo = tmp_path / "repo"
    result = runner.invoke(
        app, ["export", "triton", str(ref), "--repo", str(repo), "--input-shape", "x:1,1,8,40"]
    )
    assert result.exit_code == 0, result.output
    assert "declares [1, seqlen] but returns [10, 1, 12]" in result.output
    text = (repo / "ocr" / "config.pbtxt").read_text()
    out = text[text.index("output {") :]
    out = out[: out.index("}")]
    assert [int(line.split(":")[1]) for line in out.splitlines() if line.strip().startswith("dims")] == [
        -1,
        1,
        12,
    ]


def test_resize_takes_input_shape_for_dynamic_dims(tmp_path: Path) -> None:
    text = """
    <ir_version: 8, opset_import: ["" : 13]>
    fcn (float[N, 3, H, W] x) => (float[N, 4, H, W] y) {
        y = Conv <pads = [1, 1, 1, 1]> (x, w)
    }
    """
    from tests.helpers import model_from_text

    src = sio.save(model_from_text(text, {"w": rand((4, 3, 3, 3), 1)}), tmp_path / "fcn.onnx")
    out = tmp_path / "r.onnx"
    args = ["resize", str(src), "-o", str(out), "--scale", "0.5", "--keep-interface", "--json"]
    shaped = [*args, "--input-shape", "x:1,3,32,32"]
    refused = runner.invoke(app, [*shaped, "--metric", "cosine"])
    assert refused.exit_code == 2 and "resize judges by agreement or iou" in refused.output
    result = runner.invoke(app, [*shaped, "--metric", "iou", "--max-drop", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (
        report["agreement"]["samples"] == 8 and "--input-shape x:1x3x32x32" in report["agreement"]["source"]
    )
    assert report["input_shapes"] == {"x": [1, 3, 32, 32]} and out.exists()


def test_squeeze_flag_names(tmp_path: Path) -> None:
    result = runner.invoke(app, ["squeeze", "--help"])
    for flag in ("--color-order", "--threads", "--input-shape", "--calibration-samples"):
        assert flag in result.output
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    data = sio.save_npz(tmp_path / "d.npz", {"x": rand((8, 3, 8, 8), 1)})
    bad = runner.invoke(
        app,
        ["squeeze", str(src), "--data", str(data), "-o", str(tmp_path / "o"), "--input-shape", "x:1,3,16,16"],
    )
    assert bad.exit_code == 2 and "disagrees with" in bad.output


def test_long_steps_report_progress_off_a_terminal(tmp_path: Path, monkeypatch) -> None:
    from onnxsqueeze.cli import _output

    monkeypatch.setattr(_output, "PROGRESS_EVERY_S", 0.0)
    src = sio.save(constant_weights_model(), tmp_path / "m.onnx")
    calib = sio.save_npz(tmp_path / "c.npz", {"x": rand((16, 3, 8, 8), 1)})
    args = ["prune", str(src), "-o", str(tmp_path / "o.onnx"), "--channels", "0.5", "--data", str(calib)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "re-fitting layers: 1/" in result.output and "normalizing" in result.output
