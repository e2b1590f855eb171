"""The ``convert`` command on Keras/TensorFlow sources (TensorFlow imported: tf-marked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxsqueeze import io as sio
from onnxsqueeze import manifest as mf
from onnxsqueeze.cli.app import app

# NOTE: TensorFlow is imported by fixtures, never at collection (TF before torchvision crashes).
pytestmark = [pytest.mark.tf, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # keras internals
runner = CliRunner()


@pytest.fixture(scope="module")
def km() -> Any:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from tests.convert import keras_models

    return keras_models


@pytest.fixture(scope="module")
def h5(tmp_path_factory: pytest.TempPathFactory, km: Any) -> Path:
    path = tmp_path_factory.mktemp("k") / "small.h5"
    L = km.L
    km.single(lambda x: L.GlobalAveragePooling2D()(L.BatchNormalization()(L.Conv2D(4, 3)(x)))).save(path)
    return path


def test_h5_to_nchw_onnx(h5: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.onnx"
    result = runner.invoke(app, ["convert", str(h5), "--nchw", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"converted {h5} with tf2onnx" in result.output and "within tolerance" in result.output
    model = onnx.load(out)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 16, 16]
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded into the Conv


def test_json_with_data_and_static_batch(h5: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, image=np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype(np.float32))
    args = ["convert", str(h5), "--data", str(data), "--static-batch", "--opset", "17", "--json"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "s.onnx")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["opset"] == 17 and doc["inputs"][0]["shape"] == [1, 16, 16, 3]
    assert doc["verify"]["samples"] == 4 and doc["passed"]
    manifest = mf.read(tmp_path / "s.onnx")
    assert manifest is not None and manifest["source"]["sha256"] == sio.sha256_file(h5)
    assert manifest["export"]["exporter"] == "tf2onnx" and "tf2onnx" in manifest["libraries"]
    assert "torch" not in manifest["libraries"] and mf.check(tmp_path / "s.onnx") == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--factory", "x:y"], "PyTorch models only"),
        (["--trust-pickle"], "PyTorch models only"),
        (["--input-shape", "nope:1,2"], "--input-shape names 'nope'"),
    ],
)
def test_bad_input(h5: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["convert", str(h5), *extra, "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.onnx").exists()


def test_lambda_layer_refused_by_keras_safe_mode(tmp_path: Path, km: Any) -> None:
    import tensorflow as tf

    keras, L = km.keras, km.L
    inp = keras.Input((4, 4), name="x")
    out = L.Lambda(lambda t: tf.linalg.svd(t, compute_uv=False), output_shape=(4,), name="singular_values")(
        inp
    )
    path = tmp_path / "svd.keras"
    keras.Model(inp, out).save(path)
    # loading a Lambda layer runs its (pickled) code: Keras' safe_mode refuses it
    result = runner.invoke(app, ["convert", str(path), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert "safe_mode" in result.output or "Lambda" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.onnx").exists()


def test_savedmodel_folder_is_hashed_as_the_source(tmp_path: Path, km: Any) -> None:
    L = km.L
    km.single(lambda x: L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(x))).export(
        tmp_path / "saved", verbose=False
    )
    out = tmp_path / "saved.onnx"
    result = runner.invoke(app, ["convert", str(tmp_path / "saved"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = mf.read(out)
    assert manifest is not None and manifest["source"]["path"] == str(tmp_path / "saved")
    assert len(manifest["source"]["sha256"]) == 64 and "bytes" not in manifest["source"]  # a folder
    assert mf.check(out) == []
