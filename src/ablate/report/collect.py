"""Read one study back from its Optuna storage and its MLflow store, for the report.

Optuna holds the design (the validated spec in the study's user attrs), every trial's state,
value, seed and duration; MLflow holds the per-epoch curves, the reconstruction pictures, the
diffusion family's chains and samples and the ensemble family's `ensemble/weights.json`.
Nothing here computes statistics: see `ablate.analysis` and `ablate.report.answer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.home import Project, redact
from ablate.spec import StudySpec, cell_key
from ablate.study import CELL_ATTR, ERROR_ATTR, RUN_ATTR, SEED_ATTR, SPEC_ATTR, TrialRecord, load_study, trial_records

CURVE_METRICS: tuple[str, ...] = ("train_loss", "val_loss")
FINAL_IMAGE = "reconstructions/final.png"
WEIGHTS_FILE = "ensemble/weights.json"


class ReportInputError(AblateError):
    """A report that cannot be made from what the storage holds (no such study, not an ablate study)."""


@dataclass(frozen=True)
class TrialRow:
    """One Optuna trial with what the trials table shows."""

    record: TrialRecord
    duration_s: float | None
    values: tuple[float, ...] | None = None  # every objective's value (a complete trial); record.value is the first


@dataclass
class StudyData:
    """Everything the report reads, gathered once.

    Attributes:
        spec: the study as it was validated when it ran.
        trials: every trial, in trial order.
        experiment_id, parent_run_id: the study's MLflow experiment and parent run.
        curves: MLflow run id -> metric -> [(epoch, value)], for complete trials.
        objectives: `{metric, direction}` per objective, in the study's order (one for most studies).
        study: the Optuna study itself (importances and the Pareto front read its trials).
    """

    spec: StudySpec
    storage: str
    tracking_uri: str
    trials: list[TrialRow]
    experiment_id: str | None
    parent_run_id: str | None
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)
    objectives: list[dict[str, str]] = field(default_factory=list)
    study: Any = None


def collect(name: str, project: Project, *, curves: bool = True) -> StudyData:
    """Load study `name` and, when `curves`, its trials' learning curves from MLflow.

    Raises:
        ReportInputError: no such study (listing the known ones), or one not made by `ablate run`.
    """
    _refuse_missing_store(project)
    try:
        study = load_study(name, project.storage)
    except AblateError as error:
        raise ReportInputError(str(error)) from None
    raw_spec = study.user_attrs.get(SPEC_ATTR)
    if raw_spec is None:
        raise ReportInputError(f"study {name!r} has no {SPEC_ATTR} attribute: it was not created by `ablate run`")
    from ablate.report.importance import objectives_of, study_directions

    spec = StudySpec.model_validate(raw_spec)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = [
        TrialRow(
            record=r,
            duration_s=frozen[r.number].duration.total_seconds() if frozen[r.number].duration is not None else None,
            values=tuple(frozen[r.number].values) if r.state == "COMPLETE" and frozen[r.number].values else None,
        )
        for r in _records(study)
    ]
    data = StudyData(
        spec=spec,
        storage=redact(project.storage),
        tracking_uri=redact(project.tracking_uri),
        trials=rows,
        experiment_id=study.user_attrs.get("mlflow_experiment_id"),
        parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
        objectives=objectives_of(raw_spec, study_directions(study)),
        study=study,
    )
    if curves:
        read_curves(data, project)
    return data


def curve_metrics(data: StudyData) -> list[str]:
    """The metrics the learning curves show: train and validation loss, then each objective's
    metric when it is another per-epoch one (e.g. a diffusion study's `val_chain_loss`)."""
    extra = [o["metric"] for o in data.objectives or [{"metric": data.spec.primary.metric}]]
    return list(dict.fromkeys([*CURVE_METRICS, *(m for m in extra if m != "parameters")]))


def weight_study(spec: StudySpec) -> bool:
    """Whether the study is an ensemble weight study (`model.family: ensemble`, `ensemble.source: study`).

    Its trials are weight vectors: nothing is trained, so it has no learning curves, and its
    answer is `ensemble/weights.json` on the study's parent run.
    """
    return spec.model.family == "ensemble" and spec.ensemble.source == "study"


def read_curves(data: StudyData, project: Project) -> None:
    """Fill `data.curves` with the complete trials' learning curves from MLflow (none for a weight study)."""
    if weight_study(data.spec):
        return  # its runs hold one score each (step 0), not curves
    run_ids = [row.record.run_id for row in data.trials if row.record.state == "COMPLETE" and row.record.run_id]
    if not run_ids:
        return  # no run to read: do not open (or create) the store
    client = mlflow_client(project)
    metrics = curve_metrics(data)
    for run_id in run_ids:
        data.curves[run_id] = {
            metric: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
                     if math.isfinite(m.value)]
            for metric in metrics
        }  # fmt: skip


def _records(study: Any) -> list[TrialRecord]:
    """`ablate.study.trial_records`, also for several objectives (the first is the record's value),
    and with each trial's params as its cell when the trial has no cell (a searched trial)."""
    from optuna.trial import TrialState

    try:
        records = trial_records(study)
    except RuntimeError:  # FrozenTrial.value refuses with several objectives
        records = [
            TrialRecord(
                number=t.number, state=t.state.name, cell=t.user_attrs.get(CELL_ATTR, ""), seed=t.user_attrs.get(SEED_ATTR),
                params=dict(t.params), value=t.values[0] if t.state == TrialState.COMPLETE and t.values else None,
                run_id=t.user_attrs.get(RUN_ATTR), error=t.user_attrs.get(ERROR_ATTR),
            )
            for t in study.get_trials(deepcopy=False)
        ]  # fmt: skip
    return [r if r.cell else replace(r, cell=cell_key(r.params)) for r in records]


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
        except Exception:  # noqa: BLE001 - a run without its picture (failed upload) leaves a gap, not a crash
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
    import json
    import tempfile

    found: dict[str, Any] = {}
    if not run_ids:
        return found
    client = mlflow_client(project)
    with tempfile.TemporaryDirectory(prefix="ablate-report-") as scratch:
        for run_id in dict.fromkeys(run_ids):
            try:
                path = client.download_artifacts(run_id, artifact, str(Path(scratch) / run_id))
                found[run_id] = json.loads(Path(path).read_text())
            except Exception:  # noqa: BLE001 - a run that never logged it (failed trial, older run): left out
                continue
    return found


def download_artifact(project: Project, run_id: str, artifact: str, destination: Path) -> bool:
    """Copy one artifact of a run to the file `destination`; False when the run has no such artifact."""
    import shutil
    import tempfile

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


def mlflow_client(project: Project) -> Any:
    """An MLflow client on the project's tracking store."""
    import os

    # MLflow draws a progress bar per artifact on stderr; a report downloads several small PNGs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=project.tracking_uri)


def _refuse_missing_store(project: Project) -> None:
    # Opening a sqlite URL creates the file: a report from the wrong folder must not leave an
    # empty project behind, it must say where it looked.
    if project.storage.startswith("sqlite:///"):
        path = Path(project.storage.removeprefix("sqlite:///"))
        if not path.exists():
            raise ReportInputError(
                f"no studies here: {path} does not exist. Run the command from the folder where `ablate run` ran, "
                "or point to it with --home / --storage"
            )


__all__ = [
    "ReportInputError", "StudyData", "TrialRow", "collect", "curve_metrics", "download_artifact", "download_final_images",
    "list_run_artifacts", "log_report", "read_curves", "read_json_artifacts", "weight_study",
]  # fmt: skip
