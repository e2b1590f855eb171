"""The ``resize`` command: --check verdicts, rewrites, the interface-keeping mode, --sweep, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze.cli.app import app
from tests.graphs import fcn, flatten_gemm, gap_classifier
from tests.helpers import run_ort

runner = CliRunner()


@pytest.fixture()
def models(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, model in (("fcn", fcn()), ("gap", gap_classifier()), ("flat", flatten_gemm())):
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


def test_check_accepts_and_refuses(models: dict[str, Path]) -> None:
    ok = runner.invoke(app, ["resize", str(models["gap"]), "--check"])
    assert ok.exit_code == 0, ok.output
    assert "accepted" in ok.output and "GlobalAveragePool" in ok.output
    bad = runner.invoke(app, ["resize", str(models["flat"]), "--check", "--json"])
    assert bad.exit_code == 1
    verdict = json.loads(bad.stdout)
    assert verdict["ok"] is False and verdict["op_type"] == "Gemm" and "fc_w" in verdict["reason"]


def test_rewrite_writes_model_and_reports(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "small.onnx"
    result = runner.invoke(
        app, ["resize", str(models["gap"]), "-o", str(out), "--resolution", "16x16", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["new_size"] == [16, 16] and report["macs"]["ratio"] == pytest.approx(0.25, rel=0.05)
    assert report["agreement"]["top1_agreement"] is not None
    model = sio.load(out)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[2:]] == [16, 16]
    assert [s["pass"] for s in json.loads(Path(f"{out}.manifest.json").read_text())["recipe"]][
        -1
    ] == "resolution"


def test_keep_interface_image_to_image(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "half.onnx"
    result = runner.invoke(
        app,
        [
            "resize",
            str(models["fcn"]),
            "-o",
            str(out),
            "--scale",
            "0.5",
            "--keep-interface",
            "--mode",
            "nearest",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "outputs resized back to the original size: mask" in result.output
    assert "IoU" in result.output
    model = sio.load(out)
    (y,) = run_ort(model, {"image": np.zeros((2, 3, 32, 32), np.float32)})
    assert y.shape == (2, 1, 32, 32)


def test_refused_rewrite_is_one_red_line(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    result = runner.invoke(app, ["resize", str(models["flat"]), "-o", str(out), "-r", "16x16"])
    assert result.exit_code == 2
    assert "Gemm" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_min_agreement_blocks_write_unless_forced(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    args = [
        "resize",
        str(models["fcn"]),
        "-o",
        str(out),
        "-r",
        "4x4",
        "--keep-interface",
        "--min-agreement",
        "0.999",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "below the minimum 0.999" in result.output and "--force" in result.output
    assert not out.exists()
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and out.exists()


def test_sweep_json(models: dict[str, Path]) -> None:
    result = runner.invoke(
        app, ["resize", str(models["gap"]), "--sweep", "24,16", "--json", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    points = json.loads(result.stdout)["points"]
    assert [p["resolution"] for p in points] == [[32, 32], [24, 24], [16, 16]]
    assert points[2]["macs_ratio"] == pytest.approx(0.25, rel=0.05) and points[2]["latency_ms"] > 0


def test_bad_input(models: dict[str, Path], tmp_path: Path) -> None:
    missing = runner.invoke(app, ["resize", str(tmp_path / "nope.onnx"), "--check"])
    assert missing.exit_code == 2 and "no such file" in missing.output
    both = runner.invoke(app, ["resize", str(models["gap"]), "--check", "--sweep", "16"])
    assert both.exit_code == 2 and "choose one of" in both.output
    bad_res = runner.invoke(app, ["resize", str(models["gap"]), "-o", str(tmp_path / "o.onnx"), "-r", "16xq"])
    assert bad_res.exit_code == 2 and "resolution '16xq'" in bad_res.output
    neither = runner.invoke(app, ["resize", str(models["gap"]), "-o", str(tmp_path / "o.onnx")])
    assert neither.exit_code == 2 and "exactly one" in neither.output
    same = runner.invoke(app, ["resize", str(models["gap"]), "-o", str(models["gap"]), "-r", "16"])
    assert same.exit_code == 2 and "refusing to overwrite" in same.output
    bad_input = runner.invoke(app, ["resize", str(models["gap"]), "--check", "--input", "pixels"])
    assert bad_input.exit_code == 2 and "--input 'pixels'" in bad_input.output


def test_check_reports_the_stride(tmp_path: Path) -> None:
    from tests.graphs import fpn

    path = tmp_path / "fpn.onnx"
    onnx.save(fpn(), path)
    result = runner.invoke(app, ["resize", str(path), "--check"])
    assert result.exit_code == 0 and "multiples of 32" in result.output and "Add" in result.output
    as_json = runner.invoke(app, ["resize", str(path), "--check", "--json"])
    assert json.loads(as_json.stdout)["stride"] == [32, 32]


def test_dynamic_fpn_scale_keep_interface_at_the_data_size(tmp_path: Path) -> None:
    """The FPN symptom: dynamic H/W, --scale --keep-interface --data with real-size inputs."""
    from tests.graphs import fpn

    path, data, out = tmp_path / "fpn.onnx", tmp_path / "d.npz", tmp_path / "small.onnx"
    onnx.save(fpn(), path)
    x = np.kron(
        np.random.default_rng(0).random((3, 3, 3, 3), np.float32), np.ones((1, 1, 96, 96), np.float32)
    )
    np.savez(data, image=x)  # 288x288 pages: x0.45 = 129.6, which the model cannot run at
    args = ["resize", str(path), "--scale", "0.45", "--keep-interface", "--data", str(data), "-o", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["internal_size"] == [128, 128] and report["stride"] == [32, 32]
    assert "rounded" in report["rounded"] and report["agreement"]["samples"] == 3
    assert report["macs"]["ratio"] == pytest.approx((128 / 288) ** 2, rel=0.1)
    written = sio.load(out)
    (y,) = run_ort(written, {"image": x})
    assert y.shape == x[:, :1].shape
