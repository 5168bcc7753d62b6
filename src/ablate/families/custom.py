"""The user's own functional model (`model.family: custom`), trained for the study's `task`.

`model.builder` (`MODULE:FUNCTION`) is called as `build(params, input_shape)` with `model.params`
and the shape of one input, and returns an uncompiled `keras.Model`; `model.remove` then ablates
its graph like a built-in one's (`ablate.models.surgery`). ablate compiles it from `train.*` (any
Keras loss, `train.metrics` or the task's own) and trains it on the study's data
(`ablate.training.arrays`) for the task:

- `denoise`: noisy input -> clean input (noise `data.noise`, as for the built-in families);
- `reconstruct`: input -> input (an autoencoder);
- `classify`: input -> class (labels), with `val_accuracy` and a confusion matrix;
- `regress`: input -> target.

Metrics are logged per epoch as `train_NAME` / `val_NAME`, and `test_NAME` once at the end when
`data.test_size` > 0. Pictures: the reconstruction grid (denoise, reconstruct), the fixed
validation images with true and predicted labels and the confusion matrix (classify), predicted
against true (regress).

`check_study` is `ablate validate`'s check: it imports the builder, builds each distinct model
the study's trials would build on the data's input shape, compiles it and runs one batch through
it, so a wrong builder, a shape mismatch, a loss that does not fit the labels or an objective that
is never logged is refused before any study or run exists.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ablate.errors import AblateError
from ablate.models.surgery import ablated
from ablate.spec.references import check_builder
from ablate.spec.run_config import RunConfig
from ablate.spec.study_spec import StudySpec
from ablate.training.arrays import ArraySplits, load_arrays
from ablate.training.data import training_noise
from ablate.training.family import TrialContext, TrialLog, TrialResult
from ablate.training.fit import SeededBatches, compile_model, fit_batches
from ablate.training.images import reconstruction_grid
from ablate.training.task_pictures import (
    confusion_picture,
    is_image_batch,
    predicted_classes,
    prediction_grid,
    regression_picture,
    true_classes,
)
from ablate.training.trial import log_model, model_summary
from ablate.training.user_code import UserCodeError, import_function


class CustomModelError(AblateError):
    """A custom model that cannot train as the study says (shapes, loss, metrics): bad input, exit 2."""

    exit_status = 2


def build(run: RunConfig, input_shape: tuple[int, ...]) -> keras.Model:
    """The user's model for inputs of `input_shape`, with the layers `model.remove` names removed.

    Raises:
        BuilderChangedError, UserCodeError: a changed, missing or failing builder, or one that
            returns no functional `keras.Model`.
    """
    check_builder(run.model)
    reference = run.model.builder or ""
    builder = import_function(reference, "model.builder")
    params = dict(run.model.params)
    try:
        model = builder(params, tuple(input_shape))
    except Exception as error:  # noqa: BLE001 - the user's builder failed: say with what, no traceback
        raise UserCodeError(
            f"model.builder {reference!r}: build(params={params}, input_shape={tuple(input_shape)}) raised "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None) or isinstance(model, keras.Sequential):
        raise UserCodeError(
            f"model.builder {reference!r} returned {type(model).__name__}; it must return a functional model, "
            "keras.Model(inputs, outputs), uncompiled"
        )
    return ablated(model, run.model.removed)


def _targets(run: RunConfig, splits: ArraySplits, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of a split for the task (validation inputs of `denoise`: the fixed noisy ones)."""
    x = getattr(splits, f"x_{split}")
    y = getattr(splits, f"y_{split}")
    if run.task in ("classify", "regress"):
        if y is None:
            raise CustomModelError(f"task: {run.task} needs labels, and {splits.source} has none (y_train / y)")
        return x, y
    if run.task == "reconstruct":
        return x, x
    if split == "train":
        return training_noise(x, run.data, run.seed), x
    if split == "val":
        return splits.noisy_val(run.data), x
    return training_noise(x, run.data, run.seed + 1), x


def train(run: RunConfig, context: TrialContext) -> TrialResult:
    """Train the user's model for the task; log metrics per epoch, the task's pictures and the model."""
    tracking, log = context.tracking, context.log
    splits = load_arrays(run.data)
    x_train, y_train = _targets(run, splits, "train")
    x_val, y_val = _targets(run, splits, "val")
    model = build(run, splits.shape)
    compile_model(model, run.train, run.metrics)
    log.log_text(model_summary(model), "model_summary.txt")
    parameters = int(model.count_params())
    shown = min(tracking.images, len(x_val))

    def picture(name: str) -> None:
        _log_pictures(run, log, model, splits, x_val[:shown], y_val[:shown], name, shown=shown)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        log.log_metrics(epoch, metrics)
        context.progress.epoch(epoch, metrics)
        if run.task in ("denoise", "reconstruct") and tracking.image_every and epoch % tracking.image_every == 0 and epoch != run.train.epochs:
            picture(f"epoch_{epoch:03d}")
        if context.report is not None:
            context.report(epoch, {**metrics, "parameters": float(parameters)})

    batches = SeededBatches(x_train, y_train, batch_size=run.train.batch_size, seed=run.seed)
    context.progress.start_trial(context.label, run.train.epochs, len(batches))
    result = fit_batches(model, batches, validation=(x_val, y_val), cfg=run.train, on_epoch=on_epoch, on_batch=context.progress.batch)
    tested: dict[str, float] = {}
    if len(splits.x_test):
        x_test, y_test = _targets(run, splits, "test")
        scores = model.evaluate(x_test, y_test, batch_size=run.train.batch_size, verbose=0, return_dict=True)
        tested = {f"test_{name}": float(value) for name, value in scores.items()}
        log.log_metrics(result.epochs_run, tested)
    _log_pictures(run, log, model, splits, x_val, y_val, "final", shown=shown)
    log_model(model, log, tracking)
    final = TrialResult.of_fit(result, parameters)
    return TrialResult(
        metrics={**final.metrics, **tested}, epochs_run=final.epochs_run, parameters=parameters,
        history=final.history, stopped=final.stopped,
    )


def _log_pictures(
    run: RunConfig, log: TrialLog, model: keras.Model, splits: ArraySplits, x: np.ndarray, y: np.ndarray, name: str,
    *, shown: int,
) -> None:
    """The task's pictures: the first `shown` of `x` in the grids; all of `x` in the confusion matrix and the scatter."""
    if run.task in ("denoise", "reconstruct"):  # a grid only: predict the images it shows, not the split
        x, y = x[:shown], y[:shown]
    outputs = keras.ops.convert_to_numpy(model.predict(x, batch_size=run.train.batch_size, verbose=0))
    if run.task in ("denoise", "reconstruct"):
        if is_image_batch(x) and outputs.shape == y.shape and x.shape[-1] == 1:
            rows = (y[:shown], x[:shown], outputs[:shown]) if run.task == "denoise" else (y[:shown], outputs[:shown])
            log.log_image(reconstruction_grid(*rows), f"reconstructions/{name}.png")
        return
    if run.task == "classify":
        true, predicted = true_classes(y), predicted_classes(outputs)
        if is_image_batch(x):
            log.log_image(prediction_grid(x[:shown], true[:shown], predicted[:shown], splits.classes), f"predictions/{name}.png")
        log.log_image(confusion_picture(true, predicted, splits.classes), "predictions/confusion.png")
        return
    log.log_image(regression_picture(y, outputs), "predictions/regression.png")


def check_study(spec: StudySpec) -> str:
    """Build, compile and run one batch through each distinct custom model the study's trials build.

    Returns:
        One line for `ablate validate`: how many models were checked, their input shape and parameters.

    Raises:
        AblateError (exit 2): naming the setting, for a builder, loss, metric, label or objective
            that does not work, before any study or run exists.
    """
    checked: list[tuple[Any, ...]] = []
    shapes: set[tuple[int, ...]] = set()
    sizes: list[int] = []
    for cell in spec.probe_cells("model"):
        run = spec.run_config(cell, seed=spec.seed)
        key = (run.task, run.data, run.model, run.train.loss, run.metrics)
        if key in checked:
            continue
        checked.append(key)
        splits = load_arrays(run.data)
        model = build(run, splits.shape)
        where = f"with {', '.join(f'{k}={v}' for k, v in cell.items())}" if cell else "with the fixed settings"
        try:
            compile_model(model, run.train, run.metrics)
        except (ValueError, TypeError) as error:
            raise CustomModelError(f"train.loss {run.train.loss!r} / train.metrics {list(run.metrics)}: Keras refuses them: {error}") from None
        x, y = _targets(run, splits, "val")
        try:
            scores = model.test_on_batch(x[: run.train.batch_size], y[: run.train.batch_size], return_dict=True)
        except Exception as error:  # noqa: BLE001 - Keras' shape and dtype errors: name what meets what
            output = tuple(model.outputs[0].shape[1:])
            raise CustomModelError(
                f"model {where}: one batch does not train: the model maps {splits.shape} to {output}, the targets "
                f"of task {run.task} are {tuple(y.shape[1:])} ({y.dtype}), and train.loss is {run.train.loss}: "
                f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            ) from None
        logged = {f"{split}_{name}" for split in ("train", "val", *(("test",) if len(splits.x_test) else ())) for name in scores}
        logged.add("parameters")
        for objective in spec.objective:
            if objective.metric not in logged:
                raise CustomModelError(
                    f"objective {objective.metric!r} is never logged by this model; it logs {', '.join(sorted(logged))} "
                    "(add the metric to train.metrics, or pick one of these)"
                )
        shapes.add(splits.shape)
        sizes.append(int(model.count_params()))
    counts = f"{min(sizes):,}" if min(sizes) == max(sizes) else f"{min(sizes):,} to {max(sizes):,}"
    return f"{len(checked)} model(s) checked on one batch; input {', '.join(map(str, sorted(shapes)))}; {counts} parameters"


class CustomFamily:
    """The `Family` of the user's own models (`ablate.training.family.Family`)."""

    name = "custom"
    metrics: tuple[str, ...] = ()  # the study's own: train_/val_ + loss and RunConfig.metrics, and parameters
    pictures = (
        "reconstructions/epoch_NNN.png", "reconstructions/final.png", "predictions/final.png",
        "predictions/confusion.png", "predictions/regression.png",
    )

    def train(self, run: RunConfig, context: TrialContext) -> TrialResult:
        """Train one trial of the user's model."""
        return train(run, context)

    def build(self, run: RunConfig, input_shape: tuple[int, ...]) -> keras.Model:
        """The user's model, ablated as `model.remove` says."""
        return build(run, input_shape)


FAMILY = CustomFamily()
