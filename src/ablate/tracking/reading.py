"""Reading what MLflow holds for a study: artifacts, metric histories; and logging the report back.

The report and the weight study read runs only through these functions, so MLflow stays in
`ablate.tracking`. A run that lacks an artifact (a failed upload, an older run) leaves a gap in
what is returned, never an error.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
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
