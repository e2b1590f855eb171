"""The ``convert`` command on PyTorch sources: what it prints, writes, refuses, and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from onnxsqueeze import io as sio  # noqa: E402
from onnxsqueeze import manifest as mf  # noqa: E402
from onnxsqueeze.cli.app import app  # noqa: E402
from tests.convert.factories import tiny_cnn  # noqa: E402

runner = CliRunner()
TINY = "tests.convert.factories:tiny_cnn"


def invoke(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["convert", *map(str, args)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    torch.save(tiny_cnn().state_dict(), path)
    return path


def test_factory_and_weights(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    code, text = invoke(
        "--factory", TINY, "--weights", weights, "--input-shape", "image:1,3,16,16", "-o", out
    )
    assert code == 0, text
    assert "torch.onnx (dynamo)" in text and "within tolerance 0.0001" in text and "wrote" in text
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].name == "image"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert "cleanup" in [s["pass"] for s in json.loads(Path(f"{out}.manifest.json").read_text())["recipe"]]
    # the weights can also be the positional SOURCE
    code, text = invoke(
        weights, "--factory", TINY, "--input-shape", "image:1,3,16,16", "-o", tmp_path / "b.onnx"
    )
    assert code == 0, text


def test_opset_fallback_is_reported_once(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "o17.onnx"
    code, text = invoke(
        "--factory", TINY, "--weights", weights, "--input-shape", "x:1,3,16,16", "--opset", "17", "-o", out
    )
    assert code == 0, text
    assert text.count("used the TorchScript exporter instead") == 1 and "UserWarning" not in text
    assert "torch.onnx (torchscript), opset 17" in text
    assert onnx.load(out).opset_import[0].version == 17


def test_json_and_data(weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "x.npz"
    np.savez(data, image=np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "tiny.onnx"
    result = runner.invoke(
        app,
        [
            "convert",
            "--factory",
            TINY,
            "--weights",
            str(weights),
            "--data",
            str(data),
            "--json",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["passed"] and doc["max_abs"] <= 1e-4 and doc["output"] == str(out)
    assert doc["verify"]["inputs"] == {"image": [3, 3, 16, 16]} and doc["verify"]["source"] == str(data)
    # provenance: the weights are the source; exporter, factory and torch recorded; hashes match
    manifest = json.loads(Path(doc["manifest"]).read_text())
    assert doc["manifest"] == str(mf.sidecar_path(out)) and mf.check(out) == []
    assert manifest["source"]["sha256"] == sio.sha256_file(weights)
    assert manifest["export"] == {"kind": "convert", "exporter": doc["exporter"], "factory": TINY}
    assert manifest["verification"]["max_abs"] == doc["max_abs"] and "torch" in manifest["libraries"]
    assert mf.embedded(onnx.load(out))["origin_sha256"] == manifest["origin_sha256"]  # the stamp


def test_pickled_module_refused_then_trusted(tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save(tiny_cnn(), full)
    out = tmp_path / "m.onnx"
    code, text = invoke(full, "--input-shape", "x:1,3,16,16", "-o", out)
    assert code == 2
    assert "arbitrary code" in text and "--trust-pickle" in text and "Traceback" not in text
    assert not out.exists()
    code, text = invoke(full, "--trust-pickle", "--input-shape", "x:1,3,16,16", "-o", out)
    assert code == 0, text
    assert out.exists()


def test_exported_program_needs_no_shapes(tmp_path: Path) -> None:
    net = tiny_cnn()
    ep = torch.export.export(net, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("n")},))
    torch.export.save(ep, tmp_path / "m.pt2")
    code, text = invoke(tmp_path / "m.pt2", "-o", tmp_path / "m.onnx")
    assert code == 0, text
    assert "within tolerance" in text and "[batch, 3, 16, 16]" in text


def test_verification_failure_writes_nothing_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "noisy.onnx"
    code, text = invoke("--factory", "tests.convert.factories:noisy", "--input-shape", "x:2,4", "-o", out)
    assert code == 1
    assert "exceeds tolerance" in text and "nothing written" in text
    assert not out.exists() and not mf.sidecar_path(out).exists()
    code, text = invoke(
        "--factory", "tests.convert.factories:noisy", "--input-shape", "x:2,4", "--force", "-o", out
    )
    assert code == 0 and "written anyway" in text
    assert out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--factory", TINY, "-o", "{tmp}/a.onnx"], "--input-shape"),
        (["{weights}", "--input-shape", "x:1,3,16,16", "-o", "{tmp}/a.onnx"], "state_dict"),
        (
            ["{weights}", "--factory", TINY, "--weights", "{weights}", "-o", "{tmp}/a.onnx"],
            "give the weights once",
        ),
        (["--factory", "no.such.module:f", "--input-shape", "x:1,2", "-o", "{tmp}/a.onnx"], "cannot import"),
        (["--factory", TINY, "--nchw", "--input-shape", "x:1,3,16,16", "-o", "{tmp}/a.onnx"], "--nchw"),
        (["{tmp}/missing.pt", "-o", "{tmp}/a.onnx"], "no such file"),
        (
            ["--factory", TINY, "--input-shape", "x:1,3,16,16", "--dynamic-axis", "x", "-o", "{tmp}/a.onnx"],
            "NAME:AXIS",
        ),
        (
            [
                "--factory",
                TINY,
                "--input-shape",
                "x:1,3,16,16",
                "--dynamic-axis",
                "y:1",
                "-o",
                "{tmp}/a.onnx",
            ],
            "dynamic axis for 'y'",
        ),
        (["{tmp}/notes.txt", "-o", "{tmp}/a.onnx"], "unknown model format"),
        (["{weights}", "--factory", TINY, "--input-shape", "x:1,3,16,16", "-o", "{weights}"], "overwrite"),
        (["--factory", TINY, "--input-shape", "x:1,3,16", "-o", "{tmp}/a.onnx"], "fails on the example"),
    ],
)
def test_bad_input(args: list[str], message: str, weights: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    before = weights.read_bytes()
    code, text = invoke(*[a.format(tmp=tmp_path, weights=weights) for a in args])
    assert code == 2, text
    assert message in text and "Traceback" not in text
    assert not (tmp_path / "a.onnx").exists()
    assert weights.read_bytes() == before


def test_missing_tensorflow_gives_a_one_line_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = tmp_path / "m.keras"
    path.write_bytes(b"PK")  # never read: the import fails first
    for name in ("tensorflow", "keras", "tf2onnx"):
        monkeypatch.setitem(sys.modules, name, None)
    code, text = invoke(path, "-o", tmp_path / "m.onnx")
    assert code == 2
    assert "pip install 'onnxsqueeze[tf]'" in text and "Traceback" not in text
