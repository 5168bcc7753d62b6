"""A small functional ResNet for the 8x8 digits: the builder of studies/digits.yaml (`model.builder: digits_model:build`).

This is the shape every custom builder has: `build(params, input_shape)` returns an uncompiled
functional `keras.Model`; ablate compiles it from the study's `train.*` and passes `model.params`
as `params` (each key is a factor `model.params.NAME`). Layer names matter only for
`model.remove`: `blockN_add` are the shortcut merges `model.remove: auto` finds.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


def build(params: dict[str, Any], input_shape: tuple[int, ...]) -> keras.Model:
    """A stem convolution, `blocks` residual blocks of `filters` channels, global pooling, softmax over `classes`."""
    filters = int(params.get("filters", 16))
    blocks = int(params.get("blocks", 2))
    classes = int(params.get("classes", 10))
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name="stem")(inputs)
    for index in range(1, blocks + 1):
        y = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{index}_conv1")(x)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{index}_conv2")(y)
        x = layers.Add(name=f"block{index}_add")([x, y])  # the shortcut: x skips the two convolutions
        x = layers.Activation("relu", name=f"block{index}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(classes, activation="softmax", name="classes")(x)
    return keras.Model(inputs, outputs, name="digits_resnet")
