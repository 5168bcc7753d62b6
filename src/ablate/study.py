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
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from ablate.errors import AblateError
from ablate.home import Project, redact
from ablate.progress import StudyProgress
from ablate.spec import Level, LoadedSpec, StudySpec, cell_key

SPEC_ATTR = "ablate.spec"
FINGERPRINT_ATTR = "ablate.fingerprint"
CELL_ATTR = "ablate.cell"
SEED_ATTR = "ablate.seed"
RUN_ATTR = "mlflow_run_id"
ERROR_ATTR = "ablate.error"
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


def open_study(spec: StudySpec, storage: str) -> optuna.Study:
    """Create the study, or load it and check that it was made with the same settings."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        direction=spec.objective.direction,
        # Every trial of a grid is enqueued with fixed params; the sampler is never consulted.
        sampler=optuna.samplers.RandomSampler(seed=spec.seed),
        load_if_exists=True,
    )
    stored = study.user_attrs.get(FINGERPRINT_ATTR)
    fingerprint = spec.fingerprint()
    if stored is None:
        study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
    elif stored != fingerprint:
        changes = _differences(stored, fingerprint)
        raise StudyConflictError(
            f"study {spec.name!r} in {redact(storage)} was run with other settings ({'; '.join(changes[:5])}). "
            "Resuming would mix results that cannot be compared. Give this variant its own name "
            f"(--set name={spec.name}-v2) or delete the study (`optuna delete-study --study-name {spec.name} "
            f"--storage {redact(storage)}`)."
        )
    study.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
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


def run_study(loaded: LoadedSpec, project: Project, *, progress: StudyProgress) -> StudyOutcome:
    """Run every missing (cell, seed) trial of a study, logging each to MLflow.

    A trial that fails (a NaN loss, an error) ends its MLflow run as FAILED with the reason and the
    study goes on; Ctrl-C ends the current run as KILLED and its trial as FAIL, so the next `run`
    retries it.
    """
    from ablate.data import load_splits
    from ablate.objective import train_trial
    from ablate.tracking import Tracker, environment_tags

    spec = loaded.spec
    _quiet_libraries()
    for cell in spec.cells():
        load_splits(spec.run_config(cell, seed=spec.seed).data)  # fail before creating anything
    project.ensure()
    with study_lock(project, spec.name):
        study = open_study(spec, project.storage)
        tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
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
        if _is_local(project):
            fail_interrupted(study, tracker.end_stale)
        enqueue_missing(study, spec)
        distributions = {name: CategoricalDistribution(levels) for name, levels in spec.factors.items()}
        total = len(spec.cells()) * spec.repeats
        done = _count(study, DONE_STATES)
        progress.start_study(spec.name, total, done)
        ran = 0
        from ablate.train import describe_device, enable_gpu_memory_growth

        enable_gpu_memory_growth()
        common_tags = {
            **environment_tags(),
            "ablate.study": spec.name,
            "ablate.backend": _backend(),
            "ablate.device": describe_device(),
        }
        interrupted = False
        try:
            while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                trial = study.ask(distributions)
                params: dict[str, Level] = dict(trial.params)
                seed = int(trial.user_attrs[SEED_ATTR])
                key = trial.user_attrs[CELL_ATTR]
                run_cfg = spec.run_config(params, seed=seed)
                label = f"#{trial.number} {key} seed={seed}"
                run = tracker.start_trial(
                    experiment_id,
                    parent_run_id,
                    f"{key} seed={seed}",
                    {
                        **common_tags,
                        "ablate.trial": trial.number,
                        "ablate.cell": key,
                        "ablate.seed": seed,
                    },
                )
                trial.set_user_attr(RUN_ATTR, run.run_id)
                run.log_params(run_cfg.flat())
                ran += 1

                reported: dict[str, int] = {}

                def report(epoch: int, value: float, trial: optuna.Trial = trial) -> None:
                    reported["epoch"] = epoch
                    trial.report(value, epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at epoch {epoch}")

                try:
                    result = train_trial(
                        run_cfg,
                        objective=spec.objective,
                        tracking=spec.tracking,
                        log=run,
                        progress=progress,
                        label=label,
                        report=report,
                    )
                except optuna.TrialPruned as pruned:
                    run.finish("pruned", epoch=reported.get("epoch"))
                    study.tell(trial, state=TrialState.PRUNED)
                    progress.end_trial(label, f"pruned ({pruned})")
                except Exception as error:  # noqa: BLE001 - any failure ends this trial, not the study
                    trial.set_user_attr(ERROR_ATTR, f"{type(error).__name__}: {error}"[:2000])
                    run.finish("failed", error=error)
                    study.tell(trial, state=TrialState.FAIL)
                    progress.end_trial(label, f"[red]FAILED[/red] {type(error).__name__}: {error}")
                except BaseException as error:  # Ctrl-C: record, then stop the study
                    trial.set_user_attr(ERROR_ATTR, f"interrupted ({type(error).__name__})")
                    run.finish("interrupted", error=error)
                    study.tell(trial, state=TrialState.FAIL)
                    interrupted = True
                    raise
                else:
                    run.log_metrics(result.epochs_run, {"parameters": result.parameters})
                    run.finish("complete", epoch=result.epochs_run)
                    study.tell(trial, result.value)
                    progress.end_trial(label, f"{spec.objective.metric}={result.value:.4f}")
        finally:
            outcome = _outcome(study, spec, project, experiment_id, parent_run_id, ran)
            status = "KILLED" if interrupted else "FINISHED" if outcome.complete + outcome.pruned == total else "FAILED"
            tracker.end_parent(parent_run_id, status=status, summary=_summary(study, spec, outcome))
    return outcome


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of a study, with its cell, seed, value and MLflow run."""
    return [
        TrialRecord(
            number=t.number,
            state=t.state.name,
            cell=t.user_attrs.get(CELL_ATTR, ""),
            seed=t.user_attrs.get(SEED_ATTR),
            params=dict(t.params),
            value=t.value if t.state == TrialState.COMPLETE else None,
            run_id=t.user_attrs.get(RUN_ATTR),
            error=t.user_attrs.get(ERROR_ATTR),
        )
        for t in study.get_trials(deepcopy=False)
    ]


def _outcome(
    study: optuna.Study, spec: StudySpec, project: Project, experiment_id: str, parent_run_id: str, ran: int
) -> StudyOutcome:
    # Count distinct (cell, seed) pairs, so retried trials count once.
    wanted = {(cell_key(c), s) for c in spec.cells() for s in spec.seeds}

    def pairs(states: tuple[TrialState, ...]) -> set[tuple[str, int]]:
        return {
            (t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR))
            for t in study.get_trials(deepcopy=False, states=states)
        } & wanted

    complete, pruned = pairs((TrialState.COMPLETE,)), pairs((TrialState.PRUNED,))
    failed = pairs((TrialState.FAIL,)) - complete - pruned
    return StudyOutcome(
        name=spec.name,
        storage=redact(project.storage),
        tracking_uri=redact(project.tracking_uri),
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        total=len(wanted),
        complete=len(complete),
        failed=len(failed),
        pruned=len(pruned),
        ran=ran,
    )


def _summary(study: optuna.Study, spec: StudySpec, outcome: StudyOutcome) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "trials_complete": outcome.complete,
        "trials_failed": outcome.failed,
        "trials_pruned": outcome.pruned,
    }
    values = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if values:
        best = (min if spec.objective.direction == "minimize" else max)(values, key=lambda t: t.value)
        if math.isfinite(best.value):
            summary[f"best_{spec.objective.metric}"] = best.value
        summary["best_trial"] = str(best.number)
        summary["best_cell"] = best.user_attrs.get(CELL_ATTR, "")
    return summary


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len({(t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) for t in study.get_trials(deepcopy=False, states=states)})


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    from ablate.config import flatten

    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _is_local(project: Project) -> bool:
    url = project.storage
    return url.startswith("sqlite:///") and Path(url.removeprefix("sqlite:///")).resolve().is_relative_to(project.home)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _quiet_libraries() -> None:
    for name in ("alembic", "mlflow", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
