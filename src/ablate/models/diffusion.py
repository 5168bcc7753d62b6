"""The incremental denoiser of the slides' diffusion exercise, and the reverse chain that uses it."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from ablate.config import DiffusionConfig, ModelConfig
from ablate.models.unet import build_unet, unet_graph


def build_denoiser(model_cfg: ModelConfig, diffusion: DiffusionConfig, input_shape: tuple[int, int, int]) -> keras.Model:
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


def reverse_chain(model: keras.Model, x_T: np.ndarray, diffusion: DiffusionConfig) -> np.ndarray:
    """Run the denoiser T times from x_T: returns x_T, x_{T-1}, ..., x_0, shape (T + 1, *x_T.shape)."""
    chain = [x_T.astype(np.float32)]
    for t in range(diffusion.steps, 0, -1):
        x = chain[-1]
        inputs = [x, np.full((len(x), 1), t, dtype=np.float32)] if diffusion.conditioned else x
        chain.append(keras.ops.convert_to_numpy(model(inputs, training=False)))
    return np.stack(chain)
