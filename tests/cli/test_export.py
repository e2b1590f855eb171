"""``onnxsqueeze export triton|ort`` and ``inspect`` showing provenance, through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxsqueeze import manifest as mf
from onnxsqueeze.cli.app import app
from tests.export import models

pytest.importorskip("tritonclient.grpc.model_config_pb2")
runner = CliRunner()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return models.write(models.dynamic_fp32(), tmp_path, "tiny.onnx")


def test_triton_writes_a_repository(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    args = [
        "export",
        "triton",
        str(src),
        "--repo",
        str(repo),
        "--dynamic-batching",
        "--preferred-batch-sizes",
        "2,4",
    ]
    r = runner.invoke(app, [*args, "--max-queue-delay-us", "50", "--instances", "2", "--kind", "cpu"])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "version 1" in r.output and "max_queue_delay_microseconds: 50" in r.output
    assert (repo / "tiny" / "1" / "model.onnx").is_file()
    r = runner.invoke(
        app, [*args, "--max-queue-delay-us", "50", "--instances", "2", "--kind", "cpu", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["version"] == 2 and doc["config_written"] is False
    assert doc["manifest"]["file"]["name"] == "model.onnx"


def test_triton_refusals_are_one_line_with_exit_2(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    assert runner.invoke(app, ["export", "triton", str(src), "--repo", str(repo)]).exit_code == 0
    cases = [
        (["--version", "1"], "version 1 exists and is never overwritten"),
        (["--instances", "4"], "existing config differs in instance_group"),
        (["--fp16"], "needs --tensorrt"),
        (["--dynamic-batching", "--preferred-batch-sizes", "4,x"], "expected integers like 4,8"),
        (["--name", "a/b"], "Triton model name"),
    ]
    for extra, message in cases:
        r = runner.invoke(app, ["export", "triton", str(src), "--repo", str(repo), *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert message in r.stderr and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "triton", str(tmp_path / "nope.onnx"), "--repo", str(repo)])
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_triton_warns_when_warmup_is_impossible(tmp_path: Path):
    src = models.write(models.mixed(), tmp_path, "mixed.onnx")
    r = runner.invoke(app, ["export", "triton", str(src), "--repo", str(tmp_path / "repo")])
    assert r.exit_code == 0, r.output
    assert "no model_warmup" in r.stderr and "--input-shape" in r.stderr
    r = runner.invoke(
        app,
        [
            "export",
            "triton",
            str(src),
            "--repo",
            str(tmp_path / "r2"),
            "--input-shape",
            "ids:1,5",
            "--input-shape",
            "w:1,5",
        ],
    )
    assert r.exit_code == 0 and "model_warmup" in r.stdout


def test_ort_command(src: Path, tmp_path: Path):
    out = tmp_path / "tiny.ort"
    r = runner.invoke(app, ["export", "ort", str(src), "-o", str(out), "--optimization-level", "extended"])
    assert r.exit_code == 0, r.output
    assert "check passed (max rel <= 0.001)" in r.stdout and "level extended" in r.stdout
    r = runner.invoke(app, ["export", "ort", str(src), "--json"])  # default output: beside the model
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["path"] == str(src.with_suffix(".ort")) and doc["verification"]["passed"] is True
    assert Path(doc["manifest_path"]).is_file()


def test_ort_bad_input(src: Path, tmp_path: Path):
    r = runner.invoke(app, ["export", "ort", str(src), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code == 2 and "must end in .ort" in r.stderr
    r = runner.invoke(app, ["export", "ort", str(src), "--optimization-level", "max"])
    assert r.exit_code == 2 and "expected one of disable" in r.stderr
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    r = runner.invoke(app, ["export", "ort", str(garbage)])
    assert r.exit_code == 2 and "not an ONNX model" in r.stderr


def test_inspect_shows_provenance_and_tampering(src: Path, tmp_path: Path):
    repo = tmp_path / "repo"
    assert runner.invoke(app, ["export", "triton", str(src), "--repo", str(repo)]).exit_code == 0
    served = repo / "tiny" / "1" / "model.onnx"
    r = runner.invoke(app, ["inspect", str(served)])
    assert r.exit_code == 0, r.output
    assert "sidecar" in r.stdout and "hashes match" in r.stdout and "kind triton" in r.stdout
    doc = json.loads(runner.invoke(app, ["inspect", str(served), "--json"]).stdout)
    assert doc["manifest"]["problems"] == [] and doc["manifest"]["source"]["path"] == str(src)
    assert mf.MANIFEST_KEY not in doc["metadata"]
    side = mf.sidecar_path(served)
    side.write_text(side.read_text().replace(doc["manifest"]["file"]["sha256"], "0" * 64))
    r = runner.invoke(app, ["inspect", str(served)])
    assert r.exit_code == 0 and "sha256 differs from the sidecar" in r.stdout
    assert json.loads(runner.invoke(app, ["inspect", str(src), "--json"]).stdout)["manifest"] is None
