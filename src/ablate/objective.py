"""One trial from its frozen config to its objective value: data, model, fit, images.

Neither Optuna nor MLflow is imported here: the caller passes a `TrialLog` (the MLflow run) and
a `report` hook (Optuna's pruning hook), so a finished trial can be retrained from its logged
params alone with the same function.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ablate.config import RunConfig
from ablate.images import reconstruction_grid
from ablate.spec import ObjectiveSpec, TrackingSpec


class TrialLog(Protocol):
    """Where a trial's metrics, images and text go (an MLflow run in practice)."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_image(self, image: np.ndarray, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...


class TrialProgress(Protocol):
    """What the terminal shows while a trial trains."""

    def start_trial(self, label: str, epochs: int, batches: int) -> None: ...
    def batch(self, epoch: int, batch: int) -> None: ...
    def epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass(frozen=True)
class TrialResult:
    """The objective value and what produced it."""

    value: float
    epochs_run: int
    parameters: int
    history: dict[str, list[float]]


def train_trial(
    run: RunConfig,
    *,
    objective: ObjectiveSpec,
    tracking: TrackingSpec,
    log: TrialLog,
    progress: TrialProgress,
    label: str,
    report: Callable[[int, float], None] | None = None,
) -> TrialResult:
    """Build, train and evaluate one configuration, logging as it goes.

    Args:
        run: the trial's frozen config (data, model, train, seed).
        objective: which logged metric is the trial's value.
        tracking: image settings.
        log: receives per-epoch metrics (`step=epoch`), reconstruction grids and the summary.
        progress: the terminal display.
        label: a short name of the trial for the display.
        report: called with (epoch, objective metric) after each epoch; may raise to prune.
    """
    import keras

    from ablate.data import load_splits, training_noise
    from ablate.models import build_unet
    from ablate.train import compile_model, fit

    keras.backend.clear_session()
    gc.collect()
    keras.utils.set_random_seed(run.seed)
    splits = load_splits(run.data)
    x_train_noisy = training_noise(splits.x_train, run.data, run.seed)
    model = build_unet(run.model, splits.shape)
    compile_model(model, run.train)
    log.log_text(_summary(model), "model_summary.txt")
    parameters = int(model.count_params())

    fixed_clean = splits.x_val[: tracking.images]
    fixed_noisy = splits.x_val_noisy[: tracking.images]

    def picture(name: str) -> None:
        # A direct call, not predict(): predict() builds a new tf.function for each new model.
        reconstructed = keras.ops.convert_to_numpy(model(fixed_noisy, training=False))
        log.log_image(reconstruction_grid(fixed_clean, fixed_noisy, reconstructed), f"reconstructions/{name}.png")

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        log.log_metrics(epoch, metrics)
        progress.epoch(epoch, metrics)
        if tracking.image_every and epoch % tracking.image_every == 0 and epoch != run.train.epochs:
            picture(f"epoch_{epoch:03d}")
        if report is not None:
            report(epoch, metrics[objective.metric])

    batches = -(-len(splits.x_train) // run.train.batch_size)
    progress.start_trial(label, run.train.epochs, batches)
    result = fit(
        model,
        x_train_noisy=x_train_noisy,
        x_train=splits.x_train,
        x_val_noisy=splits.x_val_noisy,
        x_val=splits.x_val,
        cfg=run.train,
        seed=run.seed,
        on_epoch=on_epoch,
        on_batch=progress.batch,
    )
    picture("final")
    return TrialResult(
        value=result.last(objective.metric),
        epochs_run=result.epochs_run,
        parameters=parameters,
        history=result.history,
    )


def _summary(model: object) -> str:
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))  # type: ignore[attr-defined]
    return buffer.getvalue()
