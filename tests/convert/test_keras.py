"""from_keras: the layers users bring convert and verify; files, SavedModels, NCHW, errors.

TensorFlow is imported here: tf-marked, run in its own pytest session (``pytest -m tf``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from onnxsqueeze.convert import from_keras
from onnxsqueeze.errors import ConversionError, InputError
from tests.helpers import run_ort

pytestmark = [pytest.mark.tf, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # keras internals

# NOTE: TensorFlow is imported by the tests, never at collection: the non-TF session collects this
# file too, and TF loaded before torchvision crashes that process.
LAYER_NAMES = [
    "Conv2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "Conv2DTranspose",
    "BatchNormalization",
    "Dense",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Add (residual)",
    "Concatenate",
    "Dropout",
    "hard_swish",
    "PReLU",
    "ReLU6",
]


@pytest.fixture(scope="module")
def km() -> Any:
    """The Keras test models module (imports TensorFlow); skips when TF or tf2onnx is missing."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    pytest.importorskip("tf2onnx")
    from tests.convert import keras_models

    return keras_models


TOL = 1e-4  # fp32: TensorFlow CPU kernels (oneDNN) vs onnxruntime CPU kernels


def test_every_layer_case_is_parametrized(km: Any) -> None:
    assert set(LAYER_NAMES) == set(km.LAYERS)


def dims(values: object) -> list[list[int | str]]:
    return [[d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in values]  # type: ignore[attr-defined]


def ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_layer_converts_and_verifies(name: str, km: Any) -> None:
    build, expected_ops = km.LAYERS[name]
    model = km.single(build)
    result = from_keras(model)
    onnx.checker.check_model(result.model, full_check=True)
    assert result.exporter == "tf2onnx"
    assert result.passed and result.max_abs <= TOL, result.max_abs
    assert expected_ops <= ops(result.model), ops(result.model)
    assert dims(result.model.graph.input)[0] == ["batch", 16, 16, 3]
    assert dims(result.model.graph.output)[0][0] == "batch"
    assert result.report.inputs == {"image": (2, 16, 16, 3)}
    if name == "BatchNormalization":  # the BN after the conv was folded into it
        assert sum(n.op_type == "BatchNormalization" for n in result.model.graph.node) <= 1
    if name == "Dropout":  # inference: dropout is gone
        assert not {"Dropout", "RandomUniform", "RandomUniformLike"} & ops(result.model)


def test_output_matches_keras_at_another_batch(km: Any) -> None:
    model = km.single(km.LAYERS["SeparableConv2D"][0])
    result = from_keras(model)
    x = np.random.default_rng(5).standard_normal((5, 16, 16, 3)).astype(np.float32)
    (got,) = run_ort(result.model, {"image": x})
    np.testing.assert_allclose(got, model(x, training=False).numpy(), atol=TOL, rtol=0)


def test_nchw_folds_the_transposes(km: Any) -> None:
    model = km.mini_xception((32, 32, 3), classes=3)
    result = from_keras(model, nchw=True)
    assert dims(result.model.graph.input) == [["batch", 3, 32, 32]]
    assert "Transpose" not in ops(result.model)
    assert result.passed
    plain = from_keras(model)  # NHWC: one transpose into the NCHW convolutions remains
    assert "Transpose" in ops(plain.model)


def test_nchw_four_d_output_and_data(km: Any) -> None:
    model = km.single(km.LAYERS["Conv2DTranspose"][0])
    data = {"image": np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)}
    result = from_keras(model, nchw=True, data=data, data_label="x.npz")
    assert dims(result.model.graph.output) == [["batch", 4, 32, 32]]
    assert result.passed and result.report.source == "x.npz"
    (got,) = run_ort(result.model, data)
    want = model(data["image"].transpose(0, 2, 3, 1), training=False).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_static_batch_and_opset(km: Any) -> None:
    result = from_keras(
        km.single(km.LAYERS["Conv2D"][0]),
        dynamic_batch=False,
        opset=17,
        input_shapes={"image": (4, 16, 16, 3)},
    )
    assert result.opset == 17
    assert dims(result.model.graph.input) == [[4, 16, 16, 3]]


def test_two_inputs(km: Any) -> None:
    keras, L = km.keras, km.L
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((4,), name="meta")
    features = L.GlobalAveragePooling2D()(L.Conv2D(8, 3)(image))
    out = L.Dense(3, name="score")(L.Concatenate()([features, L.Dense(8, activation="relu")(meta)]))
    model = keras.Model([image, meta], out)
    result = from_keras(model, nchw=True, input_shapes={"image": (1, 3, 16, 16)})
    assert [
        (i.name, d) for i, d in zip(result.model.graph.input, dims(result.model.graph.input), strict=True)
    ] == [
        ("image", ["batch", 3, 16, 16]),
        ("meta", ["batch", 4]),
    ]
    assert result.passed and [o.name for o in result.model.graph.output] == ["score"]


def test_unknown_spatial_dims_need_a_shape(km: Any) -> None:
    keras, L = km.keras, km.L
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, 3), name="image")
    model = keras.Model(inp, L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(inp)))
    with pytest.raises(InputError, match="--input-shape image:N,N,N,3"):
        from_keras(model)
    result = from_keras(model, input_shapes={"image": (1, 20, 24, 3)})
    assert result.passed and result.report.inputs == {"image": (2, 20, 24, 3)}
    assert dims(result.model.graph.input)[0][0] == "batch"
    assert all(isinstance(d, str) for d in dims(result.model.graph.input)[0][1:3])  # H, W stay dynamic


def test_files_and_savedmodel(tmp_path: Path, km: Any) -> None:
    model = km.mini_xception((32, 32, 1), classes=3)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")  # Keras 3 writes the legacy HDF5 format for .h5
    model.export(tmp_path / "saved", verbose=False)
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 1)).astype(np.float32)
    want = model(x, training=False).numpy()
    for source in ("m.keras", "m.h5", "saved"):
        result = from_keras(tmp_path / source)
        assert result.passed, source
        (got,) = run_ort(result.model, {"image": x})
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert [o.name for o in from_keras(tmp_path / "m.keras").model.graph.output] == ["predictions"]


def test_unsupported_op_names_op_and_layer(km: Any) -> None:
    import tensorflow as tf

    keras, L = km.keras, km.L
    inp = keras.Input((4, 4), name="x")
    model = keras.Model(
        inp, L.Lambda(lambda t: tf.linalg.svd(t, compute_uv=False), name="singular_values")(inp)
    )
    with pytest.raises(ConversionError, match="'Svd' in layer 'singular_values'"):
        from_keras(model)


def test_bad_sources(tmp_path: Path, km: Any) -> None:
    with pytest.raises(InputError, match="no such file"):
        from_keras(tmp_path / "missing.keras")
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="cannot load the Keras model"):
        from_keras(tmp_path / "garbage.h5")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="not a TensorFlow SavedModel"):
        from_keras(tmp_path / "folder")
