"""The incremental denoiser of the slides' diffusion exercise (its process, forward and reverse: `ablate.families.diffusion_process`)."""

from __future__ import annotations

import keras
from keras import layers

from ablate.models.unet import build_unet, unet_graph
from ablate.spec.run_config import DiffusionConfig, ModelConfig


def build_denoiser(
    model_cfg: ModelConfig, diffusion: DiffusionConfig, input_shape: tuple[int, int, int]
) -> keras.Model:
    """The U-Net mapping x_t to x_{t-1}; with `diffusion.conditioned`, a second input takes t.

    The conditioned model is a two-input functional model (image, step): t / T goes through a small
    MLP to one value per bottleneck channel, added to the bottleneck.
    """
    if not diffusion.conditioned:
        return build_unet(model_cfg, input_shape)
    image = keras.Input(shape=input_shape, name="noisy")
    step = keras.Input(shape=(1,), name="step")
    width = model_cfg.filters * 2**model_cfg.depth
    scaled = layers.Rescaling(1.0 / diffusion.steps, name="step_scaled")(step)
    embedding = layers.Dense(width, activation=model_cfg.activation, name="step_embed1")(scaled)
    embedding = layers.Dense(width, name="step_embed2")(embedding)
    return keras.Model([image, step], unet_graph(model_cfg, image, condition=embedding), name="unet_conditioned")
