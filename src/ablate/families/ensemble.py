"""Ensembles trained inside the trial (`model.family: ensemble`, `ensemble.source: train`).

One trial trains `ensemble.members` U-Nets with the trial's model and training settings, seeds
seed .. seed + members - 1, then searches their weights on the validation split (an in-trial,
in-memory Optuna study of `ensemble.weight_trials` weight vectors, see `ablate.families.ensemble_weights`) and
reports the ensemble on the test split beside the best single member and the uniform average.
Because the members are trained in the trial, the ensemble's settings can be factors of an
ordinary study (e.g. `ensemble.members: [1, 2, 4]` as a grid).

`source: study` (weights of another study's saved models) is a weight study with its own fast
path (`ablate.runtime.engines.weight_study`), which `ablate run` takes; it never reaches this function.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ablate.families.ensemble_weights import (
    EnsembleError,
    Outcome,
    Scorer,
    SearchTimes,
    predict,
    search_weights,
    summarize,
    test_inputs,
)
from ablate.models import build_unet
from ablate.models.weighted_ensemble import build_ensemble
from ablate.spec.run_config import RunConfig
from ablate.spec.study_spec import FAMILY_METRICS
from ablate.training.data import load_splits, training_noise
from ablate.training.family import BuiltinFamily, TrialContext, TrialResult
from ablate.training.fit import compile_model, fit
from ablate.training.images import reconstruction_grid
from ablate.training.trial import log_model, model_summary


def train(run: RunConfig, context: TrialContext) -> TrialResult:
    """Train the members, search their weights on validation, log the ensemble and its test scores."""
    if run.ensemble.source != "train":
        raise EnsembleError(
            "ensemble.source: study is a weight study: run it with `ablate run` (or `ablate reproduce`), which "
            "searches its weights in one process; trial workers (`ablate worker`, --workers) do not run it"
        )
    splits = load_splits(run.data)
    members, history = [], {}
    for index in range(run.ensemble.members):
        model, member_history = _train_member(run, context, splits, index)
        members.append(model)
        history.update({f"member{index}_{name}": values for name, values in member_history.items()})
    val = Scorer(np.stack([predict(m, splits.x_val_noisy) for m in members]), splits.x_val, run.train.loss)
    x_test_noisy = test_inputs(splits.x_test, run.data)
    test = Scorer(np.stack([predict(m, x_test_noisy) for m in members]), splits.x_test, run.train.loss)
    times = SearchTimes()
    study = search_weights(val, trials=run.ensemble.weight_trials, sampler=run.ensemble.sampler, seed=run.seed, times=times)
    labels = [f"seed={run.seed + index}" for index in range(len(members))]
    outcome = summarize(
        study, val, test, labels=labels, sampler=run.ensemble.sampler, metric="val_loss", times=times,
        data={"dataset": run.data.dataset, "val_images": len(splits.x_val), "test_images": len(splits.x_test)},
    )
    return _log_ensemble(run, context, members, outcome, splits, history)


def _train_member(run: RunConfig, context: TrialContext, splits: Any, index: int) -> tuple[Any, dict[str, list[float]]]:
    """One member: the trial's U-Net trained with seed `run.seed + index`, its epochs logged as `member{index}_*`."""
    seed = run.seed + index
    keras.utils.set_random_seed(seed)
    model = build_unet(run.model, splits.shape)
    compile_model(model, run.train)
    if index == 0:
        context.log.log_text(model_summary(model), "member_summary.txt")

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        context.log.log_metrics(epoch, {f"member{index}_{name}": value for name, value in metrics.items()})
        context.progress.epoch(epoch, metrics)

    batches = -(-len(splits.x_train) // run.train.batch_size)
    context.progress.start_trial(f"{context.label} member {index}", run.train.epochs, batches)
    result = fit(
        model,
        x_train_noisy=training_noise(splits.x_train, run.data, seed),
        x_train=splits.x_train,
        x_val_noisy=splits.x_val_noisy,
        x_val=splits.x_val,
        cfg=run.train,
        seed=seed,
        on_epoch=on_epoch,
        on_batch=context.progress.batch,
    )
    return model, result.history


def _log_ensemble(
    run: RunConfig, context: TrialContext, members: list[Any], outcome: Outcome, splits: Any, history: dict[str, list[float]]
) -> TrialResult:
    """Log the ensemble's metrics (step = epochs), weights.json, the picture and the model; the trial's result.

    Nothing is reported to a pruner: the ensemble has one value, known only once every member
    has trained.
    """
    log, tracking = context.log, context.tracking
    ensemble = build_ensemble(members, outcome.best_weights)
    parameters = int(ensemble.count_params())
    metrics = {**outcome.metrics(), "parameters": float(parameters)}
    log.log_metrics(run.train.epochs, metrics)
    log.log_text(outcome.to_json(), "ensemble/weights.json")
    clean, noisy = splits.x_val[: tracking.images], splits.x_val_noisy[: tracking.images]
    single = predict(members[outcome.best_member.index], noisy)
    log.log_image(reconstruction_grid(clean, noisy, single, predict(ensemble, noisy)), "reconstructions/final.png")
    log.log_text(model_summary(ensemble), "model_summary.txt")
    log_model(ensemble, log, tracking)
    epochs = max((len(values) for name, values in history.items() if name.endswith("_train_loss")), default=run.train.epochs)
    return TrialResult(
        metrics=metrics,
        epochs_run=epochs,
        parameters=parameters,
        history={**history, **{name: [value] for name, value in metrics.items()}},
    )


FAMILY = BuiltinFamily(name="ensemble", metrics=FAMILY_METRICS["ensemble"], pictures=("reconstructions/final.png",), train_function=train)
