"""One trial from its frozen config to its metrics: the family's training, behind one signature.

Neither Optuna nor MLflow is imported here: the caller passes a `TrialLog` (the MLflow run) and
a `report` hook (Optuna's pruning hook), so a finished trial can be retrained from its logged
params alone with the same function. Each `model.family` lives in `ablate.families.<family>` and
exposes `train(run, context) -> TrialResult`.
"""

from __future__ import annotations

import gc
import importlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ablate.config import RunConfig
from ablate.spec import TrackingSpec


class TrialLog(Protocol):
    """Where a trial's metrics, images and files go (an MLflow run in practice)."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_image(self, image: np.ndarray, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_file(self, local_path: str, artifact_path: str | None = None) -> None: ...


class TrialProgress(Protocol):
    """What the terminal shows while a trial trains."""

    def start_trial(self, label: str, epochs: int, batches: int) -> None: ...
    def batch(self, epoch: int, batch: int) -> None: ...
    def epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


Report = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrialContext:
    """What a family's `train` gets besides the run config: where to log, and the pruning hook.

    `report(epoch, metrics)` is called after each epoch with that epoch's metrics; it may raise
    `optuna.TrialPruned` to stop the trial.
    """

    tracking: TrackingSpec
    log: TrialLog
    progress: TrialProgress
    label: str
    report: Report | None = None


@dataclass(frozen=True)
class TrialResult:
    """The final value of every metric the trial logged, and how it got there.

    `metrics` holds each metric at the last epoch run, plus `parameters`; a study's objectives
    are looked up in it by name.
    """

    metrics: dict[str, float]
    epochs_run: int
    parameters: int
    history: dict[str, list[float]]
    stopped: str = "epochs"  # or "max_seconds": the wall-time budget ended training

    def value(self, metric: str) -> float:
        """One metric's final value; KeyError names the metrics there are."""
        if metric not in self.metrics:
            raise KeyError(f"the trial logged no {metric!r}; it logged {sorted(self.metrics)}")
        return self.metrics[metric]


def train_trial(
    run: RunConfig,
    *,
    tracking: TrackingSpec,
    log: TrialLog,
    progress: TrialProgress,
    label: str,
    report: Report | None = None,
) -> TrialResult:
    """Build, train and evaluate one configuration of any family, logging as it goes.

    Args:
        run: the trial's frozen config (data, model, train, diffusion, ensemble, seed).
        tracking: image and model-saving settings.
        log: receives per-epoch metrics (`step=epoch`), images, the model and its summary.
        progress: the terminal display.
        label: a short name of the trial for the display.
        report: called with (epoch, metrics) after each epoch; may raise to prune.
    """
    import keras

    freeze_heap()
    keras.backend.clear_session()  # also collects the previous trial's garbage (gc.collect)
    keras.utils.set_random_seed(run.seed)
    family = importlib.import_module(f"ablate.families.{run.model.family}")
    return family.train(run, TrialContext(tracking=tracking, log=log, progress=progress, label=label, report=report))


_heap_frozen = False


def freeze_heap() -> None:
    """Leave what is alive now (the imported Keras, TensorFlow, Optuna, MLflow: ~0.5 M objects) out of
    every later garbage collection, once per process (a fork inherits it).

    Each trial starts with a full collection (`clear_session`), so the previous model's memory goes
    back; without this, every collection walks all those objects: 0.25-0.56 s each here (a tiny
    8-trial study took 33 s instead of 23 s, see docs/performance.md). Frozen objects are still
    freed when their last reference goes; only reference cycles among them would stay, and
    import-time objects live as long as the process anyway. In a
    warm process that forks (`ablate.forking`), frozen pages are also not written by the forks'
    collections, so they stay shared.
    """
    global _heap_frozen
    if not _heap_frozen:
        gc.collect()
        gc.freeze()
        _heap_frozen = True


def model_summary(model: object) -> str:
    """Keras' model summary as text (logged as `model_summary.txt`)."""
    buffer = io.StringIO()
    model.summary(print_fn=lambda line, **_: buffer.write(line + "\n"))  # type: ignore[attr-defined]
    return buffer.getvalue()


def log_model(model: object, log: TrialLog, tracking: TrackingSpec) -> None:
    """Save the trained model as `model/model.keras` in the run (ensembles load members from it)."""
    if not tracking.save_model:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)  # type: ignore[attr-defined]
        log.log_file(path, "model")
