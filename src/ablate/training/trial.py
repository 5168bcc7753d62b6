"""One trial from its frozen config to its metrics: a family's training, behind one signature.

Neither Optuna nor MLflow is imported here: the caller passes the `Family` (from the registry,
`ablate.families.family_for`), a `TrialLog` (the MLflow run) and a `report` hook (Optuna's pruning
hook), so a finished trial can be retrained from its logged params alone with the same function.
"""

from __future__ import annotations

import gc
import io
import os
import tempfile

import keras

from ablate.spec.run_config import RunConfig
from ablate.spec.study_spec import TrackingSpec
from ablate.training.family import Family, Report, TrialContext, TrialLog, TrialProgress, TrialResult


def train_trial(
    run: RunConfig,
    family: Family,
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
        family: the family that trains it (`ablate.families.family_for(run.model.family)`).
        tracking: image and model-saving settings.
        log: receives per-epoch metrics (`step=epoch`), images, the model and its summary.
        progress: the terminal display.
        label: a short name of the trial for the display.
        report: called with (epoch, metrics) after each epoch; may raise to prune.
    """
    freeze_heap()
    keras.backend.clear_session()  # also collects the previous trial's garbage (gc.collect)
    keras.utils.set_random_seed(run.seed)
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
    warm process that forks (`ablate.runtime.forks`), frozen pages are also not written by the forks'
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
