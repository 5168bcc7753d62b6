"""MLflow for a study: one experiment per study, a parent run per study, a nested run per trial.

Runs are addressed by id through `MlflowClient`, never through MLflow's global "active run", so
nothing here depends on call order or threads.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from functools import partial
from typing import Any

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ablate.tracking.retry import retry_tracking
from ablate.tracking.trial_run import MAX_BATCH, MAX_TAG, TrialRun


def open_client(tracking_uri: str) -> MlflowClient:
    """A client of the tracking store; a SQLite store is created (or migrated) under a file lock.

    MLflow creates a new SQLite store's tables and runs its migrations on first use. Processes that
    start on a fresh project together (two `ablate run`s, local workers) would each run them at
    once; the losers fail ("table ... already exists", "duplicate column name"), and a migration
    can be left half-applied. The lock `FILE.db.lock` beside the store serialises the first use;
    once a process has opened the store, MLflow reuses it for every client of that URI.
    """
    path = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        return MlflowClient(tracking_uri=tracking_uri)  # a server, or a database server's own migrations
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        client = MlflowClient(tracking_uri=tracking_uri)  # may create the store's tables already
        retry_tracking(lambda: client.search_experiments(max_results=1), what="open the tracking store")
    return client


PARENT_TAG = "ablate.role"
# What the MLflow 3 UI opens an experiment on: its runs, not the GenAI overview it guesses for an
# experiment without this tag (the tag is the UI's own; MLflow's Python API has no name for it).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


class Tracker:
    """MLflow for one study: its experiment, its parent run, and the trials' nested runs."""

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        # MLflow prints "View run ... at: URL" for a server store, with the tracking URI's credentials
        # in it; ablate prints its own summary, redacted (ablate.redaction).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.tracking_uri = tracking_uri
        self.client = open_client(tracking_uri)
        self._artifact_root = artifact_root

    def experiment_id(self, name: str) -> str:
        """The experiment's id, created (with its artifacts under the project folder) if new."""
        experiment = retry_tracking(lambda: self.client.get_experiment_by_name(name), what="find the experiment")
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                retry_tracking(lambda: self.client.restore_experiment(experiment.experiment_id), what="restore")
            return experiment.experiment_id
        location = f"{self._artifact_root}/{name}" if self._artifact_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException as error:
            # Another worker created it first: use theirs.
            found = retry_tracking(lambda: self.client.get_experiment_by_name(name), what="find the experiment")
            if found is None:
                raise error from None
            return found.experiment_id

    def parent_run(self, experiment_id: str, study: str, tags: dict[str, Any]) -> str:
        """The study's parent run: reopened when the study resumes, created otherwise."""
        found = self.find_parent(experiment_id, study)
        if found is not None:
            retry_tracking(lambda: self.client.update_run(found, status="RUNNING"), what="reopen the parent run")
            run_id = found
        else:
            run_id = retry_tracking(
                lambda: self.client.create_run(
                    experiment_id, run_name=study, tags={PARENT_TAG: "study", "ablate.study": study}
                ).info.run_id,
                what="create the parent run",
            )
        TrialRun(self.client, run_id).set_tags(tags)
        return run_id

    def find_parent(self, experiment_id: str, study: str) -> str | None:
        """The id of the study's parent run in this store, if it has one."""
        found = retry_tracking(
            lambda: self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{PARENT_TAG}` = 'study' and tags.`ablate.study` = '{study}'",
                max_results=1,
            ),
            what="find the parent run",
        )
        return found[0].info.run_id if found else None

    def start_trial(self, experiment_id: str, parent_run_id: str, name: str, tags: dict[str, Any]) -> TrialRun:
        """A nested run under the study's parent run."""
        all_tags = {"mlflow.parentRunId": parent_run_id, PARENT_TAG: "trial", **tags}
        # A create whose answer was lost may leave one empty extra run; a missing run would be worse.
        run = retry_tracking(
            lambda: self.client.create_run(
                experiment_id, run_name=name, tags={k: str(v)[:MAX_TAG] for k, v in all_tags.items()}
            ),
            what="create the trial's run",
        )
        return TrialRun(self.client, run.info.run_id, deferred=True)

    def end_parent(self, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
        """Summarise the study on its parent run and end it."""
        run = TrialRun(self.client, run_id)
        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if metrics:
            run.log_metrics(0, metrics)
        run.set_tags({f"ablate.{k}": v for k, v in summary.items() if k not in metrics})
        retry_tracking(lambda: self.client.set_terminated(run_id, status=status), what="end the parent run")

    def end_stale(self, run_id: str, reason: str, *, tags: dict[str, Any] | None = None) -> bool:
        """End a run left RUNNING by a process that died, with the reason; False if it had ended."""
        run = TrialRun(self.client, run_id)
        try:
            status = retry_tracking(lambda: self.client.get_run(run_id).info.status, what="read a stale run")
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":  # gone with a deleted experiment
                return False
            raise
        if status != "RUNNING":
            return False
        run.set_tags({"ablate.state": "interrupted", "ablate.error": reason, **(tags or {})})
        retry_tracking(lambda: self.client.set_terminated(run_id, status="KILLED"), what="end a stale run")
        return True

    def tag(self, run_id: str, tags: dict[str, Any]) -> None:
        """Add tags to any run (e.g. a killed run's link to its retry)."""
        TrialRun(self.client, run_id).set_tags(tags)

    def log_values(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        """Log metrics at one step on any run, in one batch."""
        self.log_points(run_id, [(name, step, value) for name, value in metrics.items()])

    def log_series(self, run_id: str, metric: str, series: list[tuple[int, float]]) -> None:
        """Log one metric at many steps (a weight study's value per trial: one series, no run per trial)."""
        self.log_points(run_id, [(metric, step, value) for step, value in series])

    def log_points(self, run_id: str, points: list[tuple[str, int, float]]) -> None:
        """Log (metric, step, value) points, finite values only, in batches of MLflow's maximum size."""
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, step) for name, step, value in points if math.isfinite(value)]
        for start in range(0, len(metrics), MAX_BATCH):
            batch = metrics[start : start + MAX_BATCH]
            retry_tracking(partial(self.client.log_batch, run_id, metrics=batch), what="log metrics")
