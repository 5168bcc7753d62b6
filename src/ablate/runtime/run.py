"""`ablate run`: one study, from its file to its last trial, on the engine and processes it asks for.

The one entry point above the engines: a weight study (`ensemble.source: study`) goes to
`engines.weight_study`, `engine: keras-tuner` to `engines.keras_tuner`; every other study
enqueues its missing (cell, seed) pairs and serves them here (`worker_loop.serve`) or in local
worker processes (`supervisor.run_workers`).

Keras and TensorFlow are imported only on the paths that train in this process (the three local
imports below): with `--workers N` or `--recycle-after N` this process only supervises, and stays
without them (several hundred MB, and a GPU context, it would otherwise hold for nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.backends import require_installed
from ablate.project import Project, sqlite_path
from ablate.runtime.logs import quiet_libraries
from ablate.runtime.progress import StudyProgress
from ablate.runtime.retries import open_worker_storage
from ablate.runtime.rounds import advance, enqueue_wanted
from ablate.runtime.storage import reach_tracking
from ablate.runtime.studies import (
    StudyOutcome,
    fail_interrupted,
    is_local,
    prepare_study,
    require_spec_backend,
    study_lock,
    study_outcome,
    study_summary,
    tally,
)
from ablate.runtime.supervisor import WorkerFailedError, run_workers
from ablate.runtime.work import StudyWork
from ablate.spec.loading import LoadedSpec
from ablate.spec.samplers import require_samplers
from ablate.tracking.tracker import Tracker
from ablate.training.arrays import load_arrays

if TYPE_CHECKING:
    import optuna

    from ablate.spec.study_spec import StudySpec


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
    require_spec_backend(loaded.spec)  # likewise: a study that fixes another backend than this process's
    if loaded.spec.model.family == "ensemble" and loaded.spec.ensemble.source == "study":  # cheap weight trials
        from ablate.runtime.engines.weight_study import run_weight_study  # Keras: see the note above

        return run_weight_study(loaded, project, progress=progress)

    spec = loaded.spec
    if spec.engine == "keras-tuner":  # KerasTuner chooses the trials; see ablate.runtime.engines.keras_tuner
        from ablate.runtime.engines.keras_tuner import run_keras_tuner  # Keras: see the note above

        return run_keras_tuner(loaded, project, progress=progress, workers=workers, gpus=gpus)
    quiet_libraries()
    for backend in spec.backend_levels():  # a train.backend factor: each level's workers need its library
        require_installed(backend, where="factors.train.backend:")
    for cell in spec.cells():
        load_arrays(spec.run_config(cell, seed=spec.seed).data)  # fail before creating anything
    reach_tracking(project.tracking_uri)  # seconds, not MLflow's minutes of retries; before the folder or the lock
    # A storage on a server (PostgreSQL) is reached before the project folder is made, so a run that
    # cannot reach it leaves nothing behind; a SQLite file's folder is checked (and made) first.
    served = sqlite_path(project.storage) is None and not project.storage.startswith("sqlite")
    storage = open_worker_storage(project.storage, lambda: tracker) if served else None
    project.ensure()
    with study_lock(project, spec.name):
        if storage is None:  # first: an unreachable one touches no MLflow store
            storage = open_worker_storage(project.storage, lambda: tracker)
        tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
        study, experiment_id, parent_run_id = prepare_study(loaded, project, storage, tracker)
        if is_local(project):
            fail_interrupted(study, tracker.end_stale)
        enqueue_wanted(study, spec)
        counts = tally(spec, study.get_trials(deepcopy=False))
        progress.start_study(spec.name, counts.total, counts.complete + counts.pruned)
        before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        interrupted = False
        try:
            if workers == 1 and not gpus and not recycle_after and not spec.backend_levels():
                from ablate.runtime.worker_loop import serve  # Keras: see the note above

                work = StudyWork(study, storage, spec, tracker, experiment_id, parent_run_id)
                serve(lambda: [work], progress=progress, requeue_on_interrupt=False, end_parents=False)
            else:
                _run_workers_retrying_lost_trials(study, spec, project, tracker, progress, workers, gpus, recycle_after)
        except BaseException:
            interrupted = True
            raise
        finally:
            ran = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in before)
            outcome = study_outcome(study, spec, project, experiment_id, parent_run_id, ran)
            summary, status = study_summary(spec, study.get_trials(deepcopy=False))
            tracker.end_parent(parent_run_id, status="KILLED" if interrupted else status, summary=summary)
    return outcome


WORKER_RESTARTS = 2  # rounds of workers started again after one died mid-trial (killed, out of memory)


def _run_workers_retrying_lost_trials(
    study: optuna.Study, spec: StudySpec, project: Project, tracker: Tracker, progress: StudyProgress,
    workers: int, gpus: tuple[str, ...], recycle_after: int,
) -> None:
    """Local worker processes until the study is done; a trial lost with a dead worker runs again.

    A worker process (or its fork) killed mid-trial (`kill -9`, the kernel's out-of-memory killer)
    leaves its trial RUNNING. Once every worker of this run has exited, a RUNNING trial of a local
    study can belong to no one (this run holds the study's lock), so it is marked FAIL with its
    MLflow run ended, its (cell, seed) enqueued again, and the workers started again, at most
    `WORKER_RESTARTS` times; after that the error stands, with nothing left RUNNING. A shared
    storage's stale trials are the heartbeat's to judge (ablate.runtime.retries), not this run's.
    """
    for restart in range(WORKER_RESTARTS + 1):
        failure: WorkerFailedError | None = None
        try:
            run_workers(
                spec.name, project, workers=workers, gpus=gpus, console=progress.console, recycle_after=recycle_after,
                on_trial_end=progress.end_trial, backends=spec.backend_levels(),
            )
        except WorkerFailedError as error:
            failure = error
        lost = fail_interrupted(study, tracker.end_stale) if is_local(project) else 0
        if failure is None and lost == 0:
            if spec.sequential is not None and advance(study, spec)[1]:  # a round no worker enqueued: run it too
                continue
            return
        if lost == 0 or restart == WORKER_RESTARTS:
            counts = tally(spec, study.get_trials(deepcopy=False))
            if failure is not None and counts.complete + counts.pruned < counts.total:
                raise failure
            if failure is not None:  # the others retried its trial (a stale heartbeat): the study is whole
                progress.console.print(f"[yellow]{failure}[/yellow]; its trial was run again by another worker", highlight=False)
            return
        progress.console.print(
            f"[yellow]{lost} trial(s) lost with a worker process that ended mid-trial[/yellow] ({failure or 'no error'}); "
            "marked failed, their MLflow runs ended, and run again",
            highlight=False,
        )
        enqueue_wanted(study, spec)
