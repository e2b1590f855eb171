"""A mini-Xception (the FER-2013 classifier's architecture) through the CLI from every Keras format.

Seeded weights with non-trivial BatchNormalization statistics: there is no pretrained Keras model
in the installed wheels, and nothing may be downloaded. Formats: ``.keras``; ``.h5`` as Keras 3
writes it (legacy HDF5); ``.h5`` in the Keras 2 layout (tf.keras 2.15: Keras 2 JSON schema,
``kernel:0`` weight names), which must load under Keras 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from onnxsqueeze.cli.app import app
from tests.helpers import run_ort

# NOTE: TensorFlow is imported by the fixture, never at collection (TF before torchvision crashes).
pytestmark = [pytest.mark.tf, pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
runner = CliRunner()


@pytest.fixture(scope="module")
def xception(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from tests.convert.keras_models import mini_xception, save_as_keras2_h5

    folder = tmp_path_factory.mktemp("xception")
    model = mini_xception((48, 48, 1), classes=7)
    model.save(folder / "mini_xception.keras")
    model.save(folder / "mini_xception.h5")
    save_as_keras2_h5(model, folder / "mini_xception_keras2.h5")
    return model, folder


@pytest.mark.parametrize(
    ("file", "nchw"),
    [("mini_xception.keras", False), ("mini_xception.h5", True), ("mini_xception_keras2.h5", False)],
)
def test_mini_xception(xception: tuple[Any, Path], file: str, nchw: bool, tmp_path: Path) -> None:
    import h5py

    model, folder = xception
    if file.endswith("keras2.h5"):
        with h5py.File(folder / file) as f:
            assert f.attrs["keras_version"] in (b"2.15.0", "2.15.0")
    out = tmp_path / "fer.onnx"
    args = ["convert", str(folder / file), "-o", str(out), *(["--nchw"] if nchw else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "with tf2onnx" in result.output and "within tolerance 0.0001" in result.output
    onnx_model = onnx.load(out)
    onnx.checker.check_model(onnx_model, full_check=True)
    ops = [n.op_type for n in onnx_model.graph.node]
    assert "BatchNormalization" not in ops  # every BN follows a conv: all folded
    assert ops.count("Add") >= 4  # the residual joins
    assert "GlobalAveragePool" in ops
    x = np.random.default_rng(3).standard_normal((8, 48, 48, 1)).astype(np.float32)
    want = model(x, training=False).numpy()
    (got,) = run_ort(onnx_model, {"image": x.transpose(0, 3, 1, 2) if nchw else x})
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert (got.argmax(1) == want.argmax(1)).all()
