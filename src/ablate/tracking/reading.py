"""Reading what MLflow holds for a study: artifacts, metric histories; and logging the report back.

The report and the weight study read runs only through these functions, so MLflow stays in
`ablate.tracking`. A run that lacks an artifact (a failed upload, an older run) leaves a gap in
what is returned, never an error.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from ablate.project import Project
from ablate.tracking.retry import retry_tracking

MODEL_ARTIFACT = "model/model.keras"  # a trial's saved model (ensembles load members from it)
FINAL_IMAGE = "reconstructions/final.png"
WEIGHTS_FILE = "ensemble/weights.json"


def has_model(client: Any, run_id: str) -> bool:
    """Whether a trial's run holds its saved model."""
    try:
        listed = retry_tracking(lambda: client.list_artifacts(run_id, "model"), what="list a member's artifacts")
    except Exception:  # noqa: BLE001 - a run gone with its experiment: no model
        return False
    return any(item.path == MODEL_ARTIFACT for item in listed)


def download_final_images(
    project: Project, run_ids: dict[str, str], folder: Path, artifact: str = FINAL_IMAGE
) -> dict[str, Path]:
    """Each named run's `artifact` (`reconstructions/final.png`), downloaded under `folder` (missing ones left out)."""
    found: dict[str, Path] = {}
    if not run_ids:
        return found
    client = mlflow_client(project)
    for label, run_id in run_ids.items():
        destination = folder / run_id
        destination.mkdir(parents=True, exist_ok=True)
        try:
            found[label] = Path(client.download_artifacts(run_id, artifact, str(destination)))
        except Exception:  # noqa: BLE001, S112 - a run without its picture (failed upload) leaves a gap, not a crash
            continue
    return found


def list_run_artifacts(project: Project, run_ids: list[str], folder: str) -> dict[str, list[str]]:
    """Run id -> the artifact paths under `folder` of that run (empty when it has none or is gone)."""
    listed: dict[str, list[str]] = {}
    if not run_ids:
        return listed  # no run to read: do not open (or create) the store
    client = mlflow_client(project)
    for run_id in dict.fromkeys(run_ids):
        try:
            listed[run_id] = sorted(a.path for a in client.list_artifacts(run_id, folder) if not a.is_dir)
        except Exception:  # noqa: BLE001 - a deleted run: nothing to show, not a crash
            listed[run_id] = []
    return listed


def read_json_artifacts(project: Project, run_ids: list[str], artifact: str = WEIGHTS_FILE) -> dict[str, Any]:
    """Run id -> the parsed JSON `artifact` of that run (`ensemble/weights.json`); runs without it left out."""
    found: dict[str, Any] = {}
    if not run_ids:
        return found
    client = mlflow_client(project)
    with tempfile.TemporaryDirectory(prefix="ablate-report-") as scratch:
        for run_id in dict.fromkeys(run_ids):
            try:
                path = client.download_artifacts(run_id, artifact, str(Path(scratch) / run_id))
                found[run_id] = json.loads(Path(path).read_text())
            except Exception:  # noqa: BLE001, S112 - a run that never logged it (failed trial, older run): left out
                continue
    return found


def download_artifact(project: Project, run_id: str, artifact: str, destination: Path) -> bool:
    """Copy one artifact of a run to the file `destination`; False when the run has no such artifact."""
    with tempfile.TemporaryDirectory(prefix="ablate-report-") as scratch:
        try:
            path = mlflow_client(project).download_artifacts(run_id, artifact, scratch)
        except Exception:  # noqa: BLE001 - a missing picture leaves a gap in the report, not a crash
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
    return True


def log_report(project: Project, parent_run_id: str, folder: Path, files: list[Path]) -> None:
    """Log the report's `files` (inside `folder`) to the study's parent run under `report/`.

    Only the files this report wrote: a reused folder (or `--out .`) may hold anything else,
    an older report's pictures among it, and none of that belongs to this report.
    """
    client = mlflow_client(project)
    for file in files:
        parent = file.relative_to(folder).parent.as_posix()
        client.log_artifact(parent_run_id, str(file), artifact_path="report" if parent == "." else f"report/{parent}")


def mlflow_client(project: Project) -> MlflowClient:
    """An MLflow client on the project's tracking store."""
    # MLflow draws a progress bar per artifact on stderr; a report downloads several small PNGs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return MlflowClient(tracking_uri=project.tracking_uri)


def metric_histories(project: Project, run_ids: list[str], metrics: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Run id -> metric -> its (step, value) points in step order, finite values only."""
    if not run_ids:
        return {}  # no run to read: do not open (or create) the store
    client = mlflow_client(project)
    return {
        run_id: {
            metric: [
                (m.step, m.value)
                for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
                if math.isfinite(m.value)
            ]
            for metric in metrics
        }
        for run_id in run_ids
    }


# Where the MLflow 3 UI shows an experiment's runs table (its route `/experiments/:experimentId/runs`).
# `workflowType=machine_learning` picks the UI's model-training layout over the GenAI one it defaults
# to (remembered per browser), whose experiment page opens on the GenAI overview or the traces.
RUNS_VIEW = "#/experiments/{experiment_id}/runs?workflowType=machine_learning"
RUN_PAGE = "#/experiments/{experiment_id}/runs/{run_id}"


def runs_view_url(ui: str, experiment_id: str) -> str:
    """The UI's table of an experiment's runs, under the UI's address `ui` (`http://127.0.0.1:5000`)."""
    return f"{ui.rstrip('/')}/{RUNS_VIEW.format(experiment_id=experiment_id)}"


def run_page_url(ui: str, experiment_id: str, run_id: str) -> str:
    """The UI's page of one run."""
    return f"{ui.rstrip('/')}/{RUN_PAGE.format(experiment_id=experiment_id, run_id=run_id)}"


def study_experiment_id(project: Project, study: str) -> str | None:
    """The id of the MLflow experiment that holds a study's runs, looked up in the project's tracking store.

    The experiment of the study's parent run (tags `ablate.role=study`, `ablate.study=NAME`), which
    `tracking.experiment` may have named otherwise; else the experiment named like the study (a
    study whose parent run is gone); None when the store has neither.
    """
    client = mlflow_client(project)
    experiments = list(retry_tracking(lambda: client.search_experiments(), what="list the experiments"))
    ids = [e.experiment_id for e in experiments]
    plain = re.fullmatch(r"[A-Za-z0-9._-]+", study) is not None  # a study's name never needs quoting (NAME_PATTERN)
    for start in range(0, len(ids) if plain else 0, 100):  # search_runs takes a bounded list of experiments
        search = partial(
            client.search_runs,
            ids[start : start + 100],
            filter_string=f"tags.`ablate.role` = 'study' and tags.`ablate.study` = '{study}'",
            max_results=1,
        )
        found = retry_tracking(search, what="find the study's parent run")
        if found:
            return str(found[0].info.experiment_id)
    named = next((e for e in experiments if e.name == study), None)
    return str(named.experiment_id) if named is not None else None
