"""Read one study back from its Optuna storage and its MLflow store, for the report.

Optuna holds the design (the validated spec in the study's user attrs), every trial's state,
value, seed and duration; MLflow holds the per-epoch curves, the reconstruction pictures, the
diffusion family's chains and samples and the ensemble family's `ensemble/weights.json`.
Nothing here computes statistics: see `ablate.analysis.effects` and `ablate.report.answer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from ablate.analysis.importance import objectives_of, study_directions
from ablate.errors import AblateError
from ablate.project import Project
from ablate.redaction import redact
from ablate.runtime.studies import TrialRecord, load_study, trial_records
from ablate.spec.attributes import (
    CELL_ATTR,
    ERROR_ATTR,
    EXPERIMENT_ATTR,
    PARENT_RUN_ATTR,
    RUN_ATTR,
    SEED_ATTR,
    SPEC_ATTR,
)
from ablate.spec.levels import cell_key
from ablate.spec.study_spec import StudySpec
from ablate.tracking.reading import metric_histories

CURVE_METRICS: tuple[str, ...] = ("train_loss", "val_loss")
FINAL_IMAGE = "reconstructions/final.png"
WEIGHTS_FILE = "ensemble/weights.json"


class ReportInputError(AblateError):
    """A report that cannot be made from what the storage holds (no such study, not an ablate study)."""

    exit_status = 2  # bad input, like a bad flag: nothing was created


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
    refuse_missing_store(project)
    try:
        study = load_study(name, project.storage)
    except AblateError as error:
        raise ReportInputError(str(error)) from None
    raw_spec = study.user_attrs.get(SPEC_ATTR)
    if raw_spec is None:
        raise ReportInputError(f"study {name!r} has no {SPEC_ATTR} attribute: it was not created by `ablate run`")

    spec = StudySpec.model_validate(raw_spec)
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = [
        TrialRow(
            record=r,
            duration_s=_seconds(frozen[r.number].duration),
            values=tuple(frozen[r.number].values) if r.state == "COMPLETE" and frozen[r.number].values else None,
        )
        for r in _records(study)
    ]
    data = StudyData(
        spec=spec,
        storage=redact(project.storage),
        tracking_uri=redact(project.tracking_uri),
        trials=rows,
        experiment_id=study.user_attrs.get(EXPERIMENT_ATTR),
        parent_run_id=study.user_attrs.get(PARENT_RUN_ATTR),
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
    data.curves.update(metric_histories(project, run_ids, curve_metrics(data)))


def _seconds(duration: timedelta | None) -> float | None:
    """A trial's duration in seconds; None when it has none (not finished)."""
    return duration.total_seconds() if duration is not None else None


def _records(study: Any) -> list[TrialRecord]:
    """`ablate.runtime.studies.trial_records`, also for several objectives (the first is the record's value),
    and with each trial's params as its cell when the trial has no cell (a searched trial)."""
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
        ]
    return [r if r.cell else replace(r, cell=cell_key(r.params)) for r in records]


def refuse_missing_store(project: Project) -> None:
    # Opening a sqlite URL creates the file: a report from the wrong folder must not leave an
    # empty project behind, it must say where it looked.
    if project.storage.startswith("sqlite:///"):
        path = Path(project.storage.removeprefix("sqlite:///"))
        if not path.exists():
            raise ReportInputError(
                f"no studies here: {path} does not exist. Run the command from the folder where `ablate run` ran, "
                "or point to it with --home / --storage"
            )
