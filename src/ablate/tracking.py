"""MLflow, called directly: one experiment per study, a parent run per study, a nested run per trial.

The only module that imports MLflow. Runs are addressed by id through `MlflowClient`, never
through MLflow's global "active run", so nothing here depends on call order or threads.
"""

from __future__ import annotations

import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import ablate

TrialState = Literal["complete", "failed", "pruned", "interrupted"]
MLFLOW_STATUS = {"complete": "FINISHED", "failed": "FAILED", "pruned": "FINISHED", "interrupted": "KILLED"}
PARENT_TAG = "ablate.role"
MAX_TAG = 5000


@dataclass(frozen=True)
class TrialRun:
    """One trial's nested MLflow run."""

    client: MlflowClient
    run_id: str

    def log_params(self, params: dict[str, Any]) -> None:
        """Params under their dotted names; MLflow takes at most 100 per call."""
        items = [Param(name, _param_value(value)) for name, value in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """All metrics of one epoch in one call, with `step=epoch`."""
        timestamp = _now_ms()
        self.client.log_batch(
            self.run_id, metrics=[Metric(name, float(value), timestamp, step) for name, value in metrics.items()]
        )

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """A uint8 image as a PNG artifact."""
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text artifact, e.g. the model summary."""
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Tags, values cut to MLflow's limit."""
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()])

    def finish(self, state: TrialState, *, error: BaseException | None = None, epoch: int | None = None) -> None:
        """End the run with the status that matches the trial's state, recording why it ended."""
        tags: dict[str, Any] = {"ablate.state": state}
        if epoch is not None:
            tags["ablate.stopped_epoch"] = epoch
        if error is not None:
            tags["ablate.error"] = f"{type(error).__name__}: {error}"
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            try:
                self.log_text(text, "error.txt")
            except Exception:  # the tag above already holds the reason
                pass
        self.set_tags(tags)
        self.client.set_terminated(self.run_id, status=MLFLOW_STATUS[state])


class Tracker:
    """MLflow for one study: its experiment, its parent run, and the trials' nested runs."""

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._artifact_root = artifact_root

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (with its artifacts under the project folder) if new."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        location = f"{self._artifact_root}/{name}" if self._artifact_root else None
        return self.client.create_experiment(name, artifact_location=location)

    def parent_run(self, experiment_id: str, study: str, tags: dict[str, Any]) -> str:
        """The study's parent run: reopened when the study resumes, created otherwise."""
        found = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = 'study' and tags.`ablate.study` = '{study}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(
                experiment_id, run_name=study, tags={PARENT_TAG: "study", "ablate.study": study}
            ).info.run_id
        TrialRun(self.client, run_id).set_tags(tags)
        return run_id

    def start_trial(self, experiment_id: str, parent_run_id: str, name: str, tags: dict[str, Any]) -> TrialRun:
        """A nested run under the study's parent run."""
        all_tags = {"mlflow.parentRunId": parent_run_id, PARENT_TAG: "trial", **tags}
        run = self.client.create_run(experiment_id, run_name=name, tags={k: str(v)[:MAX_TAG] for k, v in all_tags.items()})
        return TrialRun(self.client, run.info.run_id)

    def end_parent(self, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
        """Summarise the study on its parent run and end it."""
        run = TrialRun(self.client, run_id)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if metrics:
            run.log_metrics(0, metrics)
        run.set_tags({f"ablate.{k}": v for k, v in summary.items() if k not in metrics})
        self.client.set_terminated(run_id, status=status)

    def end_stale(self, run_id: str, reason: str) -> None:
        """End a run left RUNNING by a process that died, with the reason."""
        run = TrialRun(self.client, run_id)
        try:
            if self.client.get_run(run_id).info.status == "RUNNING":
                run.set_tags({"ablate.state": "interrupted", "ablate.error": reason})
                self.client.set_terminated(run_id, status="KILLED")
        except Exception:  # the run may be gone with a deleted experiment; nothing to end
            pass


def environment_tags() -> dict[str, str]:
    """Package version and the git commit of the working directory, when there is one."""
    tags = {"ablate.version": ablate.__version__}
    commit = git_commit()
    if commit:
        tags["ablate.git_commit"] = commit
    return tags


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit (with `-dirty` when the tree has changes), or None outside a repository."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def _param_value(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
