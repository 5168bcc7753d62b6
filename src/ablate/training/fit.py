"""The fit loop of one trial: compile, seeded batches, per-epoch hooks, and a NaN guard.

No Optuna or MLflow here: the caller passes plain hooks (`on_epoch`, `on_batch`), so the same
loop serves every engine and the tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from ablate.spec.run_config import TrainConfig

EpochHook = Callable[[int, dict[str, float]], None]
BatchHook = Callable[[int, int], None]
Evaluate = Callable[[int], dict[str, float]]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the trial fails with this reason."""


# Where TensorFlow and JAX return a NaN loss for NaN predictions, PyTorch's losses refuse them
# with these errors instead (torch.nn.functional.binary_cross_entropy); the NaN guard says why.
NON_FINITE_REFUSALS = ("all elements of input should be between 0 and 1",)


@keras.saving.register_keras_serializable(package="ablate")
def psnr(y_true: Any, y_pred: Any) -> Any:
    """Peak signal-to-noise ratio in dB for images in [0, 1], per image (in float32, whatever the
    model's dtype policy: under `mixed_float16` the prediction is float16 and the target float32)."""
    y_true, y_pred = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
    mse = ops.mean(ops.square(y_true - y_pred), axis=tuple(range(1, len(y_pred.shape))))
    return -10.0 * ops.log(ops.maximum(mse, 1e-10)) / math.log(10.0)


class SeededBatches(keras.utils.PyDataset):
    """(noisy, clean) batches in an order fixed by the seed and the epoch, the same for every model.

    Keras' own `shuffle=True` draws from a random stream whose state depends on how many random
    ops the model created, so two architectures with one seed would see different orders; this
    keeps the comparison paired.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int) -> None:
        super().__init__()
        self._x, self._y = x, y
        self._batch_size = batch_size
        self._seed = seed
        self._epoch = 0
        self._order = self._permutation()

    def __len__(self) -> int:
        return math.ceil(len(self._x) / self._batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows(index)
        return self._x[rows], self._y[rows]

    def rows(self, index: int) -> np.ndarray:
        """The (sorted) rows of batch `index` in this epoch's order; subclasses build batches from them."""
        return np.sort(self._order[index * self._batch_size : (index + 1) * self._batch_size])

    def on_epoch_end(self) -> None:
        self._epoch += 1
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self._seed, self._epoch]).permutation(len(self._x))


@dataclass(frozen=True)
class FitResult:
    """Per-epoch history under `{split}_{name}` keys, and the epochs actually run."""

    history: dict[str, list[float]]
    epochs_run: int
    stopped: str = "epochs"  # "max_seconds" when the wall-time budget ended training

    def last(self, metric: str) -> float:
        """The metric's value at the last epoch run."""
        return self.history[metric][-1]


OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def compile_model(model: keras.Model, cfg: TrainConfig, metrics: tuple[str, ...] | None = None) -> None:
    """Attach optimiser and loss, and `metrics` (Keras identifiers; default: the images' `mse` / `psnr`).

    Raises:
        ValueError: from Keras, for a loss or metric identifier it does not know.
    """
    keras.losses.get(cfg.loss)  # an unknown identifier raises here, not at the first batch
    for name in metrics or ():
        if name not in ("accuracy", "acc", "crossentropy", "ce"):  # compile picks these by the loss
            keras.metrics.get(name)
    model.compile(
        optimizer=OPTIMIZERS[cfg.optimizer](learning_rate=cfg.learning_rate),
        loss=cfg.loss,
        metrics=["mse", psnr] if metrics is None else list(metrics),
    )


def portable_compile_config(model: keras.Model) -> dict[str, Any]:
    """The model's compile config with only Keras' own objects in it, for the saved `.keras` file.

    Keras resolves every object of a file's compile config when it loads the file, and ablate's
    `psnr` (`ablate>psnr`) exists only where ablate is imported. So the file keeps the optimizer
    (and its state), the loss and Keras' metrics (`mse`), and leaves ablate's out; were anything
    else of ablate's left, the config is empty and the file loads uncompiled.
    """
    config = dict(model.get_compile_config() or {})
    for key in ("metrics", "weighted_metrics"):
        metrics = config.get(key)
        if isinstance(metrics, list):
            config[key] = [m for m in metrics if not _names_ablate(m)]
        elif isinstance(metrics, dict):  # one list per output
            config[key] = {name: [m for m in ms if not _names_ablate(m)] for name, ms in metrics.items()}
    return {} if _names_ablate(config) else config


def _names_ablate(serialized: Any) -> bool:
    """Whether a serialized Keras object refers to one of ablate's (a registered name `ablate>...`)."""
    if isinstance(serialized, str):
        return serialized == "ablate" or serialized.startswith(("ablate>", "ablate."))
    if isinstance(serialized, dict):
        return any(_names_ablate(value) for value in serialized.values())
    if isinstance(serialized, (list, tuple)):
        return any(_names_ablate(value) for value in serialized)
    return False


def fit(
    model: keras.Model,
    *,
    x_train_noisy: np.ndarray,
    x_train: np.ndarray,
    x_val_noisy: np.ndarray,
    x_val: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    on_epoch: EpochHook | None = None,
    on_batch: BatchHook | None = None,
) -> FitResult:
    """Train a compiled model; call `on_epoch(epoch, metrics)` with 1-based epochs after each one.

    Raises:
        NonFiniteLossError: when a loss turns NaN or infinite (checked every batch and epoch).
        Whatever `on_epoch` raises (e.g. Optuna's `TrialPruned`) ends training and propagates.
    """
    batches = SeededBatches(x_train_noisy, x_train, batch_size=cfg.batch_size, seed=seed)
    return fit_batches(model, batches, validation=(x_val_noisy, x_val), cfg=cfg, on_epoch=on_epoch, on_batch=on_batch)


def fit_batches(
    model: keras.Model,
    batches: keras.utils.PyDataset,
    *,
    validation: tuple[Any, np.ndarray],
    cfg: TrainConfig,
    on_epoch: EpochHook | None = None,
    on_batch: BatchHook | None = None,
    evaluate: Evaluate | None = None,
) -> FitResult:
    """`fit` for any batches and validation inputs (e.g. a two-input model's `[image, step]`).

    `evaluate(epoch)` returns extra metrics that Keras' one-pass validation cannot compute (a
    diffusion model's multi-step reverse chain); they join the epoch's metrics before the NaN
    guard, the history and `on_epoch` see them, and count against `max_seconds`.
    """
    recorder = _EpochRecorder(on_epoch, on_batch, max_seconds=cfg.max_seconds, evaluate=evaluate)
    try:
        model.fit(
            batches,
            validation_data=validation,
            validation_batch_size=cfg.batch_size,
            epochs=cfg.epochs,
            verbose=0,
            callbacks=[recorder],
        )
    except RuntimeError as error:
        if not any(marker in str(error) for marker in NON_FINITE_REFUSALS):
            raise
        raise NonFiniteLossError(
            f"loss became nan at epoch {recorder.epoch}: the model's outputs turned non-finite, which "
            f"{keras.backend.backend()} refuses ({str(error).strip()})"
        ) from error
    if recorder.error is not None:
        raise recorder.error
    epochs_run = len(recorder.history.get("train_loss", []))
    stopped = "max_seconds" if recorder.out_of_time and epochs_run < cfg.epochs else "epochs"
    return FitResult(history=recorder.history, epochs_run=epochs_run, stopped=stopped)


def metric_name(key: str) -> str:
    """Keras log key -> our metric name: `loss` -> `train_loss`, `val_loss` stays."""
    return key if key.startswith("val_") else f"train_{key}"


class _EpochRecorder(keras.callbacks.Callback):
    """Collects renamed metrics, guards against NaN, and calls the hooks.

    Exceptions raised inside Keras callbacks are re-raised by Keras, but we stop training
    cleanly and re-raise after `fit` returns, so the model is left in a consistent state.
    """

    def __init__(
        self,
        on_epoch: EpochHook | None,
        on_batch: BatchHook | None,
        *,
        max_seconds: float | None = None,
        evaluate: Evaluate | None = None,
    ) -> None:
        super().__init__()
        self._on_epoch = on_epoch
        self._evaluate = evaluate
        self._on_batch = on_batch
        self._max_seconds = max_seconds
        self._started = time.monotonic()
        self.out_of_time = False
        self.history: dict[str, list[float]] = {}
        self.error: BaseException | None = None
        self.epoch = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.error = NonFiniteLossError(f"loss became {float(loss)} at epoch {self.epoch}, batch {batch + 1}")
            self.model.stop_training = True
            return
        if self._on_batch is not None:
            self._on_batch(self.epoch, batch + 1)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.error is not None:
            return
        metrics = {metric_name(key): float(value) for key, value in (logs or {}).items()}
        if self._evaluate is not None:
            try:
                metrics.update(self._evaluate(epoch + 1))
            except BaseException as error:  # noqa: BLE001 - stop cleanly, re-raise after fit (as for on_epoch)
                self.error = error
                self.model.stop_training = True
                return
        bad = [name for name, value in metrics.items() if name.endswith("loss") and not math.isfinite(value)]
        if bad:
            self.error = NonFiniteLossError(f"{bad[0]} became {metrics[bad[0]]} at epoch {epoch + 1}")
            self.model.stop_training = True
            return
        for name, value in metrics.items():
            self.history.setdefault(name, []).append(value)
        if self._on_epoch is not None:
            try:
                self._on_epoch(epoch + 1, metrics)
            except BaseException as error:  # noqa: BLE001 - pruning or a tracking failure: stop, re-raise after fit
                self.error = error
                self.model.stop_training = True
                return
        if self._max_seconds is not None and time.monotonic() - self._started >= self._max_seconds:
            self.out_of_time = True  # the wall-time budget: this epoch was the last
            self.model.stop_training = True
