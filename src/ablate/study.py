"""Optuna: the study in its storage, the grid cells enqueued once, and the loop that runs them.

The validated spec is stored inside the Optuna study, so a study can be resumed (and later rebuilt
by any worker) from the storage alone. Each (cell, seed) pair is one enqueued trial; running a
study again enqueues only the pairs that have no finished or waiting trial, so finished cells are
never run twice and missing ones are run.
"""

from __future__ import annotations

import fcntl
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import AblateError
from ablate.home import Project, redact
from ablate.progress import StudyProgress
from ablate.sampling import directions, pruner_for, require_samplers, sampler_for
from ablate.spec import LoadedSpec, StudySpec, cell_key

SPEC_ATTR = "ablate.spec"
FINGERPRINT_ATTR = "ablate.fingerprint"
CELL_ATTR = "ablate.cell"
SEED_ATTR = "ablate.seed"
RUN_ATTR = "mlflow_run_id"
ERROR_ATTR = "ablate.error"
SKIPPED = "skipped:"  # the start of ERROR_ATTR of a trial that was never run (a duplicate, over budget)
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyConflictError(AblateError):
    """The stored study was made with other settings; resuming would mix incomparable results."""


class StudyNotFoundError(AblateError):
    """No study of that name in the storage."""


class StudyBusyError(AblateError):
    """Another `ablate run` of the same study is running from this project folder."""


@dataclass(frozen=True)
class TrialRecord:
    """One Optuna trial as the analysis sees it."""

    number: int
    state: str
    cell: str
    seed: int | None
    params: dict[str, Any]
    value: float | None
    run_id: str | None
    error: str | None


@dataclass(frozen=True)
class StudyOutcome:
    """What a `run` did and where its results are."""

    name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    total: int
    complete: int
    failed: int
    pruned: int
    ran: int


def open_study(spec: StudySpec, storage: Any) -> optuna.Study:
    """Create the study, or load it and check that it was made with the same settings.

    `storage` is a URL or an `optuna.storages.RDBStorage` (see `ablate.storage.open_storage`).
    """
    require_samplers(spec)  # a missing sampler package must not leave an empty study behind
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        directions=directions(spec),
        pruner=pruner_for(spec),
        load_if_exists=True,
    )
    if study.directions != [optuna.study.StudyDirection[d.upper()] for d in directions(spec)]:
        raise StudyConflictError(
            f"study {spec.name!r} in {_where(storage)} has objectives in other directions "
            f"({[d.name.lower() for d in study.directions]}); give this variant its own name (--set name={spec.name}-v2)"
        )
    # A local run is one worker: salt 0 makes its search reproducible (see sampler_for).
    study.sampler = sampler_for(spec, trials_so_far=len(study.get_trials(deepcopy=False)), salt="0")
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    fingerprint = spec.fingerprint()
    if stored is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif stored != fingerprint:
        changes = _differences(stored, fingerprint)
        raise StudyConflictError(
            f"study {spec.name!r} in {_where(storage)} was run with other settings ({'; '.join(changes[:5])}). "
            "Resuming would mix results that cannot be compared. Give this variant its own name "
            f"(--set name={spec.name}-v2) or delete the study (`optuna delete-study --study-name {spec.name} "
            f"--storage {_where(storage)}`)."
        )
    study.set_user_attr(SPEC_ATTR, spec.to_file())
    return study


def load_study(name: str, storage: str) -> optuna.Study:
    """Load an existing study by name, with a clear error listing the known ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise StudyNotFoundError(f"no study {name!r} in {redact(storage)}; known studies: {known}") from None


def enqueue_missing(study: optuna.Study, spec: StudySpec) -> int:
    """Enqueue every (cell, seed) pair without a finished, running or waiting trial; return how many."""
    present = {
        (t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR))
        for t in study.get_trials(deepcopy=False)
        if t.state in (*DONE_STATES, TrialState.RUNNING, TrialState.WAITING)
    }
    added = 0
    for cell in spec.cells():
        key = cell_key(cell)
        for seed in spec.seeds:
            if (key, seed) in present:
                continue
            study.enqueue_trial(params=dict(cell), user_attrs={CELL_ATTR: key, SEED_ATTR: seed})
            added += 1
    return added


def fail_interrupted(study: optuna.Study, end_run: Any) -> int:
    """Mark RUNNING trials failed: only called while holding the study's lock, so they are stale."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        reason = "interrupted: the process running this trial ended before it finished"
        study._storage.set_trial_user_attr(trial._trial_id, ERROR_ATTR, reason)
        study.tell(trial.number, state=TrialState.FAIL)
        if trial.user_attrs.get(RUN_ATTR):
            end_run(trial.user_attrs[RUN_ATTR], reason)
    return len(stale)


@contextmanager
def study_lock(project: Project, name: str) -> Iterator[None]:
    """Hold an exclusive lock on the study for this project folder (one local `run` at a time)."""
    folder = project.ensure().home / "locks"
    folder.mkdir(exist_ok=True)
    with open(folder / f"{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StudyBusyError(
                f"study {name!r} is already running from {project.home} (another `ablate run`); "
                "wait for it or stop it first"
            ) from None
        yield


def run_study(
    loaded: LoadedSpec,
    project: Project,
    *,
    progress: StudyProgress,
    workers: int = 1,
    gpus: tuple[str, ...] = (),
    recycle_after: int = 0,
) -> StudyOutcome:
    """Run every missing (cell, seed) trial of a study, logging each to MLflow.

    A trial that fails (a NaN loss, an error) ends its MLflow run as FAILED with the reason and the
    study goes on; Ctrl-C ends the current run as KILLED and its trial as FAIL, so the next `run`
    retries it. With `workers` > 1 (or `gpus`), that many `ablate worker` processes share the
    study through the storage, each pinned to one of `gpus` in turn. With `recycle_after` > 0
    trials run in child worker processes, each replaced by a fresh one after that many trials (the
    memory TensorFlow keeps from each model goes with it); 0 runs one worker in this process.
    """
    require_samplers(loaded.spec)  # before the project folder, the storage or a run exists
    if loaded.spec.model.family == "ensemble" and loaded.spec.ensemble.source == "study":  # cheap weight trials
        from ablate.weight_study import run_weight_study

        return run_weight_study(loaded, project, progress=progress)
    from ablate.data import load_splits
    from ablate.tracking import Tracker

    spec = loaded.spec
    if spec.engine == "keras-tuner":  # KerasTuner chooses the trials; see ablate.engines.keras_tuner
        from ablate.engines.keras_tuner import run_keras_tuner

        return run_keras_tuner(loaded, project, progress=progress, workers=workers, gpus=gpus)
    _quiet_libraries()
    for cell in spec.cells():
        load_splits(spec.run_config(cell, seed=spec.seed).data)  # fail before creating anything
    project.ensure()
    with study_lock(project, spec.name):
        tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
        storage = _storage_for(project.storage, tracker)
        study, experiment_id, parent_run_id = prepare_study(loaded, project, storage, tracker)
        if _is_local(project):
            fail_interrupted(study, tracker.end_stale)
        enqueue_missing(study, spec)
        counts = tally(spec, study.get_trials(deepcopy=False))
        progress.start_study(spec.name, counts.total, counts.complete + counts.pruned)
        before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        interrupted = False
        try:
            if workers == 1 and not gpus and not recycle_after:
                from ablate.worker import StudyWork, serve

                work = StudyWork(study, storage, spec, tracker, experiment_id, parent_run_id)
                serve(lambda: [work], progress=progress, requeue_on_interrupt=False, end_parents=False)
            else:
                from ablate.launch import run_workers

                run_workers(
                    spec.name, project, workers=workers, gpus=gpus, console=progress.console, recycle_after=recycle_after,
                    on_trial_end=progress.end_trial,
                )
        except BaseException:
            interrupted = True
            raise
        finally:
            ran = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in before)
            outcome = _outcome(study, spec, project, experiment_id, parent_run_id, ran)
            summary, status = study_summary(spec, study.get_trials(deepcopy=False))
            tracker.end_parent(parent_run_id, status="KILLED" if interrupted else status, summary=summary)
    return outcome


def prepare_study(
    loaded: LoadedSpec, project: Project, storage: Any, tracker: Any
) -> tuple[optuna.Study, str, str]:
    """Create or load the study, store its spec, and open its MLflow experiment and parent run."""
    from ablate.tracking import environment_tags

    spec = loaded.spec
    study = open_study(spec, storage)
    experiment_id = tracker.experiment_id(spec.experiment)
    parent_tags = {
        **environment_tags(),
        "ablate.storage": redact(project.storage),
        "ablate.source": str(loaded.path) if loaded.path else "",
        "ablate.profile": loaded.profile or "",
        "ablate.overrides": " ".join(loaded.overrides),
        "ablate.optuna_study": spec.name,
    }
    parent_run_id = tracker.parent_run(experiment_id, spec.name, parent_tags)
    study.set_user_attr("mlflow_experiment_id", experiment_id)
    study.set_user_attr("mlflow_parent_run_id", parent_run_id)
    return study, experiment_id, parent_run_id


@dataclass(frozen=True)
class Tally:
    """How far a study is: planned trials and distinct finished ones (a retried trial counts once)."""

    total: int
    complete: int
    failed: int
    pruned: int

    @property
    def done(self) -> bool:
        return self.complete + self.pruned >= self.total


def tally(spec: StudySpec, trials: list[FrozenTrial]) -> Tally:
    """Count (cell, seed) pairs by state; for a search, its trials (each is its own cell)."""
    if spec.design == "search":
        counted = [t for t in trials if not str(t.user_attrs.get(ERROR_ATTR, "")).startswith(SKIPPED)]
        wanted = {(t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) for t in counted}
        total = spec.search.trials
    else:
        wanted = {(cell_key(c), s) for c in spec.cells() for s in spec.seeds}
        total = len(wanted)

    def pairs(*states: TrialState) -> set[tuple[Any, Any]]:
        return {(t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) for t in trials if t.state in states} & wanted

    complete, pruned = pairs(TrialState.COMPLETE), pairs(TrialState.PRUNED)
    failed = pairs(TrialState.FAIL) - complete - pruned - pairs(TrialState.RUNNING, TrialState.WAITING)
    return Tally(total=total, complete=len(complete), failed=len(failed), pruned=len(pruned))


def primary_value(trial: FrozenTrial) -> float | None:
    """A complete trial's first objective value (multi-objective trials have several)."""
    if trial.state != TrialState.COMPLETE or not trial.values:
        return None
    return trial.values[0]


def study_summary(spec: StudySpec, trials: list[FrozenTrial]) -> tuple[dict[str, Any], str]:
    """The parent run's summary of a study's trials, and its MLflow status (FINISHED or FAILED)."""
    counts = tally(spec, trials)
    summary: dict[str, Any] = {
        "trials_complete": counts.complete, "trials_failed": counts.failed, "trials_pruned": counts.pruned
    }
    values = [t for t in trials if primary_value(t) is not None]
    if values:
        best = (min if spec.primary.direction == "minimize" else max)(values, key=lambda t: primary_value(t))
        value = primary_value(best)
        if value is not None and math.isfinite(value):
            summary[f"best_{spec.primary.metric}"] = value
        summary["best_trial"] = str(best.number)
        summary["best_cell"] = best.user_attrs.get(CELL_ATTR, "")
    return summary, "FINISHED" if counts.done else "FAILED"


def _storage_for(url: str, tracker: Any) -> Any:
    from ablate.storage import open_storage
    from ablate.worker import StaleTrialHandler

    grace = stale_grace()
    return open_storage(url, heartbeat=heartbeat_seconds(), grace=grace, on_stale=StaleTrialHandler(lambda: tracker, grace))


def heartbeat_seconds() -> int:
    """Seconds between heartbeats of a running trial: $ABLATE_HEARTBEAT or 15."""
    from ablate.storage import HEARTBEAT_SECONDS

    return _env_seconds("ABLATE_HEARTBEAT", HEARTBEAT_SECONDS)


def stale_grace() -> int:
    """Seconds without a heartbeat before a trial is stale: $ABLATE_GRACE or 60 (same for all workers)."""
    from ablate.storage import GRACE_SECONDS

    return _env_seconds("ABLATE_GRACE", GRACE_SECONDS)


def _env_seconds(name: str, default: int) -> int:
    import os

    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = int(text)
    except ValueError:
        raise AblateError(f"${name} must be a whole number of seconds; received {text!r}") from None
    if value < 1:
        raise AblateError(f"${name} must be at least 1 second; received {value}")
    return value


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of a study, with its cell, seed, value and MLflow run."""
    return [
        TrialRecord(
            number=t.number,
            state=t.state.name,
            cell=t.user_attrs.get(CELL_ATTR, ""),
            seed=t.user_attrs.get(SEED_ATTR),
            params=dict(t.params),
            value=primary_value(t),
            run_id=t.user_attrs.get(RUN_ATTR),
            error=t.user_attrs.get(ERROR_ATTR),
        )
        for t in study.get_trials(deepcopy=False)
    ]


def _outcome(
    study: optuna.Study, spec: StudySpec, project: Project, experiment_id: str, parent_run_id: str, ran: int
) -> StudyOutcome:
    counts = tally(spec, study.get_trials(deepcopy=False))
    return StudyOutcome(
        name=spec.name,
        storage=redact(project.storage),
        tracking_uri=redact(project.tracking_uri),
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        total=counts.total,
        complete=counts.complete,
        failed=counts.failed,
        pruned=counts.pruned,
        ran=ran,
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    from ablate.config import flatten

    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _where(storage: Any) -> str:
    return redact(storage if isinstance(storage, str) else str(getattr(storage, "url", "the storage")))


def _is_local(project: Project) -> bool:
    url = project.storage
    return url.startswith("sqlite:///") and Path(url.removeprefix("sqlite:///")).resolve().is_relative_to(project.home)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _quiet_libraries() -> None:
    for name in ("alembic", "mlflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Every trial builds a new model, so tf.function "retracing" warnings are expected noise.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
