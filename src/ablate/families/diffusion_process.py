"""The diffusion process, apart from the network: the forward noising chain and the reverse denoising chain.

Forward: x_0 (clean) .. x_T, x_t = clip(x_{t-1} + magnitude / sqrt(T) * e_t, 0, 1), and the
(x_t, x_{t-1}) training pairs. Reverse: the trained denoiser applied T times from x_T. The network
itself is `ablate.models.denoiser`; the family's training loop is `ablate.families.diffusion`.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from ablate.spec.run_config import DiffusionConfig


def diffusion_chain(x: np.ndarray, cfg: DiffusionConfig, rng: np.random.Generator) -> np.ndarray:
    """The noising chain x_0 .. x_T of clean images `x`: shape (T + 1, *x.shape), float32 in [0, 1]."""
    chain = [x.astype(np.float32)]
    for _ in range(cfg.steps):
        chain.append(np.clip(chain[-1] + diffusion_noise(x.shape, cfg, rng), 0.0, 1.0))
    return np.stack(chain)


def diffusion_noise(shape: tuple[int, ...], cfg: DiffusionConfig, rng: np.random.Generator) -> np.ndarray:
    """One step's noise, `magnitude / sqrt(T)` times a unit-variance draw from `distribution`.

    The sqrt(T) keeps the total noise of the T steps (before clipping) at `magnitude`, so studies
    over T compare chains that end equally noisy.
    """
    scale = np.float32(cfg.magnitude / np.sqrt(cfg.steps))
    if cfg.distribution == "normal":
        noise = rng.standard_normal(shape, dtype=np.float32)
    else:  # uniform on [-sqrt(3), sqrt(3)]: unit variance, like the normal
        noise = rng.uniform(-np.sqrt(3), np.sqrt(3), size=shape).astype(np.float32)
    return scale * noise


def diffusion_step_pairs(
    x: np.ndarray, steps: np.ndarray, cfg: DiffusionConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(x_t, x_{t-1}) of each clean image for its own step t in 1..T, along `diffusion_chain`'s process.

    Only the steps each image needs are simulated (an image at t = 2 stops after two), so a batch
    costs about batch * mean(t) noise draws instead of the whole chain of every image.
    """
    steps = np.asarray(steps)
    current = x.astype(np.float32, copy=True)
    before = current.copy()
    for step in range(1, int(steps.max(initial=0)) + 1):
        at = steps == step
        before[at] = current[at]
        active = steps >= step
        current[active] = np.clip(
            current[active] + diffusion_noise((int(active.sum()), *x.shape[1:]), cfg, rng), 0.0, 1.0
        )
    return current, before


def diffusion_pairs(chain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs from a chain: inputs x_t, targets x_{t-1}, and the step t, for t = 1..T."""
    steps = chain.shape[0] - 1
    inputs = chain[1:].reshape(-1, *chain.shape[2:])
    targets = chain[:-1].reshape(-1, *chain.shape[2:])
    t = np.repeat(np.arange(1, steps + 1, dtype=np.float32), chain.shape[1])
    return inputs, targets, t


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
