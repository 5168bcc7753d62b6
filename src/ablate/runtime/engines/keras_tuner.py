"""`engine: keras-tuner`: KerasTuner chooses the trials, ablate trains and records them.

The study file is the same as for the Optuna engine; `search.sampler` picks KerasTuner's
`Hyperband`, `BayesianOptimization` or `RandomSearch`. What changes is only who chooses each
trial's factor levels:

- **Search space.** Each factor becomes a KerasTuner hyperparameter under its dotted name:
  categorical -> `hp.Choice`, int -> `hp.Int` (with `step`, or `sampling="log"`), float ->
  `hp.Float` (`sampling="log"` when `log`). A conditional factor (`when: {parent: [levels]}`) is
  declared inside `hp.conditional_scope(parent, levels)`, so KerasTuner leaves it out of trials
  where its parent is off, as Optuna does.
- **Trials.** The tuner is subclassed and its `run_trial` hands each trial to ablate: a trial is
  created in the study's Optuna storage with KerasTuner's values as its fixed params (their
  distributions come from `ablate.runtime.sampling.suggest`, as for the Optuna engine) and is run by
  `ablate.runtime.trial.run_trial`, the Optuna engine's own code: the same nested MLflow run under the
  study's parent run, tags, params, per-epoch metrics, images, model summary and model, the same
  finish states. Its runs also carry `ablate.engine=keras-tuner` and `keras_tuner.*` tags. The
  objective's value goes back to KerasTuner.
- **Hyperband's budgets.** Hyperband gives each trial `tuner/epochs` epochs. ablate trains the
  trial from scratch with its seed and stops it at that epoch (a pruner that reads the budget:
  `HyperbandBudget`), so a trial whose budget is below `train.epochs` is recorded exactly like a
  trial that Optuna's Hyperband pruner stopped there: PRUNED in Optuna (its value the metric at
  that epoch), `ablate.state=pruned` and `ablate.stopped_epoch` in MLflow. A configuration that
  Hyperband promotes to the next round is a new trial that trains again from epoch 1 with the
  same seed (same initial weights, same batch order), instead of loading a checkpoint: it costs
  `tuner/initial_epoch` extra epochs, and every run's curve starts at epoch 1.
- **Resuming.** KerasTuner keeps its own state (which trials it chose, its brackets, its
  Gaussian process) under `HOME/keras_tuner/STUDY/`; running the study again reloads it
  (`overwrite=False`), retries the trial that was interrupted and goes on. Each KerasTuner trial
  id is stored on its Optuna trials (`keras_tuner.trial_id`), so a trial that finished in Optuna
  but not in KerasTuner's state is not trained twice.

See docs/engines.md for where the two engines differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner
import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import AblateError
from ablate.project import Project
from ablate.runtime.logs import quiet_libraries
from ablate.runtime.optuna_internals import FIXED_PARAMS, study_id, trial_handle, trial_id
from ablate.runtime.progress import StudyProgress
from ablate.runtime.retries import open_worker_storage
from ablate.runtime.storage import Heartbeat, reach_tracking, retry
from ablate.runtime.studies import (
    DONE_STATES,
    StudyOutcome,
    fail_interrupted,
    is_local,
    prepare_study,
    study_lock,
    study_outcome,
    study_summary,
    tally,
)
from ablate.runtime.trial import run_trial, worker_tags
from ablate.runtime.work import StudyWork
from ablate.spec.attributes import (
    CELL_ATTR,
    EPOCHS_ATTR,
    ERROR_ATTR,
    RETRY_OF_RUN,
    RETRY_OF_TRIAL,
    RETRY_REASON,
    RUN_ATTR,
    SEED_ATTR,
    TRIAL_ID_ATTR,
)
from ablate.spec.levels import Level, format_level
from ablate.spec.loading import LoadedSpec
from ablate.spec.study_spec import StudySpec
from ablate.tracking.tracker import Tracker
from ablate.training.arrays import load_arrays
from ablate.training.device import enable_gpu_memory_growth

log = logging.getLogger(__name__)
ENGINE = "keras-tuner"
BUDGET_KEYS = ("epochs", "initial_epoch", "bracket", "round", "trial_id")  # Hyperband's `tuner/*` values
HYPERBAND_FACTOR = 3  # the reduction factor, as in the Optuna engine's Hyperband pruner
TUNER_FOLDER = "keras_tuner"


class KerasTunerEngineError(AblateError):
    """The keras-tuner engine cannot run this study as asked (workers, a missing tuner state)."""


def tuner_directory(project: Project, spec: StudySpec) -> Path:
    """Where KerasTuner keeps the study's state: `HOME/keras_tuner/STUDY`."""
    return project.home / TUNER_FOLDER / spec.name


@dataclass(frozen=True)
class Levels:
    """A categorical factor's levels as KerasTuner's `Choice` sees them, and back.

    A `Choice` holds values of one type among str, int, float and bool, and reads bools as ints;
    levels that are not all str, all int or all float (booleans, `null`, a mix) are offered as
    their YAML spelling (`true`, `null`, ...) and turned back into the level here.
    """

    levels: tuple[Level, ...]
    choices: tuple[str | int | float, ...]

    @classmethod
    def of(cls, levels: tuple[Level, ...]) -> Levels:
        types = {type(level) for level in levels}
        if len(types) == 1 and types <= {str, int, float}:
            return cls(levels, tuple(levels))  # type: ignore[arg-type]
        labels = tuple(format_level(level) for level in levels)
        if len(set(labels)) != len(labels):
            labels = tuple(repr(level) for level in levels)
        return cls(levels, labels)

    def encode(self, level: Level) -> str | int | float:
        for known, choice in zip(self.levels, self.choices):
            if type(known) is type(level) and known == level:
                return choice
        for known, choice in zip(self.levels, self.choices):
            if known == level:  # `when: {x: [1]}` for a level 1.0, as the spec's own check allows
                return choice
        raise KeyError(f"{level!r} is not one of the levels {list(self.levels)}")

    def decode(self, choice: Any) -> Level:
        for known, offered in zip(self.levels, self.choices):
            if offered == choice and type(offered) is type(choice):
                return known
        raise KeyError(f"KerasTuner chose {choice!r}, which is not one of {list(self.choices)}")




def search_space(spec: StudySpec) -> tuple[Any, dict[str, Levels]]:
    """KerasTuner's `HyperParameters` for the study's factors, and the categorical factors' codecs.

    Names are the factors' dotted names. A conditional factor is declared in a
    `conditional_scope` per parent (nested when it has several), with the parent's levels as
    KerasTuner sees them.
    """
    hp = keras_tuner.HyperParameters()
    codecs: dict[str, Levels] = {}
    for name, factor in spec.factors.items():
        with contextlib.ExitStack() as scopes:
            for parent, levels in (factor.when or {}).items():
                codec = codecs.get(parent)
                values = [codec.encode(level) if codec else level for level in levels]
                scopes.enter_context(hp.conditional_scope(parent, values))
            if factor.type == "categorical":
                codec = codecs[name] = Levels.of(tuple(factor.levels or ()))
                hp.Choice(name, list(codec.choices))
            elif factor.type == "int":
                hp.Int(
                    name, int(factor.low or 0), int(factor.high or 0),
                    step=None if factor.log else int(factor.step or 1), sampling="log" if factor.log else "linear",
                )
            else:
                hp.Float(
                    name, float(factor.low or 0), float(factor.high or 0),
                    step=factor.step, sampling="log" if factor.log else "linear",
                )
    return hp, codecs


def trial_levels(spec: StudySpec, values: dict[str, Any], codecs: dict[str, Levels], space: Any) -> dict[str, Level]:
    """The factor levels of a KerasTuner trial, in file order; conditional ones only when active.

    `values` are the trial's hyperparameter values (Hyperband's `tuner/*` entries are ignored).
    Activity is decided by the spec, as for the Optuna engine, so a factor whose parent is off
    never appears, whatever KerasTuner's values hold.
    """
    params: dict[str, Level] = {}
    for name, factor in spec.factors.items():
        if not factor.active(params):
            continue
        value = values[name] if name in values else _default(space, name)
        params[name] = codecs[name].decode(value) if name in codecs else value
    return params


def _default(space: Any, name: str) -> Any:
    for hp in space.space:
        if hp.name == name:
            return hp.default
    raise KeyError(f"no hyperparameter {name!r} in the search space")


class HyperbandBudget(optuna.pruners.BasePruner):
    """Stops a trial at the epoch budget KerasTuner's Hyperband gave it (user attr `keras_tuner.epochs`).

    A budget of `train.epochs` or more never stops a trial, so only the early rounds of a bracket
    end PRUNED, exactly where Optuna's Hyperband pruner would record a stopped trial.
    """

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        budget, step = trial.user_attrs.get(EPOCHS_ATTR), trial.last_step
        return budget is not None and step is not None and int(budget) < self.max_epochs and step >= int(budget)


class TrialRunner:
    """Runs one KerasTuner trial as an ablate trial: Optuna trial, MLflow run, training, value.

    Called by the tuner's `run_trial`; returns `{metric: value}` for KerasTuner, raises
    `FailedTrialError` for a failed trial (KerasTuner records it and goes on) and `FatalError`
    for anything that is not the trial's own failure (the storage or tracking store lost), so
    the search stops instead of skipping trials silently.
    """

    def __init__(self, work: Any, progress: StudyProgress, space: Any, codecs: dict[str, Levels]) -> None:
        self.work = work
        self.progress = progress
        self.space = space
        self.codecs = codecs
        self.tags = worker_tags(work)

    def __call__(self, kt_trial: Any) -> dict[str, float]:
        try:
            return self._run(kt_trial)
        except (keras_tuner.errors.FailedTrialError, keras_tuner.errors.FatalError):
            raise
        except Exception as error:  # not the trial's failure: stop the search, keep the cause
            raise _Fatal(f"{type(error).__name__}: {error}") from error

    def _run(self, kt_trial: Any) -> dict[str, float]:
        work, spec = self.work, self.work.spec
        metric = spec.primary.metric
        kt_id = str(kt_trial.trial_id)
        values = dict(kt_trial.hyperparameters.values)
        budget = {key: values[f"tuner/{key}"] for key in BUDGET_KEYS if f"tuner/{key}" in values}
        params = trial_levels(spec, values, self.codecs, self.space)
        attempts = self._attempts(kt_id)
        done = [t for t in attempts if t.state in DONE_STATES]
        if done:  # finished in Optuna, but KerasTuner's state was saved before it knew
            value = done[-1].value
            if value is None:
                raise keras_tuner.errors.FailedTrialError(f"trial {done[-1].number} has no {metric}")
            return {metric: float(value)}

        user_attrs: dict[str, Any] = {TRIAL_ID_ATTR: kt_id, SEED_ATTR: self._seed(kt_id, budget, attempts)}
        if "epochs" in budget:
            user_attrs[EPOCHS_ATTR] = int(budget["epochs"])
        if attempts:  # KerasTuner retries the trial an earlier run left unfinished: link them
            last = self._end_dead(attempts[-1])
            user_attrs[CELL_ATTR] = attempts[0].user_attrs.get(CELL_ATTR)
            user_attrs[RETRY_OF_TRIAL] = last.number
            user_attrs[RETRY_REASON] = str(last.user_attrs.get(ERROR_ATTR) or "interrupted")
            if last.user_attrs.get(RUN_ATTR):
                user_attrs[RETRY_OF_RUN] = last.user_attrs[RUN_ATTR]
        trial = self._create(params, user_attrs)

        tags = {**self.tags, "ablate.engine": ENGINE, TRIAL_ID_ATTR: kt_id}
        tags.update({f"keras_tuner.{'continues' if k == 'trial_id' else k}": v for k, v in budget.items()})
        work.tags = tags
        with Heartbeat(work.storage, trial_id(trial)):
            run_trial(work, trial, progress=self.progress, requeue_on_interrupt=False)
        frozen = retry(lambda: work.cached.get_trial(trial_id(trial)), what="read the trial")
        if frozen.state in DONE_STATES and frozen.value is not None:
            return {metric: float(frozen.value)}
        reason = frozen.user_attrs.get(ERROR_ATTR) or f"ended {frozen.state.name} without a value"
        raise keras_tuner.errors.FailedTrialError(f"trial {frozen.number}: {reason}")

    def _attempts(self, kt_id: str) -> list[FrozenTrial]:
        """The Optuna trials already made for this KerasTuner trial, oldest first."""
        return sorted((t for t in self.work.trials() if t.user_attrs.get(TRIAL_ID_ATTR) == kt_id), key=lambda t: t.number)

    def _seed(self, kt_id: str, budget: dict[str, Any], attempts: list[FrozenTrial]) -> int:
        """The trial's seed: its earlier attempt's; a promoted configuration's; else the next in turn.

        With `seeds: spread` the KerasTuner trial number picks the seed in turn, as the Optuna
        trial number does in the Optuna engine; a Hyperband continuation keeps the seed of the
        trial it continues, so it retrains the same model. With `seeds: average` every trial
        trains every seed (its seed attr is the first, as in the Optuna engine).
        """
        spec = self.work.spec
        if attempts and attempts[0].user_attrs.get(SEED_ATTR) is not None:
            return int(attempts[0].user_attrs[SEED_ATTR])
        if spec.search.seeds == "average":
            return spec.seed
        past = budget.get("trial_id")
        if past is not None:
            earlier = self._attempts(str(past))
            if earlier and earlier[0].user_attrs.get(SEED_ATTR) is not None:
                return int(earlier[0].user_attrs[SEED_ATTR])
        index = int(kt_id) if kt_id.isdigit() else len(self.work.trials())
        return spec.seeds[index % spec.max_repeats]

    def _end_dead(self, trial: FrozenTrial) -> FrozenTrial:
        """An earlier attempt still RUNNING belongs to a run that died (we hold the study): fail it."""
        if trial.state != TrialState.RUNNING:
            return trial
        work = self.work
        reason = "interrupted: the process running this trial ended before it finished"
        retry(lambda: work.cached.set_trial_user_attr(trial_id(trial), ERROR_ATTR, reason), what="set the error")
        retry(lambda: work.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True), what="tell")
        if trial.user_attrs.get(RUN_ATTR):
            work.tracker.end_stale(trial.user_attrs[RUN_ATTR], reason)
        return retry(lambda: work.cached.get_trial(trial_id(trial)), what="read the trial")

    def _create(self, params: dict[str, Level], user_attrs: dict[str, Any]) -> optuna.Trial:
        """A RUNNING Optuna trial with KerasTuner's levels as fixed params, as `enqueue_trial` fixes them.

        `ablate.runtime.sampling.suggest` then records each param with the distribution of its factor's
        type (categorical, int with step or log, float with log), exactly as a search of the
        Optuna engine does.
        """
        work = self.work
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, user_attrs=user_attrs, system_attrs={FIXED_PARAMS: dict(params)}
        )
        loaded_as = study_id(work.study)
        new_id = retry(lambda: work.cached.create_new_trial(loaded_as, template_trial=template), what="create a trial")
        retry(lambda: work.storage.record_heartbeat(new_id), what="first heartbeat")
        if CELL_ATTR not in user_attrs or user_attrs[CELL_ATTR] is None:
            number = retry(lambda: work.cached.get_trial(new_id), what="read the trial").number
            retry(lambda: work.cached.set_trial_user_attr(new_id, CELL_ATTR, f"trial-{number}"), what="set the cell")
        return trial_handle(work.study, new_id)


class _Fatal(keras_tuner.errors.FatalError):
    """An error of ablate's, not of the trial (the storage or the tracking store lost): stops the search."""


def _tuner_class(base: type) -> type:
    """`base` (a KerasTuner tuner) whose trials are run by a `TrialRunner`."""

    class AblateTuner(base):
        def __init__(self, runner: Callable[[Any], dict[str, float]], **kwargs: Any) -> None:
            self._ablate_runner = runner
            super().__init__(**kwargs)

        def run_trial(self, trial: Any, *fit_args: Any, **fit_kwargs: Any) -> dict[str, float]:
            return self._ablate_runner(trial)

    AblateTuner.__name__ = AblateTuner.__qualname__ = f"Ablate{base.__name__}"
    return AblateTuner


def make_tuner(spec: StudySpec, directory: Path, runner: Callable[[Any], dict[str, float]], space: Any, *, overwrite: bool) -> Any:
    """The study's KerasTuner tuner, its state in `directory` (reloaded unless `overwrite`).

    Hyperband: `max_epochs = train.epochs`, reduction factor 3, brackets repeated until
    `search.trials` trials ran. BayesianOptimization and RandomSearch: `max_trials = search.trials`.
    KerasTuner reads seed 0 as "no seed", so its oracle is seeded with `seed + 1`.
    """
    direction = "min" if spec.primary.direction == "minimize" else "max"
    common: dict[str, Any] = {
        "objective": keras_tuner.Objective(spec.primary.metric, direction=direction),
        "hyperparameters": space,
        "seed": spec.seed + 1,
        "max_consecutive_failed_trials": spec.search.trials + 1,  # failures end trials, not the study
        "directory": str(directory.parent),
        "project_name": directory.name,
        "overwrite": overwrite,
    }
    sampler = spec.search.sampler
    with contextlib.redirect_stdout(io.StringIO()):  # "Reloading Tuner from ..." and the like
        if sampler == "hyperband":
            tuner = _tuner_class(keras_tuner.Hyperband)(
                runner, max_epochs=spec.train.epochs, factor=HYPERBAND_FACTOR, hyperband_iterations=None, **common
            )
            tuner.oracle.max_trials = spec.search.trials  # KerasTuner's Hyperband has no trial budget of its own
        elif sampler == "bayesian":
            tuner = _tuner_class(keras_tuner.BayesianOptimization)(runner, max_trials=spec.search.trials, **common)
        elif sampler == "random":
            tuner = _tuner_class(keras_tuner.RandomSearch)(runner, max_trials=spec.search.trials, **common)
        else:
            raise KerasTunerEngineError(f"search.sampler {sampler!r} is not a KerasTuner tuner; use hyperband, bayesian or random")
    return tuner


def run_keras_tuner(
    loaded: LoadedSpec,
    project: Project,
    *,
    progress: StudyProgress,
    workers: int = 1,
    gpus: tuple[str, ...] = (),
) -> StudyOutcome:
    """Run a `design: search` study with KerasTuner choosing the trials; see the module docstring.

    Holds the study's lock like the Optuna engine, records every trial in the study's Optuna
    storage and MLflow experiment, and ends the parent run with the study's summary.

    Raises:
        KerasTunerEngineError: with workers or GPUs (KerasTuner's distributed mode is not wired
            up), or when KerasTuner's state of a started study is missing.
    """
    spec = loaded.spec
    if spec.engine != ENGINE or spec.design != "search":
        raise KerasTunerEngineError(f"study {spec.name!r} is not a design: search study with engine: {ENGINE}")
    if workers > 1 or gpus:
        raise KerasTunerEngineError(
            f"engine {ENGINE} runs its trials in this process, one at a time: --workers and --gpus are not "
            "supported (KerasTuner's distributed mode is not wired into ablate). Choose a GPU with "
            "CUDA_VISIBLE_DEVICES, or use engine: optuna for several workers."
        )
    quiet_libraries()
    load_arrays(spec.run_config({}, seed=spec.seed).data)  # fail before creating anything
    reach_tracking(project.tracking_uri)
    project.ensure()
    with study_lock(project, spec.name):
        storage = open_worker_storage(project.storage, lambda: tracker)  # first: an unreachable one touches no MLflow store
        tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
        study, experiment_id, parent_run_id = prepare_study(loaded, project, storage, tracker)
        if is_local(project):
            fail_interrupted(study, tracker.end_stale)
        # KerasTuner chooses every trial's params (Optuna's sampler is never asked) and stops
        # trials only at Hyperband's budgets; `search.pruner` is an Optuna engine setting.
        study.sampler = optuna.samplers.RandomSampler(seed=spec.seed)
        study.pruner = HyperbandBudget(spec.train.epochs) if spec.search.sampler == "hyperband" else optuna.pruners.NopPruner()
        if spec.search.pruner != "none":
            progress.console.print(
                f"note: search.pruner {spec.search.pruner} is an Optuna setting; engine {ENGINE} does not use it"
                + (" (Hyperband's rounds stop trials early instead)" if spec.search.sampler == "hyperband" else ""),
                highlight=False,
            )
        directory = tuner_directory(project, spec)
        overwrite = _check_state(spec, study, directory, progress)

        trials = study.get_trials(deepcopy=False)
        counts = tally(spec, trials)
        progress.start_study(spec.name, counts.total, counts.complete + counts.pruned)
        before = {t.number for t in trials if t.state.is_finished()}
        enable_gpu_memory_growth()
        work = StudyWork(study, storage, spec, tracker, experiment_id, parent_run_id)
        space, codecs = search_space(spec)
        tuner = make_tuner(spec, directory, TrialRunner(work, progress, space, codecs), space, overwrite=overwrite)
        interrupted = False
        try:
            try:
                tuner.search(verbose=0)
            except _Fatal as error:  # the runner's own error, not a trial's: raise the cause
                raise (error.__cause__ or error) from None
        except BaseException:
            interrupted = True
            raise
        finally:
            trials = study.get_trials(deepcopy=False)
            ran = sum(1 for t in trials if t.state.is_finished() and t.number not in before)
            outcome = study_outcome(study, spec, project, experiment_id, parent_run_id, ran)
            summary, status = study_summary(spec, trials)
            if not interrupted:
                outcome, status = _when_exhausted(spec, tuner, outcome, summary, status)
            tracker.end_parent(parent_run_id, status="KILLED" if interrupted else status, summary=summary)
    return outcome


def _check_state(spec: StudySpec, study: optuna.Study, directory: Path, progress: StudyProgress) -> bool:
    """Whether KerasTuner must start afresh (`overwrite`); refuse when its state of a started study is gone."""
    ours = [t for t in study.get_trials(deepcopy=False) if TRIAL_ID_ATTR in t.user_attrs]
    saved = (directory / "oracle.json").is_file()
    if ours and not saved:
        raise KerasTunerEngineError(
            f"study {spec.name!r} has {len(ours)} KerasTuner trial(s) in its storage, but KerasTuner's own state "
            f"({directory}) is missing, so the search cannot resume where it was. Restore that folder, or run "
            f"the study under a new name (--set name={spec.name}-v2)."
        )
    if saved and not ours:
        progress.console.print(
            f"note: {directory} holds a KerasTuner search that the storage has no trials of (a deleted study?); "
            "starting a new search",
            highlight=False,
        )
        shutil.rmtree(directory, ignore_errors=True)
        return True
    return False


def _when_exhausted(
    spec: StudySpec, tuner: Any, outcome: StudyOutcome, summary: dict[str, Any], status: str
) -> tuple[StudyOutcome, str]:
    """A search that KerasTuner ended before `search.trials` (no new values left) is finished, not failed."""
    chosen = len(tuner.oracle.trials)
    if chosen >= spec.search.trials or outcome.failed:
        return outcome, status
    summary["keras_tuner_stopped"] = f"KerasTuner found no new values after {chosen} trials (the space is exhausted)"
    return dataclasses.replace(outcome, total=outcome.complete + outcome.pruned), "FINISHED"
