"""One trial from its frozen config to its metrics: a family's training, behind one signature.

Neither Optuna nor MLflow is imported here: the caller passes the `Family` (from the registry,
`ablate.families.family_for`), a `TrialLog` (the MLflow run) and a `report` hook (Optuna's pruning
hook), so a finished trial can be retrained from its logged params alone with the same function.
"""

from __future__ import annotations

import functools
import gc
import io
import os
import tempfile
from importlib import metadata

import keras

from ablate.spec.run_config import RunConfig
from ablate.spec.study_spec import TrackingSpec
from ablate.training.determinism import use_deterministic_ops
from ablate.training.family import Family, Report, SavedModel, TrialContext, TrialLog, TrialProgress, TrialResult
from ablate.training.fit import portable_compile_config


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

    With `run.train.deterministic`, the backend's deterministic ops are turned on first, for the
    rest of the process (`ablate.training.determinism`).
    """
    freeze_heap()
    keras.backend.clear_session()  # also collects the previous trial's garbage (gc.collect)
    keras.utils.set_random_seed(run.seed)
    if run.train.deterministic:
        use_deterministic_ops()  # process-wide, and for good on TensorFlow: see ablate.training.determinism
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
    """Save the trained model and log it as `model/model.keras` in the run (ensembles load members
    from it), in a `model/` folder that is also an MLflow model (`mlflow.pyfunc.load_model("runs:/RUN/model")`).

    The file loads with plain `keras.saving.load_model` where ablate is not installed: its layers
    are Keras' own, and its compile config holds only Keras' objects (`portable_compile_config`).
    Nothing is saved with `tracking.save_model: false`.
    """
    if not tracking.save_model:
        return
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        save_portable(model, path)
        log.log_model(
            SavedModel(
                path=path,
                inputs=tuple((t.name, tuple(t.shape[1:])) for t in model.inputs),  # type: ignore[attr-defined]
                output=tuple(model.outputs[0].shape[1:]),  # type: ignore[attr-defined]
                requirements=model_requirements(),
            )
        )


def save_portable(model: object, path: str) -> None:
    """`model.save(path)`, with the compile config that plain Keras can load (`portable_compile_config`).

    Keras' saving asks the model for `get_compile_config()` (the method Keras documents for a
    custom compile config); for this one save it answers with the portable config, and the model
    is left as it was.
    """
    config = portable_compile_config(model) if getattr(model, "compiled", False) else None
    if config is None:
        model.save(path)  # type: ignore[attr-defined]
        return
    setattr(model, "get_compile_config", lambda: config)  # noqa: B010 - an instance attribute, removed below
    try:
        model.save(path)  # type: ignore[attr-defined]
    finally:
        delattr(model, "get_compile_config")


# The pip package of each Keras backend (TensorFlow's CPU-only wheel has its own name).
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",), "torch": ("torch",)}


@functools.cache
def model_requirements() -> tuple[str, ...]:
    """What loads a saved model: Keras and its backend, pinned to the versions that saved it."""
    found = [f"keras=={metadata.version('keras')}"]
    for package in BACKEND_PACKAGES.get(keras.backend.backend(), ()):
        try:
            found.append(f"{package}=={metadata.version(package)}")
            break
        except metadata.PackageNotFoundError:
            continue
    return tuple(found)
