"""Small seeded Keras models for the converter tests (imports TensorFlow: tf tests only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

L = keras.layers


# The layers users bring, each in a model of its own, with the ONNX ops it must become.
LAYERS: dict[str, tuple[Callable[[Any], Any], set[str]]] = {
    "Conv2D": (lambda x: L.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x), {"Conv"}),
    "DepthwiseConv2D": (lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, padding="valid")(x), {"Conv"}),
    "SeparableConv2D": (lambda x: L.SeparableConv2D(8, 3, padding="same")(x), {"Conv"}),
    "Conv2DTranspose": (lambda x: L.Conv2DTranspose(4, 3, strides=2, padding="same")(x), {"ConvTranspose"}),
    # BN after a conv folds into it; BN on the input has no conv to fold into and stays a BN or Mul/Add
    "BatchNormalization": (
        lambda x: L.BatchNormalization()(L.Conv2D(6, 3)(L.BatchNormalization()(x))),
        {"Conv"},
    ),
    "Dense": (lambda x: L.Dense(5, activation="tanh")(L.Flatten()(x)), {"MatMul"}),
    "MaxPooling2D": (lambda x: L.MaxPooling2D(2)(x), {"MaxPool"}),
    "AveragePooling2D": (lambda x: L.AveragePooling2D(3, strides=2, padding="same")(x), {"AveragePool"}),
    "GlobalAveragePooling2D": (
        lambda x: L.GlobalAveragePooling2D()(L.Conv2D(4, 1)(x)),
        {"GlobalAveragePool"},
    ),
    "GlobalMaxPooling2D": (lambda x: L.GlobalMaxPooling2D()(x), {"ReduceMax"}),
    "Add (residual)": (lambda x: L.Add()([x, L.Conv2D(3, 3, padding="same")(x)]), {"Add"}),
    "Concatenate": (lambda x: L.Concatenate()([x, L.Conv2D(2, 1)(x)]), {"Concat"}),
    "Dropout": (lambda x: L.Dense(4)(L.Dropout(0.5)(L.Flatten()(x))), set()),
    "hard_swish": (lambda x: L.Activation("hard_swish")(x), set()),
    "PReLU": (lambda x: L.PReLU(shared_axes=[1, 2])(L.Conv2D(4, 1)(x)), set()),
    "ReLU6": (lambda x: L.ReLU(max_value=6.0)(x), set()),
}


def randomize_bn(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give every BatchNormalization non-trivial statistics, so folding it is really tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.uniform(-0.2, 0.2, beta.shape).astype(np.float32),
                    rng.uniform(-0.5, 0.5, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 2.0, var.shape).astype(np.float32),
                ]
            )
    return model


def single(
    layer_fn: Callable[[object], object], shape: tuple[int, ...] = (16, 16, 3), seed: int = 0
) -> keras.Model:
    """A model of only the layer under test (and what it needs), seeded, with random BN statistics."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape, name="image")
    return randomize_bn(keras.Model(inp, layer_fn(inp)), seed)


def mini_xception(
    input_shape: tuple[int, int, int] = (48, 48, 1), classes: int = 7, seed: int = 0
) -> keras.Model:
    """A mini-Xception (Arriaga et al. 2017, the FER classifier): separable-conv residual blocks.

    Conv-BN-ReLU stem, four residual modules (SeparableConv2D-BN-ReLU-SeparableConv2D-BN-MaxPool
    with a strided 1x1 Conv-BN shortcut, joined by Add), a 3x3 conv to the classes, global average
    pooling and softmax.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input(input_shape, name="image")
    x = L.Conv2D(8, 3, use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(8, 3, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    for filters in (16, 32, 64, 128):
        shortcut = L.Conv2D(filters, 1, strides=2, padding="same", use_bias=False)(x)
        shortcut = L.BatchNormalization()(shortcut)
        x = L.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        x = L.MaxPooling2D(3, strides=2, padding="same")(x)
        x = L.Add()([x, shortcut])
    x = L.Conv2D(classes, 3, padding="same")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Activation("softmax", name="predictions")(x)
    return randomize_bn(keras.Model(inp, out, name="mini_xception"), seed)


def _histories(obj: object) -> list[list[object]]:
    """The ``keras_history`` ([layer, node, tensor]) of every Keras tensor in a Keras 3 node config."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return [list(obj["config"]["keras_history"])]
        return [h for v in obj.values() for h in _histories(v)]
    if isinstance(obj, (list, tuple)):
        return [h for v in obj for h in _histories(v)]
    return []


KERAS2_INIT_KEYS = {
    "seed",
    "mean",
    "stddev",
    "minval",
    "maxval",
    "value",
    "scale",
    "mode",
    "distribution",
    "gain",
}


def _keras2_layer_config(config: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        if key == "dtype":
            out[key] = "float32"  # Keras 2 stored the dtype as a string, not a DTypePolicy
        elif isinstance(value, dict) and "class_name" in value:  # an initializer: Keras 2's keys only
            inner = {k: v for k, v in value.get("config", {}).items() if k in KERAS2_INIT_KEYS}
            out[key] = {"class_name": value["class_name"], "config": inner}
        else:
            out[key] = value
    return out


def save_as_keras2_h5(model: keras.Model, path: object, keras_version: str = "2.15.0") -> None:
    """Write ``model`` as Keras 2 (tf.keras <= 2.15) wrote ``model.save('x.h5')``.

    The Keras 2 layout, which Keras 3 writes differently: the model config in the Keras 2 JSON
    schema (``batch_input_shape``, string dtypes, ``inbound_nodes`` as nested
    ``[[layer, node, tensor, kwargs]]`` lists, no ``module``/``registered_name``), the
    ``keras_version`` attribute ``2.x``, and weights named ``<layer>/<weight>:0``. Only for
    single-node functional models of built-in layers (the test models).
    """
    import json

    import h5py

    layers = []
    for entry in model.get_config()["layers"]:
        name = entry["config"]["name"]
        if entry["class_name"] == "InputLayer":
            shape = entry["config"].get("batch_shape") or entry["config"]["batch_input_shape"]
            config = {"batch_input_shape": list(shape), "dtype": "float32", "sparse": False, "ragged": False}
            layers.append(
                {
                    "class_name": "InputLayer",
                    "config": {**config, "name": name},
                    "name": name,
                    "inbound_nodes": [],
                }
            )
            continue
        nodes = [[[*h, {}] for h in _histories(node)] for node in entry["inbound_nodes"]]
        layers.append(
            {
                "class_name": entry["class_name"],
                "config": _keras2_layer_config(entry["config"]),
                "name": name,
                "inbound_nodes": nodes,
            }
        )
    model_config = {
        "class_name": "Functional",
        "config": {
            "name": model.name,
            "trainable": True,
            "layers": layers,
            "input_layers": [[t.name.split(":")[0], 0, 0] for t in model.inputs],
            "output_layers": [[name, 0, 0] for name in model.output_names],
        },
    }
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = keras_version.encode()
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps(model_config).encode()
        group = f.create_group("model_weights")
        group.attrs["keras_version"] = keras_version.encode()
        group.attrs["backend"] = b"tensorflow"
        group.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            g = group.create_group(layer.name)
            names = [f"{layer.name}/{w.path.split('/')[-1]}:0" for w in layer.weights]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, value in zip(names, layer.get_weights(), strict=True):
                g.create_dataset(n, data=value)
