"""Incremental denoising, the slides' diffusion exercise: the U-Net learns x_t -> x_{t-1}.

The noising chain x_0 (clean) .. x_T is `ablate.families.diffusion_process.diffusion_chain`'s: T steps of
`diffusion.distribution` noise, `diffusion.magnitude` in total, clipped to [0, 1] after each step.
A trial trains the denoiser of `ablate.models.denoiser` on (x_t, x_{t-1}) pairs and judges it
by running it T times from x_T: the reverse chain must end at the clean image.

Training pairs: one random step t (uniform on 1..T) per training image per epoch, its x_t and
x_{t-1} noised afresh, rather than all N * T pairs of a fixed chain. Why: with every pair, an
epoch at T = 10 would cost ten times one at T = 1, so a study over T would compare different
amounts of training (and T = 1000 would not run at all); with one pair per image, every level of
T takes the same gradient steps per epoch, so T is compared at equal compute, and fresh noise
each epoch means no fixed pair can be memorised. The draws are seeded by (trial seed, epoch,
batch), like `ablate.training.fit.SeededBatches`' order, so the conditioned and unconditioned levels
at one seed see identical pairs: their difference is a paired comparison.

Validation is fixed for the whole study (seeded by `data.split_seed`, never by the trial seed):
one-step pairs with one fixed t per validation image give `val_loss`, `val_mse`, `val_psnr`
(Keras' validation pass), and the reverse chain from each validation image's x_T gives
`val_chain_loss` (the training loss between x_0 and the clean image) and `val_chain_mse`.

Pure-noise samples (`diffusion/samples.png`; the slides ask what happens when the chain starts
from noise): the forward chain run for T steps from a flat mid-grey image (0.5 everywhere). That
is the configured distribution at exactly the x_T noise level, clipping included, with no digit
in it; mid-grey rather than black so the start does not already look like MNIST's background.

`data.noise` is not used by this family: the chain's noise is `diffusion.distribution` and
`diffusion.magnitude`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import keras
import numpy as np

from ablate.families.diffusion_process import denoise, diffusion_step_pairs
from ablate.models.denoiser import build_denoiser
from ablate.models.surgery import ablated
from ablate.spec.run_config import DataConfig, DiffusionConfig, RunConfig
from ablate.spec.study_spec import FAMILY_METRICS
from ablate.training.data import load_splits
from ablate.training.family import BuiltinFamily, TrialContext, TrialResult
from ablate.training.fit import SeededBatches, compile_model, fit_batches
from ablate.training.images import chain_grid, chain_steps
from ablate.training.trial import log_model, model_summary

# Frames per chain picture: every frame x_T ... x_0 up to T = 20 (the studies' T); beyond, 21
# evenly spaced frames with both ends kept, so a T = 1000 picture stays readable (~1,300 px wide).
CHAIN_COLUMNS = 21
VALIDATION_STREAM = 2_000_003  # keeps the fixed validation chains apart from any trial seed's stream
PURE_NOISE_LEVEL = 0.5  # the flat grey image the pure-noise samples are noised from


@dataclass(frozen=True)
class Validation:
    """The study's fixed validation chains: the same in every trial with the same chain settings."""

    clean: np.ndarray  # x_0, the validation images
    x_t: np.ndarray  # one-step inputs, each at its own fixed step t
    x_prev: np.ndarray  # their targets x_{t-1}
    t: np.ndarray  # (N, 1) float32, the steps
    x_T: np.ndarray  # the noisiest step of every validation image: where the reverse chain starts
    noise: np.ndarray  # pure-noise starts for the samples picture

    def one_step(self, conditioned: bool) -> tuple[Any, np.ndarray]:
        """Keras' validation data: (x_t or [x_t, t], x_{t-1})."""
        return ([self.x_t, self.t] if conditioned else self.x_t), self.x_prev


class DiffusionBatches(SeededBatches):
    """Batches of (x_t, x_{t-1}) pairs, one fresh random t per image per epoch (see the module doc).

    The rows come in `SeededBatches`' seeded order; the steps and the noise of batch `index`
    come from a generator seeded by (seed, epoch, index), so they do not depend on the model.
    """

    def __init__(self, x: np.ndarray, diffusion: DiffusionConfig, *, batch_size: int, seed: int) -> None:
        super().__init__(x, x, batch_size=batch_size, seed=seed)
        self._diffusion = diffusion

    def __getitem__(self, index: int) -> tuple[Any, np.ndarray]:
        clean = self._x[self.rows(index)]
        rng = np.random.default_rng([self._seed, self._epoch, index])
        t = rng.integers(1, self._diffusion.steps + 1, size=len(clean))
        x_t, x_prev = diffusion_step_pairs(clean, t, self._diffusion, rng)
        if self._diffusion.conditioned:
            return (x_t, t.astype(np.float32)[:, None]), x_prev
        return x_t, x_prev


def validation_set(data: DataConfig, diffusion: DiffusionConfig, samples: int) -> Validation:
    """The fixed validation chains of `data`'s validation split; `conditioned` does not change them."""
    return _validation_set(data, diffusion.model_copy(update={"conditioned": False}), samples)


@lru_cache(maxsize=2)
def _validation_set(data: DataConfig, diffusion: DiffusionConfig, samples: int) -> Validation:
    # Cached: every trial of a study at one T shares it, and at large T it costs T noise steps.

    clean = load_splits(data).x_val
    rng = np.random.default_rng([data.split_seed, VALIDATION_STREAM])
    t = rng.integers(1, diffusion.steps + 1, size=len(clean))
    x_t, x_prev = diffusion_step_pairs(clean, t, diffusion, rng)
    last = np.full(len(clean), diffusion.steps)
    x_T, _ = diffusion_step_pairs(clean, last, diffusion, rng)
    grey = np.full((samples, *clean.shape[1:]), PURE_NOISE_LEVEL, dtype=np.float32)
    noise, _ = diffusion_step_pairs(grey, np.full(samples, diffusion.steps), diffusion, rng)
    return Validation(clean=clean, x_t=x_t, x_prev=x_prev, t=t.astype(np.float32)[:, None], x_T=x_T, noise=noise)


def chain_picture(model: Any, x_T: np.ndarray, diffusion: DiffusionConfig, clean: np.ndarray | None) -> np.ndarray:
    """The reverse chain of a few images as a grid: rows are images, columns x_T ... x_0 (and clean)."""
    steps = chain_steps(diffusion.steps, CHAIN_COLUMNS)
    _, frames = denoise(model, x_T, diffusion, batch_size=max(len(x_T), 1), keep=steps)
    return chain_grid([frames[t] for t in steps], clean)


def chain_metrics(model: Any, validation: Validation, run: RunConfig) -> dict[str, float]:
    """`val_chain_loss` and `val_chain_mse`: the reverse chain's x_0 against the clean images."""
    x_0, _ = denoise(model, validation.x_T, run.diffusion, batch_size=run.train.batch_size)
    loss = keras.losses.get(run.train.loss)(validation.clean, x_0)
    return {
        "val_chain_loss": float(np.mean(keras.ops.convert_to_numpy(loss))),
        "val_chain_mse": float(np.mean(np.square(x_0 - validation.clean))),
    }


def build(run: RunConfig, input_shape: tuple[int, ...]) -> keras.Model:
    """The trial's denoiser, with the layers `model.remove` names removed."""
    return ablated(build_denoiser(run.model, run.diffusion, input_shape), run.model.removed)  # type: ignore[arg-type]


def train(run: RunConfig, context: TrialContext) -> TrialResult:
    """Train the denoiser on one-step pairs; log per-epoch one-step and chain metrics and chain pictures."""
    tracking, log, diffusion = context.tracking, context.log, run.diffusion
    splits = load_splits(run.data)
    validation = validation_set(run.data, diffusion, tracking.images)
    model = build(run, splits.shape)
    compile_model(model, run.train)
    log.log_text(model_summary(model), "model_summary.txt")
    parameters = int(model.count_params())
    shown = slice(0, tracking.images)

    def picture(name: str) -> None:
        grid = chain_picture(model, validation.x_T[shown], diffusion, validation.clean[shown])
        log.log_image(grid, f"diffusion/{name}.png")

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        log.log_metrics(epoch, metrics)
        context.progress.epoch(epoch, metrics)
        if tracking.image_every and epoch % tracking.image_every == 0 and epoch != run.train.epochs:
            picture(f"chain_epoch_{epoch:03d}")
        if context.report is not None:
            context.report(epoch, {**metrics, "parameters": float(parameters)})

    batches = DiffusionBatches(splits.x_train, diffusion, batch_size=run.train.batch_size, seed=run.seed)
    context.progress.start_trial(context.label, run.train.epochs, len(batches))
    result = fit_batches(
        model,
        batches,
        validation=validation.one_step(diffusion.conditioned),
        cfg=run.train,
        on_epoch=on_epoch,
        on_batch=context.progress.batch,
        evaluate=lambda _epoch: chain_metrics(model, validation, run),
    )
    picture("chain")
    log.log_image(chain_picture(model, validation.noise, diffusion, None), "diffusion/samples.png")
    log_model(model, log, tracking)
    return TrialResult.of_fit(result, parameters)


FAMILY = BuiltinFamily(name="diffusion", metrics=FAMILY_METRICS["diffusion"], pictures=("diffusion/chain_epoch_NNN.png", "diffusion/chain.png", "diffusion/samples.png"), train_function=train, build_function=build)
