"""`ablate submit`: put a study into a shared storage for workers, with its spec and its grid, and run nothing."""

from __future__ import annotations

from dataclasses import dataclass

from ablate.errors import AblateError
from ablate.project import Project
from ablate.runtime.logs import quiet_libraries
from ablate.runtime.rounds import enqueue_wanted
from ablate.runtime.storage import open_storage, reach_tracking, stale_grace
from ablate.runtime.studies import prepare_study, require_spec_backend
from ablate.spec.loading import LoadedSpec
from ablate.tracking.tracker import Tracker


@dataclass(frozen=True)
class Submission:
    """What a submit did: how many trials it enqueued, and the study's MLflow experiment and parent run."""

    added: int
    experiment_id: str
    parent_run_id: str


def submit_study(loaded: LoadedSpec, project: Project) -> Submission:
    """Create (or find) the study in the storage, store its spec, and enqueue every missing (cell, seed) pair.

    Raises:
        AblateError: a study that workers cannot run (a KerasTuner study, a weight study).
    """
    spec = loaded.spec
    if spec.engine != "optuna":
        raise AblateError(
            f"{spec.name}: engine {spec.engine} runs its tuner in one process; run it with `ablate run` "
            "(submit and workers share Optuna studies only; see docs/engines.md)"
        )
    if spec.model.family == "ensemble" and spec.ensemble.source == "study":
        raise AblateError(
            f"{spec.name}: a weight study (ensemble.source: study) scores all its trials in one process in seconds; "
            "run it with `ablate run` (workers do not run it; see docs/study-files.md#the-ensemble-family)"
        )
    require_spec_backend(spec)  # before the storage or a run exists
    quiet_libraries()
    storage = open_storage(project.storage, heartbeat=None, grace=stale_grace())
    reach_tracking(project.tracking_uri)  # before the study is created
    tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
    study, experiment_id, parent_run_id = prepare_study(loaded, project, storage, tracker)
    return Submission(added=enqueue_wanted(study, loaded.spec), experiment_id=experiment_id, parent_run_id=parent_run_id)
