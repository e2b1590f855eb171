"""Small seeded Keras models for the converter tests (imports TensorFlow: tf tests only)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

L = keras.layers


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
