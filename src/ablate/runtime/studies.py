"""A study in its Optuna storage: created or resumed (same settings only), its cells enqueued once, its trials tallied.

The validated spec is stored inside the Optuna study, so a study can be resumed (and later rebuilt
by any worker) from the storage alone. Each (cell, seed) pair is one enqueued trial; running a
study again enqueues only the pairs that have no finished or waiting trial, so finished cells are
never run twice and missing ones are run.
"""

from __future__ import annotations

import fcntl
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import AblateError
from ablate.project import Project
from ablate.redaction import redact
from ablate.runtime.optuna_internals import cached_storage, trial_id
from ablate.runtime.rounds import plan
from ablate.runtime.sampling import directions, pruner_for, sampler_for
from ablate.runtime.storage import retry
from ablate.spec.attributes import (
    BACKEND_ATTR,
    BACKEND_FACTOR,
    CELL_ATTR,
    CONFIRM_ATTR,
    CONFIRM_PREFIX,
    ERROR_ATTR,
    EXPERIMENT_ATTR,
    FINGERPRINT_ATTR,
    PARENT_RUN_ATTR,
    RUN_ATTR,
    SEED_ATTR,
    SKIPPED,
    SPEC_ATTR,
)
from ablate.spec.dotted import flatten
from ablate.spec.levels import cell_key
from ablate.spec.loading import LoadedSpec
from ablate.spec.samplers import require_samplers
from ablate.spec.study_spec import ADDED_SETTINGS, BACKEND_SETTING, StudySpec
from ablate.tracking.environment import environment_tags

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyConflictError(AblateError):
    """The stored study was made with other settings; resuming would mix incomparable results."""


class BackendMismatchError(AblateError):
    """The study was run on another Keras backend; one study must not mix backends (bad input, exit 2)."""

    exit_status = 2


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

    `storage` is a URL or an `optuna.storages.RDBStorage` (see `ablate.runtime.storage.open_storage`).
    """
    require_samplers(spec)  # a missing sampler package must not leave an empty study behind
    require_spec_backend(spec)  # nor a study that fixes another backend than this process's
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
    check_backend(study, spec)
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    fingerprint = spec.fingerprint()
    if stored is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif changes := _differences(stored, fingerprint):
        raise StudyConflictError(
            f"study {spec.name!r} in {_where(storage)} was run with other settings ({'; '.join(changes[:5])}). "
            "Resuming would mix results that cannot be compared. Give this variant its own name "
            f"(--set name={spec.name}-v2) or delete the study (`optuna delete-study --study-name {spec.name} "
            f"--storage {_where(storage)}`)."
        )
    study.set_user_attr(SPEC_ATTR, spec.to_file())
    names: list[str] = [objective.metric for objective in spec.objective]
    if study.metric_names != names:  # optuna-dashboard and Optuna's plots say val_loss, not "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return study


def check_backend(study: optuna.Study, spec: StudySpec) -> str:
    """Record the Keras backend on a new study, or refuse to run a study that another backend started.

    A study whose `train.backend` is a factor is recorded as `BACKEND_FACTOR`: any backend's worker
    may serve it, each taking only its own backend's trials (`trial_backend`). A fixed
    `train.backend` must be the process's. Studies stored before backends were recorded ran on
    TensorFlow, the only backend then; they are recorded as whatever backend resumes them first.

    Raises:
        BackendMismatchError: the study's trials so far trained on another backend, or the study
            fixes another.
    """
    running = require_spec_backend(spec)
    wanted = BACKEND_FACTOR if spec.backend_levels() else spec.train.backend or running
    stored = study.user_attrs.get(BACKEND_ATTR)
    if stored is None:
        retry(lambda: study.set_user_attr(BACKEND_ATTR, wanted), what="record the study's backend")
    elif stored != wanted:
        what = "trains each train.backend level on its own backend" if stored == BACKEND_FACTOR else f"trains on the {stored} backend"
        raise BackendMismatchError(
            f"study {study.study_name!r} {what}, and this process runs Keras on {running}; one study does not "
            f"mix backends. Run it with --backend {stored if stored != BACKEND_FACTOR else running}, or give "
            f"this variant its own name (--set name={study.study_name}-{running})"
        )
    return stored or wanted


def require_spec_backend(spec: StudySpec) -> str:
    """The process's Keras backend, refused when the study fixes another (`train.backend`); before anything is created.

    Raises:
        BackendMismatchError: the study sets `train.backend` to another backend than this process's.
    """
    import keras  # the backend is fixed once Keras is imported (ablate.backends.select_backend)

    running: str = keras.backend.backend()
    if spec.train.backend not in (None, running):
        raise BackendMismatchError(
            f"study {spec.name!r} sets train.backend: {spec.train.backend}, and this process runs Keras on {running}; "
            f"run it with --backend {spec.train.backend}"
        )
    return running


def trial_backend(trial: FrozenTrial) -> str | None:
    """The backend an enqueued trial must train on (its `train.backend` level), or None for any."""
    level = trial.params.get(BACKEND_SETTING, trial.system_attrs.get("fixed_params", {}).get(BACKEND_SETTING))
    return None if level is None else str(level)


def load_study(name: str, storage: str) -> optuna.Study:
    """Load an existing study by name, with a clear error listing the known ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise StudyNotFoundError(f"no study {name!r} in {redact(storage)}; known studies: {known}") from None


def fail_interrupted(study: optuna.Study, end_run: Any) -> int:
    """Mark RUNNING trials failed: only called while holding the study's lock, so they are stale."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        reason = "interrupted: the process running this trial ended before it finished"
        cached_storage(study).set_trial_user_attr(trial_id(trial), ERROR_ATTR, reason)
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


def prepare_study(
    loaded: LoadedSpec, project: Project, storage: Any, tracker: Any
) -> tuple[optuna.Study, str, str]:
    """Create or load the study, store its spec, and open its MLflow experiment and parent run."""
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
    study.set_user_attr(EXPERIMENT_ATTR, experiment_id)
    study.set_user_attr(PARENT_RUN_ATTR, parent_run_id)
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
        current = {spec.confirmation_cell("best"), spec.confirmation_cell("baseline")}  # not an earlier --baseline's
        counted = [t for t in trials if not str(t.user_attrs.get(ERROR_ATTR, "")).startswith(SKIPPED)
                   and (not str(t.user_attrs.get(CELL_ATTR, "")).startswith(CONFIRM_PREFIX)
                        or t.user_attrs.get(CELL_ATTR) in current)]
        wanted = {(t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) for t in counted}
        total = spec.planned_trials  # the search's budget and its confirmation trials
    elif spec.sequential is not None:  # the rounds so far: the total grows while comparisons stay undecided
        wanted = set(plan(spec, trials).wanted)
        total = len(wanted)
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
    values = [(t, value) for t in trials if (value := primary_value(t)) is not None and CONFIRM_ATTR not in t.user_attrs]
    if values:
        best, value = (min if spec.primary.direction == "minimize" else max)(values, key=lambda item: item[1])
        if math.isfinite(value):
            summary[f"best_{spec.primary.metric}"] = value
        summary["best_trial"] = str(best.number)
        summary["best_cell"] = best.user_attrs.get(CELL_ATTR, "")
    return summary, "FINISHED" if counts.done else "FAILED"


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


def study_outcome(
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
    """What changed between two fingerprints; a setting added since `old` was stored counts only off its default."""
    a, b = flatten(old), flatten(new)
    for name, default in ADDED_SETTINGS.items():
        if name not in a and b.get(name) == default:
            b.pop(name)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _where(storage: Any) -> str:
    return redact(storage if isinstance(storage, str) else str(getattr(storage, "url", "the storage")))


def is_local(project: Project) -> bool:
    url = project.storage
    return url.startswith("sqlite:///") and Path(url.removeprefix("sqlite:///")).resolve().is_relative_to(project.home)


LIVE_STATES = (TrialState.WAITING, TrialState.RUNNING)
