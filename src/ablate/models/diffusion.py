"""The incremental denoiser of the slides' diffusion exercise, and the reverse chain that uses it."""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
from keras import layers

from ablate.config import DiffusionConfig, ModelConfig
from ablate.models.unet import build_unet, unet_graph


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


def reverse_chain(model: keras.Model, x_T: np.ndarray, diffusion: DiffusionConfig) -> np.ndarray:
    """Run the denoiser T times from x_T: returns x_T, x_{T-1}, ..., x_0, shape (T + 1, *x_T.shape).

    Every frame of every image is kept, so this is for a few images; `denoise` keeps only some.
    """
    steps = range(diffusion.steps, -1, -1)
    _, frames = denoise(model, x_T, diffusion, batch_size=max(len(x_T), 1), keep=steps)
    return np.stack([frames[t] for t in steps])


def denoise(
    model: keras.Model,
    x_T: np.ndarray,
    diffusion: DiffusionConfig,
    *,
    batch_size: int = 256,
    keep: Iterable[int] = (),
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The reverse chain in batches: x_0 of every image, and the frames x_t for each t in `keep`.

    The model is called T times per batch, with steps t = T, ..., 1 (the conditioned model gets t
    as its second input). Batches bound the memory of large validation sets, and keeping only the
    frames asked for bounds the rest: all T + 1 frames of 10,000 images at T = 1000 would be 31 GB.

    Args:
        model: the denoiser (x_t -> x_{t-1}), one input or `[image, step]` when conditioned.
        x_T: the noisiest images, (N, H, W, C) in [0, 1].
        diffusion: the chain's settings (`steps`, `conditioned`).
        batch_size: images per model call.
        keep: the steps (0..T) whose frames are returned; T is x_T itself, 0 is the result.
    """
    x_T = np.asarray(x_T, dtype=np.float32)
    wanted = sorted(set(keep))
    if wanted and not 0 <= wanted[0] <= wanted[-1] <= diffusion.steps:
        raise ValueError(f"keep must be steps in 0..{diffusion.steps}, got {wanted}")
    results: list[np.ndarray] = []
    kept: dict[int, list[np.ndarray]] = {t: [] for t in wanted}
    for start in range(0, len(x_T), batch_size):
        x = x_T[start : start + batch_size]
        if diffusion.steps in kept:
            kept[diffusion.steps].append(x)
        for t in range(diffusion.steps, 0, -1):
            x = denoise_step(model, x, t, diffusion)
            if t - 1 in kept:
                kept[t - 1].append(x)
        results.append(x)
    return np.concatenate(results), {t: np.concatenate(frames) for t, frames in kept.items()}


def denoise_step(model: keras.Model, x_t: np.ndarray, t: int, diffusion: DiffusionConfig) -> np.ndarray:
    """One reverse step x_t -> x_{t-1}.

    `predict_on_batch`, not a direct call: a chain calls the same model T times per batch, so its
    compiled predict function (traced once per model) pays off; eager calls were ~7x slower on CPU.
    """
    inputs = [x_t, np.full((len(x_t), 1), t, dtype=np.float32)] if diffusion.conditioned else x_t
    return np.asarray(model.predict_on_batch(inputs), dtype=np.float32)
