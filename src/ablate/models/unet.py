"""The U-Net-style denoising autoencoder of the slides, with switchable skips and residual stages."""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from ablate.spec.run_config import ModelConfig

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
    return keras.Model(inputs, unet_graph(cfg, inputs), name=f"unet_{cfg.skip}")


def unet_graph(
    cfg: ModelConfig, inputs: keras.KerasTensor, condition: keras.KerasTensor | None = None
) -> keras.KerasTensor:
    """The U-Net's output tensor for `inputs`; `condition` (batch, C) is added to the bottleneck.

    Args:
        cfg: the model settings.
        inputs: the image input.
        condition: an optional per-sample vector with `filters * 2**depth` channels (e.g. an
            embedding of the diffusion step), broadcast over the bottleneck's height and width.
    """
    x = inputs
    input_shape = tuple(inputs.shape[1:])
    encoder_maps = []
    for stage in range(cfg.depth):
        x = _stage(cfg, cfg.filters * 2**stage, f"enc{stage + 1}")(x)
        encoder_maps.append(x)
        x = layers.MaxPooling2D(pool_size=2, name=f"enc{stage + 1}_pool")(x)
    x = _stage(cfg, cfg.filters * 2**cfg.depth, "bottleneck")(x)
    if condition is not None:
        x = layers.Add(name="bottleneck_condition")([x, layers.Reshape((1, 1, -1), name="condition_map")(condition)])
    for stage in reversed(range(cfg.depth)):
        width = cfg.filters * 2**stage
        name = f"dec{stage + 1}"
        x = _stage(cfg, width, name)(x)
        x = _upsample(cfg, width, name)(x)
        x = _merge(cfg.skip, f"{name}_skip")(x, encoder_maps[stage])
    return layers.Conv2D(
        input_shape[-1], cfg.kernel_size, padding="same", activation="sigmoid", name="reconstruction"
    )(x)


def _stage(cfg: ModelConfig, width: int, name: str) -> Block:
    """One stage at `width` channels: a convolution, residual blocks, or an inception block."""

    def apply(x: keras.KerasTensor) -> keras.KerasTensor:
        if cfg.block == "residual":
            for block in range(cfg.residual_blocks):
                x = _residual_block(cfg, width, f"{name}_res{block + 1}")(x)
        elif cfg.block == "inception":
            x = _inception_block(cfg, width, f"{name}_inc")(x)
        else:
            x = layers.Conv2D(width, cfg.kernel_size, padding="same", name=f"{name}_conv")(x)
            x = _normalise(cfg, name)(x)
            x = layers.Activation(cfg.activation, name=f"{name}_act")(x)
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"{name}_dropout")(x)
        return x

    return apply


def _normalise(cfg: ModelConfig, name: str) -> Block:
    """BatchNormalization when the config asks for it, else the identity."""
    if cfg.batch_norm:
        return layers.BatchNormalization(name=f"{name}_bn")
    return lambda x: x


def _inception_block(cfg: ModelConfig, width: int, name: str) -> Block:
    """Parallel 1x1, 3x3, 5x5 convolutions and a 3x3 max-pool + 1x1 branch, concatenated.

    The four branches share `width` (a quarter each, the first taking the remainder), so the block
    outputs `width` channels like a plain stage.
    """

    def apply(x: keras.KerasTensor) -> keras.KerasTensor:
        quarter = max(width // 4, 1)
        first = max(width - 3 * quarter, 1)
        conv = lambda filters, size, tag: layers.Conv2D(  # noqa: E731 - a local shorthand
            filters, size, padding="same", activation=cfg.activation, name=f"{name}_{tag}"
        )
        branches = [
            conv(first, 1, "1x1")(x),
            conv(quarter, 3, "3x3")(conv(quarter, 1, "3x3_reduce")(x)),
            conv(quarter, 5, "5x5")(conv(quarter, 1, "5x5_reduce")(x)),
            conv(quarter, 1, "pool_proj")(layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)),
        ]
        y = layers.Concatenate(axis=-1, name=f"{name}_concat")(branches)
        return _normalise(cfg, name)(y)

    return apply


def _residual_block(cfg: ModelConfig, width: int, name: str) -> Block:
    """`act(F(x) + shortcut(x))`, F two convolutions; the shortcut projects with a 1x1 conv if needed."""

    def apply(x: keras.KerasTensor) -> keras.KerasTensor:
        shortcut = x
        if x.shape[-1] != width:
            shortcut = layers.Conv2D(width, 1, padding="same", name=f"{name}_proj")(x)
        y = layers.Conv2D(width, cfg.kernel_size, padding="same", name=f"{name}_conv1")(x)
        y = layers.Activation(cfg.activation, name=f"{name}_act1")(_normalise(cfg, f"{name}_1")(y))
        y = layers.Conv2D(width, cfg.kernel_size, padding="same", name=f"{name}_conv2")(y)
        y = _normalise(cfg, f"{name}_2")(y)
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
