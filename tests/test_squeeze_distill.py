"""Distillation as a squeeze candidate (issue 9's last bullet) on a tiny MLP teacher: offered only
with training data, trained once and cached, combined with int8, and replayed by ``apply`` on the
student stored beside the recipe (the recipe's base model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from onnxsqueeze import io as sio
from onnxsqueeze import recipe as rcp
from onnxsqueeze.cli.app import app
from tests.helpers import model_from_text, rand, run_ort

runner = CliRunner()

TEACHER = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N, 1, 8, 8] input) => (float[N, 4] logits) {
    flat = Flatten <axis = 1> (input)
    h = Gemm (flat, W1, B1)
    r = Relu (h)
    logits = Gemm (r, W2, B2)
}
"""


@pytest.fixture
def assets(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A 17k-parameter teacher (cnn4 has ~4k), training and evaluation data it labels itself."""
    model = model_from_text(
        TEACHER,
        {
            "W1": rand((64, 256), 1, scale=0.2),
            "B1": rand((256,), 2, 0.1),
            "W2": rand((256, 4), 3, 0.2),
            "B2": rand((4,), 4, 0.1),
        },
    )
    x = rand((160, 1, 8, 8), 5)
    y = run_ort(model, {"input": x})[0].argmax(1).astype(np.int64)
    teacher, train, val = tmp_path / "teacher.onnx", tmp_path / "train.npz", tmp_path / "val.npz"
    sio.save(model, teacher)
    sio.save_npz(train, {"input": x[:128], "labels": y[:128]})
    sio.save_npz(val, {"input": x[128:], "labels": y[128:]})
    return teacher, train, val


def squeeze(teacher: Path, train: Path | None, val: Path, out: Path, techniques: str = "distill,int8"):
    args = ["squeeze", str(teacher), "--data", str(val), "-o", str(out), "--max-drop", "100"]
    args += ["--objective", "size", "--techniques", techniques, "--latency-seconds", "0.02"]
    if train is not None:
        args += ["--train-data", str(train), "--distill-students", "cnn4", "--distill-minutes", "0.1"]
    return runner.invoke(app, args)


def test_distill_is_offered_only_with_training_data(assets, tmp_path):
    teacher, _, val = assets
    r = squeeze(teacher, None, val, tmp_path / "out", techniques="int8")
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["not_offered"]["distill"] == "no training data (--train-data)"
    assert "distill" not in results["knobs"] and results["students"] == {}


def test_distilled_student_is_combined_cached_and_replayed(assets, tmp_path):
    teacher, train, val = assets
    out = tmp_path / "out"
    r = squeeze(teacher, train, val, out)
    assert r.exit_code == 0, r.output
    results = json.loads((out / "results.json").read_text())
    labels = [p["label"] for p in results["points"]]
    assert "distill -> cnn4" in labels
    assert "distill -> cnn4 + int8 static" in labels  # the student goes through the graph passes
    # the calibration defaults to the training data, so the evaluation data stay unseen
    assert results["calibration"]["data"] == str(train.resolve())
    best = results["best"]
    assert best["settings"].get("distill") == "cnn4"  # 4x fewer parameters: the smallest file
    student = results["students"]["cnn4"]
    assert student["param_reduction"] > 3 and student["sha256"] == sio.sha256_file(
        out / "teacher.student.onnx"
    )
    assert "Distilled students" in (out / "report.md").read_text()

    # the recipe names the student as its base model, by hash, next to it
    recipe = rcp.load(out / "recipe.toml")
    assert recipe.source_sha256 == sio.sha256_file(teacher)
    assert recipe.base is not None and recipe.base.path == "teacher.student.onnx"
    assert recipe.base.sha256 == student["sha256"] and recipe.base.student == "cnn4"
    assert "distill" not in {s.pass_name for s in recipe.steps}  # not a pass: the base model
    rebuilt = tmp_path / "rebuilt.onnx"
    r = runner.invoke(app, ["apply", str(out / "recipe.toml"), str(teacher), "-o", str(rebuilt)])
    assert r.exit_code == 0, r.output
    assert sio.sha256_file(rebuilt) == best["sha256"]  # byte for byte
    onnx.checker.check_model(onnx.load(rebuilt))

    # a rerun trains nothing and measures nothing
    again = squeeze(teacher, train, val, out)
    assert again.exit_code == 0, again.output
    cached = json.loads((out / "results.json").read_text())
    assert cached["evaluations"] == 0 and cached["best"]["sha256"] == best["sha256"]
    assert cached["students"]["cnn4"]["sha256"] == student["sha256"]


def test_apply_refuses_a_changed_or_missing_base_model(assets, tmp_path):
    teacher, train, val = assets
    out = tmp_path / "out"
    assert squeeze(teacher, train, val, out, techniques="distill").exit_code == 0
    student = out / "teacher.student.onnx"
    other = tmp_path / "other.onnx"
    other.write_bytes(student.read_bytes() + b"\n")  # same model? not the same bytes
    args = ["apply", str(out / "recipe.toml"), str(teacher), "-o", str(tmp_path / "r.onnx")]
    r = runner.invoke(app, [*args, "--base", str(other)])
    assert r.exit_code == 2 and "differs from the recipe's base" in r.output
    student.unlink()
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "base model (distill -> cnn4) is missing" in r.output


def test_apply_base_without_a_base_in_the_recipe_is_bad_input(assets, tmp_path):
    teacher, _, val = assets
    out = tmp_path / "out"
    assert squeeze(teacher, None, val, out, techniques="int8").exit_code == 0
    args = ["apply", str(out / "recipe.toml"), str(teacher), "-o", str(tmp_path / "r.onnx")]
    r = runner.invoke(app, [*args, "--base", str(teacher)])
    assert r.exit_code == 2 and "the recipe has no [base] model" in r.output
