"""``onnxsqueeze distill``: a tiny end-to-end run, the cache on a rerun, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze.cli.app import app
from tests.distill.tiny import write_assets
from tests.helpers import run_ort

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["distill", *args])


def _common(tmp_path: Path) -> list[str]:
    teacher, train, val = write_assets(tmp_path)
    return [
        "--teacher", str(teacher), "--data", str(train), "--val", str(val),
        "--cache-dir", str(tmp_path / "cache"), "--epochs", "4", "--batch-size", "16",
    ]  # fmt: skip


def test_tiny_end_to_end_writes_a_verified_student_and_hits_the_cache_on_rerun(tmp_path: Path) -> None:
    args = _common(tmp_path)
    out = tmp_path / "student.onnx"
    result = _run(*args, "--student", "mlp", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["teacher_cache_hits"] == {"train": False, "val": False}
    assert report["export"]["max_abs"] <= 1e-4
    assert report["models"]["teacher"]["accuracy"] == 1.0  # labels are the teacher's argmax
    assert 0.0 <= report["models"]["student"]["accuracy"] <= 1.0
    assert len(report["training"]["history"]) == report["training"]["epochs_run"] <= 4
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    # how it was trained is in the sidecar manifest; the model keeps only the stamp
    assert json.loads(Path(f"{out}.manifest.json").read_text())["training"]["distill"]["student"] == "mlp"
    assert {p.key for p in model.metadata_props} == {"onnxsqueeze"}
    # dynamic batch: any number of samples runs
    for n in (1, 5):
        assert run_ort(model, {"input": np.zeros((n, 1, 8, 8), np.float32)})[0].shape == (n, 4)
    # provenance: the teacher is the source, the training data and the student spec are recorded
    assert report["manifest"] == str(out) + ".manifest.json"
    manifest = json.loads(Path(report["manifest"]).read_text())
    assert manifest["source"]["sha256"] == sio.sha256_file(args[1])
    assert manifest["export"]["kind"] == "distill" and manifest["export"]["student"] == "mlp"
    assert manifest["export"]["data"] == {
        args[3]: sio.sha256_file(args[3]),
        args[5]: sio.sha256_file(args[5]),
    }
    assert manifest["verification"]["max_abs"] == report["export"]["max_abs"]
    assert "torch" in manifest["libraries"] and mf.check(out) == []

    rerun = _run(*args, "--student", "mlp", "-o", str(tmp_path / "again.onnx"), "--json")
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["teacher_cache_hits"] == {"train": True, "val": True}
    # seeded: the rerun trains the same weights
    assert onnx.load(tmp_path / "again.onnx").graph.initializer == model.graph.initializer


def test_table_output_shows_teacher_and_student(tmp_path: Path) -> None:
    out = tmp_path / "s.onnx"
    result = _run(*_common(tmp_path), "--student", "sepconv:nosuchnet", "-o", str(out))
    assert result.exit_code == 2  # a bad inner spec is bad input too
    result = _run(*_common(tmp_path), "--student", "mlp", "-o", str(out), "--time-budget", "0.5")
    assert result.exit_code == 0, result.output
    for word in ("teacher", "student", "params", "MACs", "accuracy", "agreement", "latency", "wrote"):
        assert word in result.stdout


def test_bad_student_is_one_red_line_and_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "s.onnx"
    result = _run(*_common(tmp_path), "--student", "nosuchnet", "-o", str(out))
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --student 'nosuchnet': not a student in the catalog")
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "1.5"], "--alpha 1.5: must be in [0, 1]"),
        (["--temperature", "0"], "--temperature 0.0: must be positive"),
        (["--time-budget", "-1"], "-1.0 is not a finite number >= 0"),
        (["--time-budget", "nan"], "nan is not a finite number >= 0"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    result = _run(*_common(tmp_path), "--student", "mlp", "-o", str(tmp_path / "s.onnx"), *extra)
    assert result.exit_code == 2
    assert message in result.stderr


def test_missing_teacher_and_data(tmp_path: Path) -> None:
    teacher, train, _ = write_assets(tmp_path)
    out = str(tmp_path / "s.onnx")
    result = _run(
        "--teacher", str(tmp_path / "nope.onnx"), "--data", str(train), "--student", "mlp", "-o", out
    )
    assert result.exit_code == 2 and "nope.onnx: no such file" in result.stderr
    result = _run(
        "--teacher", str(teacher), "--data", str(tmp_path / "no.npz"), "--student", "mlp", "-o", out
    )
    assert result.exit_code == 2 and "no.npz: no such data file" in result.stderr


def test_refuses_to_overwrite_the_teacher(tmp_path: Path) -> None:
    teacher, train, _ = write_assets(tmp_path)
    before = teacher.read_bytes()
    result = _run("--teacher", str(teacher), "--data", str(train), "--student", "mlp", "-o", str(teacher))
    assert result.exit_code == 2 and "refusing to overwrite" in result.stderr
    assert teacher.read_bytes() == before
