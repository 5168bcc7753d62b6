"""The U-Net-style denoising autoencoder of the slides, with switchable skips and residual stages."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from ablate.config import ModelConfig

Block = Callable[[keras.KerasTensor], keras.KerasTensor]


def build_unet(cfg: ModelConfig, input_shape: tuple[int, int, int]) -> keras.Model:
    """Build the encoder-decoder of the slides with the functional API.

    With `depth=2, filters=64, skip="concat"` this is the slides' exercise solution: Conv2D(64) ->
    pool -> Conv2D(128) -> pool -> Conv2D(256) -> Conv2D(128) -> up -> concat(encoder 14x14) ->
    Conv2D(64) -> up -> concat(encoder 28x28) -> Conv2D(1, sigmoid).

    Args:
        cfg: the model settings.
        input_shape: (height, width, channels) of one image.

    Returns:
        An uncompiled `keras.Model` mapping noisy images to reconstructions in [0, 1].
    """
    inputs = keras.Input(shape=input_shape, name="noisy")
    x = inputs
    encoder_maps = []
    for stage in range(cfg.depth):
        x = _stage(cfg, cfg.filters * 2**stage, f"enc{stage + 1}")(x)
        encoder_maps.append(x)
        x = layers.MaxPooling2D(pool_size=2, name=f"enc{stage + 1}_pool")(x)
    x = _stage(cfg, cfg.filters * 2**cfg.depth, "bottleneck")(x)
    for stage in reversed(range(cfg.depth)):
        width = cfg.filters * 2**stage
        name = f"dec{stage + 1}"
        x = _stage(cfg, width, name)(x)
        x = _upsample(cfg, width, name)(x)
        x = _merge(cfg.skip, f"{name}_skip")(x, encoder_maps[stage])
    outputs = layers.Conv2D(
        input_shape[-1], cfg.kernel_size, padding="same", activation="sigmoid", name="reconstruction"
    )(x)
    return keras.Model(inputs, outputs, name=f"unet_{cfg.skip}")


def _stage(cfg: ModelConfig, width: int, name: str) -> Block:
    """One convolution, or `residual_blocks` residual blocks when that is above zero."""

    def apply(x: keras.KerasTensor) -> keras.KerasTensor:
        if cfg.residual_blocks == 0:
            return layers.Conv2D(width, cfg.kernel_size, padding="same", activation=cfg.activation, name=f"{name}_conv")(x)
        for block in range(cfg.residual_blocks):
            x = _residual_block(cfg, width, f"{name}_res{block + 1}")(x)
        return x

    return apply


def _residual_block(cfg: ModelConfig, width: int, name: str) -> Block:
    """`act(F(x) + shortcut(x))`, F two convolutions; the shortcut projects with a 1x1 conv if needed."""

    def apply(x: keras.KerasTensor) -> keras.KerasTensor:
        shortcut = x
        if x.shape[-1] != width:
            shortcut = layers.Conv2D(width, 1, padding="same", name=f"{name}_proj")(x)
        y = layers.Conv2D(width, cfg.kernel_size, padding="same", activation=cfg.activation, name=f"{name}_conv1")(x)
        y = layers.Conv2D(width, cfg.kernel_size, padding="same", name=f"{name}_conv2")(y)
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return layers.Activation(cfg.activation, name=f"{name}_act")(y)

    return apply


def _upsample(cfg: ModelConfig, width: int, name: str) -> Block:
    if cfg.upsampling == "transpose":
        return layers.Conv2DTranspose(width, 2, strides=2, padding="same", name=f"{name}_up")
    return layers.UpSampling2D(size=2, name=f"{name}_up")


def _merge(skip: str, name: str) -> Callable[[keras.KerasTensor, keras.KerasTensor], keras.KerasTensor]:
    """How the decoder meets the encoder map of the same size: not at all, concatenated, or added."""

    def apply(decoded: keras.KerasTensor, encoded: keras.KerasTensor) -> keras.KerasTensor:
        if skip == "concat":
            # Channels last: the concat doubles the channel axis (14x14x128 + 14x14x128 -> 14x14x256).
            return layers.Concatenate(axis=-1, name=name)([decoded, encoded])
        if skip == "add":
            return layers.Add(name=name)([decoded, encoded])
        return decoded

    return apply
