"""One trial's lifecycle in a worker: read its cell and seed, open its MLflow run, train, tell Optuna.

A failure ends the trial, never the worker: a NaN loss or an error is told FAIL with the reason
(`ablate.error`), a pruned trial PRUNED, an interrupt hands the trial back for a retry and stops.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from ablate.errors import AblateError, interruption
from ablate.families import family_for
from ablate.redaction import scrub
from ablate.runtime.optuna_internals import fixed_params, trial_id
from ablate.runtime.progress import StudyProgress
from ablate.runtime.retries import requeue
from ablate.runtime.sampling import objective_values, suggest
from ablate.runtime.storage import retry
from ablate.runtime.studies import DONE_STATES, LIVE_STATES
from ablate.runtime.work import StudyWork, _attr_setter, _skip, worker_id
from ablate.spec.attributes import (
    CELL_ATTR,
    CONFIRM_ATTR,
    ERROR_ATTR,
    RETRIED_IN_RUN,
    RETRY_OF_RUN,
    RETRY_OF_TRIAL,
    RETRY_REASON,
    RUN_ATTR,
    SEED_ATTR,
    SKIPPED,
    WORKER_ATTR,
)
from ablate.spec.levels import Level
from ablate.spec.study_spec import StudySpec
from ablate.tracking.environment import environment_tags
from ablate.tracking.tracker import PARENT_TAG
from ablate.training.device import describe_device
from ablate.training.trial import train_trial


class LostTrialError(AblateError):
    """The worker's trial was failed as stale by another worker while it still ran."""


def worker_tags(work: StudyWork) -> dict[str, Any]:
    """The tags of every trial run this process starts for the study (both engines use them)."""
    return {
        **environment_tags(),
        "ablate.study": work.name,
        "ablate.engine": work.spec.engine,
        "ablate.device": describe_device(),
        "ablate.worker": worker_id(),
    }


def run_trial(work: StudyWork, trial: optuna.Trial, *, progress: StudyProgress, requeue_on_interrupt: bool) -> None:
    """Train one popped trial and tell its outcome; a failure ends this trial, not the worker."""
    spec, tracker = work.spec, work.tracker
    frozen = retry(lambda: work.cached.get_trial(trial_id(trial)), what="read the trial")
    set_attr = _attr_setter(work, trial_id(trial))
    set_attr(WORKER_ATTR, worker_id())
    key, seed = frozen.user_attrs.get(CELL_ATTR), frozen.user_attrs.get(SEED_ATTR)
    missing = _missing_levels(spec, {**fixed_params(frozen), **frozen.params})
    if key is None or seed is None or missing:
        _skip(work, trial, f"not enqueued by ablate (no cell, seed or level of {missing}); nothing was run")
        return
    duplicate = _duplicate_of(work, trial.number, key, int(seed))
    if duplicate:
        _skip(work, trial, duplicate)
        return
    params = retry(lambda: suggest(trial, spec), what="set the params")
    seed = int(seed)
    confirming = frozen.user_attrs.get(CONFIRM_ATTR) is not None  # a search's winner or baseline: one seed, never pruned
    averages = averaging(spec) and not confirming
    seeds = spec.seeds if averages else [seed]
    label = f"{work.name} #{trial.number} {key}" + ("" if averages else f" seed={seed}")
    retry_of_run = frozen.user_attrs.get(RETRY_OF_RUN)
    tags: dict[str, Any] = {**work.tags, "ablate.trial": trial.number, "ablate.cell": key, "ablate.seed": seed}
    if averages:
        tags["ablate.seed"] = ",".join(map(str, seeds))
    if confirming:  # which run confirms what, in MLflow too
        tags[CONFIRM_ATTR] = frozen.user_attrs[CONFIRM_ATTR]
    if frozen.user_attrs.get(RETRY_OF_TRIAL) is not None:
        tags[RETRY_OF_TRIAL] = frozen.user_attrs[RETRY_OF_TRIAL]
    if retry_of_run:
        tags[RETRY_OF_RUN] = retry_of_run
    if frozen.user_attrs.get(RETRY_REASON):
        tags[RETRY_REASON] = frozen.user_attrs[RETRY_REASON]
    run = tracker.start_trial(work.experiment_id, work.parent_run_id, label.removeprefix(f"{work.name} "), tags)
    set_attr(RUN_ATTR, run.run_id)
    if retry_of_run:
        tracker.tag(retry_of_run, {RETRIED_IN_RUN: run.run_id})
    run.log_params(spec.run_config(params, seed=seed).flat())

    reached: dict[str, int] = {}
    try:
        if averages:
            metrics, epochs_run = _train_seeds(work, trial, run, params, seeds, tags, progress, label, reached)
        else:
            result = _train_one(work, trial, run, params, seed, progress, label, reached, report_epochs=not confirming)
            metrics, epochs_run = result.metrics, result.epochs_run
            if result.stopped != "epochs":
                run.set_tags({"ablate.stopped_by": result.stopped})
        run.flush()  # MLflow logging runs in the background: a write that failed fails the trial here
    except optuna.TrialPruned as pruned:
        if "seed" in reached:  # the Wilcoxon pruner stops between seeds
            run.set_tags({"ablate.stopped_seed": reached["seed"]})
        run.finish("pruned", epoch=reached.get("epoch"))
        _tell(work, trial, run, state=TrialState.PRUNED)
        progress.end_trial(label, f"pruned ({pruned})")
    except Exception as error:  # noqa: BLE001 - any failure ends this trial, not the worker
        set_attr(ERROR_ATTR, scrub(f"{type(error).__name__}: {error}")[:2000])
        run.finish("failed", error=error)
        _tell(work, trial, run, state=TrialState.FAIL)
        progress.end_trial(label, f"[red]FAILED[/red] {type(error).__name__}: {scrub(str(error))}")
    except BaseException as error:  # Ctrl-C, SIGTERM: record, hand the trial back, then stop
        set_attr(ERROR_ATTR, interruption(error))
        run.finish("interrupted", error=error)
        if _tell(work, trial, run, state=TrialState.FAIL) and requeue_on_interrupt:
            frozen = retry(lambda: work.cached.get_trial(trial_id(trial)), what="read the trial")
            requeue(work.study, frozen, f"{interruption(error)} on {worker_id()}")
        raise
    else:
        values = objective_values(spec, metrics)
        run.log_metrics(epochs_run, {"parameters": metrics["parameters"]} if "parameters" in metrics else {})
        run.finish("complete", epoch=epochs_run)
        if _tell(work, trial, run, values=values):
            shown = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(spec.objective, values))
            progress.end_trial(label, shown)
        else:
            progress.end_trial(label, "[yellow]lost[/yellow]: failed as stale meanwhile; its retry runs it")


def averaging(spec: StudySpec) -> bool:
    """Whether each trial trains every seed and reports their mean (`search.seeds: average`)."""
    return spec.design == "search" and spec.search.seeds == "average"


def _train_one(
    work: StudyWork,
    trial: optuna.Trial,
    log: Any,
    params: dict[str, Level],
    seed: int,
    progress: StudyProgress,
    label: str,
    reached: dict[str, int],
    *,
    report_epochs: bool = True,
) -> Any:
    """Train one seed of the trial into `log`; report each epoch to the pruner when asked."""
    spec = work.spec

    def report(epoch: int, metrics: dict[str, float]) -> None:
        reached["epoch"] = epoch
        if not report_epochs or len(spec.objective) > 1:
            return  # Optuna cannot report (or prune) multi-objective trials
        retry(lambda: trial.report(metrics[spec.primary.metric], epoch), what="report an epoch")
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    run = spec.run_config(params, seed=seed)
    return train_trial(
        run, family_for(run.model.family), tracking=spec.tracking, log=log, progress=progress, label=label, report=report
    )


def _train_seeds(
    work: StudyWork,
    trial: optuna.Trial,
    run: Any,
    params: dict[str, Level],
    seeds: list[int],
    tags: dict[str, Any],
    progress: StudyProgress,
    label: str,
    reached: dict[str, int],
) -> tuple[dict[str, float], int]:
    """Train each seed in a run nested under the trial's; report each seed's value (Wilcoxon pruner).

    The trial's value is the mean over seeds of each metric; the trial's run logs those means.
    """
    spec = work.spec
    finals: list[dict[str, float]] = []
    epochs_run = 0
    for index, seed in enumerate(seeds):
        seed_run = work.tracker.start_trial(
            work.experiment_id, run.run_id, f"seed={seed}", {**tags, "ablate.seed": seed, PARENT_TAG: "seed"}
        )
        seed_run.log_params(spec.run_config(params, seed=seed).flat())
        try:
            result = _train_one(work, trial, seed_run, params, seed, progress, f"{label} seed={seed}", reached, report_epochs=False)
        except BaseException as error:
            seed_run.finish("interrupted" if not isinstance(error, Exception) else "failed", error=error)
            raise
        seed_run.finish("complete", epoch=result.epochs_run)
        finals.append(result.metrics)
        epochs_run = max(epochs_run, result.epochs_run)
        reached["seed"] = seed
        value = result.value(spec.primary.metric)
        run.log_metrics(index, {f"seed_{spec.primary.metric}": value})
        if len(spec.objective) == 1:
            retry(lambda: trial.report(value, index), what="report a seed")  # noqa: B023 - called at once
            if index + 1 < len(seeds) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after seed {seed} ({index + 1} of {len(seeds)})")
    means = {name: sum(f[name] for f in finals) / len(finals) for name in finals[0]}
    run.log_metrics(epochs_run, means)
    return means, epochs_run


def _missing_levels(spec: StudySpec, fixed: dict[str, Any]) -> list[str]:
    """Factors an enqueued trial should have fixed but has not (a search asks for them instead)."""
    if spec.design == "search":
        return []
    missing: list[str] = []
    present: dict[str, Level] = {}
    for name, factor in spec.factors.items():
        if not factor.active(present):
            continue
        if name in fixed:
            present[name] = fixed[name]
        else:
            missing.append(name)
    return missing


def _duplicate_of(work: StudyWork, number: int, key: str, seed: int) -> str | None:
    for other in work.trials((*DONE_STATES, *LIVE_STATES)):
        if other.number == number or (other.user_attrs.get(CELL_ATTR), other.user_attrs.get(SEED_ATTR)) != (key, seed):
            continue
        if other.state in DONE_STATES:
            return f"{SKIPPED} trial {other.number} already finished {key} seed={seed}"
        if other.number < number:
            return f"{SKIPPED} trial {other.number} ({other.state.name}) holds {key} seed={seed}"
    return None


def _tell(
    work: StudyWork, trial: optuna.Trial, run: Any, *, values: list[float] | None = None, state: TrialState | None = None
) -> bool:
    """Tell the trial's outcome; False when another worker failed it as stale meanwhile.

    `skip_if_finished` makes a repeated tell (the first one's answer lost with the connection)
    harmless; the trial's state afterwards tells whether ours was the tell that counted.
    """
    wanted = state or TrialState.COMPLETE
    told = retry(
        lambda: work.study.tell(trial, values, state=state, skip_if_finished=True), what="tell the outcome"
    )
    if told.state == wanted and (values is None or told.values == list(values)):
        return True
    reason = "this worker lost its heartbeat; the trial was failed as stale and retried, so this result is not used"
    run.finish("interrupted", error=LostTrialError(reason))
    return False


