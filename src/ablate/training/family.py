"""The family contract: what a model family provides, and what it is given to train one trial.

A family (`model.family` in a study file) is one kind of trial: the slides' denoising U-Net, the
diffusion denoiser, the weighted ensemble. Each implements `Family` and is listed in the registry
(`ablate.families.FAMILIES`); the runtime looks it up by name and calls `train` through
`ablate.training.trial.train_trial`. A family imports neither Optuna nor MLflow: it logs through
the `TrialLog` it is given and reports epochs through `TrialContext.report`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ablate.errors import AblateError
from ablate.spec.run_config import RunConfig

if TYPE_CHECKING:
    from ablate.training.fit import FitResult  # Keras: only the type is needed here
from ablate.spec.study_spec import TrackingSpec


@dataclass(frozen=True)
class SavedModel:
    """A trained model saved as a `.keras` file that plain Keras loads, and what serving it needs.

    Attributes:
        path: the `.keras` file (the caller may delete it once `TrialLog.log_model` returns).
        inputs: each input's name and shape without the batch axis (`("noisy", (28, 28, 1))`).
        output: the output's shape without the batch axis.
        requirements: pip requirements that load it: Keras and its backend, pinned (never ablate).
    """

    path: str
    inputs: tuple[tuple[str, tuple[int | None, ...]], ...]
    output: tuple[int | None, ...]
    requirements: tuple[str, ...]


class TrialLog(Protocol):
    """Where a trial's metrics, images and files go (an MLflow run in practice)."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_image(self, image: np.ndarray, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_file(self, local_path: str, artifact_path: str | None = None) -> None: ...
    def log_model(self, saved: SavedModel) -> None: ...


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

    @classmethod
    def of_fit(cls, fit: FitResult, parameters: int) -> TrialResult:
        """The result of a trial that is one fit: each metric's last value, plus `parameters`."""
        final = {name: values[-1] for name, values in fit.history.items()}
        return cls(
            metrics={**final, "parameters": float(parameters)},
            epochs_run=fit.epochs_run,
            parameters=parameters,
            history=fit.history,
            stopped=fit.stopped,
        )

    def value(self, metric: str) -> float:
        """One metric's final value; KeyError names the metrics there are."""
        if metric not in self.metrics:
            raise KeyError(f"the trial logged no {metric!r}; it logged {sorted(self.metrics)}")
        return self.metrics[metric]


class Family(Protocol):
    """A model family: how one trial of it trains, and what that trial logs.

    Attributes:
        name: the `model.family` value that selects it.
        metrics: every metric `train` logs per epoch or at the end (an objective must be one of them;
            the study-file schema holds the same list, `ablate.spec.study_spec.FAMILY_METRICS`, so a
            study is checked without importing the family).
        pictures: the artifact paths of the pictures it logs (`NNN`: the epoch), for readers of its runs.
    """

    @property
    def name(self) -> str: ...
    @property
    def metrics(self) -> tuple[str, ...]: ...
    @property
    def pictures(self) -> tuple[str, ...]: ...

    def train(self, run: RunConfig, context: TrialContext) -> TrialResult:
        """Build, train and evaluate the trial's model; log as it goes; return the final metrics."""
        ...

    def build(self, run: RunConfig, input_shape: tuple[int, ...]) -> Any:
        """The trial's uncompiled Keras model (raises `AblateError` for a family that builds none)."""
        ...


@dataclass(frozen=True)
class BuiltinFamily:
    """A `Family` whose training is one function (the built-in families are each one module)."""

    name: str
    metrics: tuple[str, ...]
    pictures: tuple[str, ...]
    train_function: Callable[[RunConfig, TrialContext], TrialResult]
    # The trial's model, uncompiled, for an image of `input_shape` (what `ablate graph` inspects);
    # None for a family whose model is not one functional graph built from settings (the ensemble).
    build_function: Callable[[RunConfig, tuple[int, ...]], Any] | None = None

    def train(self, run: RunConfig, context: TrialContext) -> TrialResult:
        """Train one trial with the family's function."""
        return self.train_function(run, context)

    def build(self, run: RunConfig, input_shape: tuple[int, ...]) -> Any:
        """The trial's uncompiled Keras model for inputs of `input_shape`.

        Raises:
            AblateError: when the family builds no single model from its settings.
        """
        if self.build_function is None:
            raise AblateError(f"model.family {self.name} builds no single functional model from settings; `ablate graph` cannot show it")
        return self.build_function(run, input_shape)
