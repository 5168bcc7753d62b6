"""`ablate audit NAME`: the noise floor, how far two runs of one trial with the same seed land apart here.

A finished trial is trained again in this process, from the same frozen `RunConfig` the worker
built (its cell's levels on the study's settings, its seed), and its objective is compared with
the one Optuna holds. The difference is what the machine adds on its own: kernels that sum in a
thread-dependent order, cuDNN's algorithm choice, a different CPU. An effect smaller than it
cannot be told from run-to-run noise; `train.deterministic: true` is the switch that should make
it zero (`ablate.training.determinism`).

The result is stored on the study (`NOISE_FLOOR_ATTR`), where `ablate report` reads it. Nothing
else changes: no Optuna trial is created (the study's trials stay one per cell and seed), and no
MLflow run is opened. A re-run is not a trial: as a run nested under the study's parent it would
sit among the trials in the MLflow UI and in what reads the study's runs back (an ensemble built
from the study's runs), and the one number it produces is on the study already.

Two phases, so the backend is chosen before Keras is imported: `plan_audit` reads the study
(Optuna only) and decides the trial, its configs and its backend; `run_audit` selects that
backend, trains, and stores the floor.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate import __version__
from ablate.backends import BACKENDS, requested_backend, select_backend
from ablate.errors import AblateError
from ablate.project import Project, sqlite_path
from ablate.redaction import redact
from ablate.runtime.sampling import objective_values
from ablate.runtime.storage import retry
from ablate.runtime.studies import StudyNotFoundError, load_study
from ablate.spec.attributes import BACKEND_ATTR, CELL_ATTR, NOISE_FLOOR_ATTR, SEED_ATTR, SPEC_ATTR
from ablate.spec.levels import Level, cell_key
from ablate.spec.run_config import RunConfig
from ablate.spec.study_spec import StudySpec


class AuditInputError(AblateError):
    """An audit that cannot start from what the storage holds: no such study, no complete trial, a
    trial number that is not a complete trial, a study whose trials cannot be re-run here."""

    exit_status = 2  # bad input: nothing was trained or stored


@dataclass(frozen=True)
class AuditPlan:
    """What `run_audit` trains: one complete trial's configs (one per seed it averaged), and where.

    Attributes:
        study: the Optuna study (the floor is stored on it).
        spec: the study as it was validated when it ran.
        trial: the trial re-run.
        cell: its cell key (`model.skip=concat`).
        configs: the frozen configs the worker trained: one, or one per seed (`search.seeds: average`).
        original: the trial's stored value of the primary objective.
        backend: the Keras backend its trials trained on.
        chosen: why this trial (the baseline cell's first, the first complete one, `--trial N`).
    """

    study: optuna.Study
    spec: StudySpec
    trial: FrozenTrial
    cell: str
    configs: tuple[RunConfig, ...]
    original: float
    backend: str
    chosen: str


def plan_audit(name: str, project: Project, *, trial: int | None = None) -> AuditPlan:
    """Read study `name` and decide what to re-run: trial `trial`, or the first complete trial of the
    baseline cell (else the study's first complete trial). Imports no Keras.

    Raises:
        AuditInputError: no storage there, no such study, not an ablate study, a study whose trials
            are not trained one by one from their params (a weight study, KerasTuner's engine), no
            complete trial, or `trial` not a complete trial of the study.
    """
    path = sqlite_path(project.storage)
    if path is not None and not path.exists():  # opening it would create an empty storage
        raise AuditInputError(
            f"no studies here: {path} does not exist. Run the command from the folder where `ablate run` ran, "
            "or point to it with --home / --storage"
        )
    try:
        study = load_study(name, project.storage)
    except StudyNotFoundError as error:
        raise AuditInputError(str(error)) from None
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise AuditInputError(f"study {name!r} in {redact(project.storage)} has no {SPEC_ATTR}: it was not made by ablate")
    spec = StudySpec.model_validate(raw)
    if spec.model.family == "ensemble" and spec.ensemble.source == "study":
        raise AuditInputError(f"study {name!r} is an ensemble weight study: its trials score weight vectors and train nothing, "
                              "so there is no training noise to measure; audit one of its source studies")
    if spec.engine != "optuna":
        raise AuditInputError(f"study {name!r} runs on engine {spec.engine}, whose trials' budgets come from the tuner; "
                              "`ablate audit` re-runs trials of engine optuna")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen, picked = _pick(study, spec, complete, trial)
    params = _params(spec, picked)
    seed = picked.user_attrs.get(SEED_ATTR)
    if seed is None:
        raise AuditInputError(f"trial {picked.number} of study {name!r} has no {SEED_ATTR}: it was not run by ablate")
    seeds = spec.seeds if spec.design == "search" and spec.search.seeds == "average" else [int(seed)]
    configs = tuple(spec.run_config(params, seed=s) for s in seeds)
    values = picked.values or []
    index = [o.metric for o in spec.objective].index(spec.primary.metric)
    return AuditPlan(
        study=study, spec=spec, trial=picked, cell=str(picked.user_attrs.get(CELL_ATTR) or cell_key(params)),
        configs=configs, original=float(values[index]), backend=_backend(study, configs[0]), chosen=chosen,
    )


def run_audit(plan: AuditPlan, *, progress: Any) -> dict[str, Any]:
    """Train the planned trial again here, store the noise floor on the study, and return it.

    Selects the study's backend first (`ablate.backends.select_backend`): in a process whose Keras
    already runs another, it raises `BackendError` (exit 2) before anything is trained.

    Returns:
        The floor as stored (`NOISE_FLOOR_ATTR`): `trial`, `cell`, `seed`, `metric`, `original`,
        `rerun`, `difference` (|rerun - original|), `relative` (difference / |original|; None at 0),
        `deterministic`, `backend`, `device`, `epochs_run`, `seconds`, `date`, `ablate`, and `note`
        (why the two may differ for another reason than noise, or None).
    """
    select_backend(plan.backend)
    # Keras and the families: imported only now, once the backend is the study's.
    from ablate.families import family_for
    from ablate.training.device import describe_device, enable_gpu_memory_growth
    from ablate.training.trial import train_trial

    enable_gpu_memory_growth()
    spec = plan.spec
    label = f"audit #{plan.trial.number} {plan.cell}"
    finals: list[dict[str, float]] = []
    epochs_run = 0
    start = time.perf_counter()
    for run in plan.configs:
        result = train_trial(run, family_for(run.model.family), tracking=spec.tracking, log=DiscardedLog(),
                             progress=progress, label=f"{label} seed={run.seed}")
        finals.append(result.metrics)
        epochs_run = max(epochs_run, result.epochs_run)
    seconds = time.perf_counter() - start
    metrics = {name: statistics.fmean(f[name] for f in finals) for name in finals[0]}
    index = [o.metric for o in spec.objective].index(spec.primary.metric)
    rerun = objective_values(spec, metrics)[index]
    difference = abs(rerun - plan.original)
    first = plan.configs[0]
    floor: dict[str, Any] = {
        "trial": plan.trial.number,
        "cell": plan.cell,
        "seed": first.seed if len(plan.configs) == 1 else [c.seed for c in plan.configs],
        "chosen": plan.chosen,
        "metric": spec.primary.metric,
        "original": plan.original,
        "rerun": rerun,
        "difference": difference,
        "relative": difference / abs(plan.original) if plan.original else None,
        "deterministic": first.train.deterministic,
        "backend": plan.backend,
        "device": describe_device(),
        "epochs_run": epochs_run,
        "seconds": round(seconds, 2),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ablate": __version__,
        "note": ("the trial's budget is wall time (train.max_seconds): the re-run may have stopped at another epoch"
                 if first.train.max_seconds is not None else None),
    }
    retry(lambda: plan.study.set_user_attr(NOISE_FLOOR_ATTR, floor), what="store the noise floor")
    progress.end_trial(label, f"{spec.primary.metric}={rerun:.6g} (the trial: {plan.original:.6g})")
    return floor


class DiscardedLog:
    """A `TrialLog` that keeps nothing: the re-run's curves, pictures and model are the trial's own again."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Nothing is kept."""

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """Nothing is kept."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Nothing is kept."""

    def log_file(self, local_path: str, artifact_path: str | None = None) -> None:
        """Nothing is kept."""

    def log_model(self, saved: Any) -> None:
        """Nothing is kept."""


def _pick(study: optuna.Study, spec: StudySpec, complete: list[FrozenTrial], number: int | None) -> tuple[str, FrozenTrial]:
    """The trial to re-run, and why it was chosen."""
    name = study.study_name
    if number is not None:
        for trial in complete:
            if trial.number == number:
                return f"--trial {number}", trial
        states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
        what = f"is {states[number]}" if number in states else "does not exist"
        listed = ", ".join(str(t.number) for t in complete[:20]) or "none"
        raise AuditInputError(f"trial {number} of study {name!r} {what}; audit a complete one: {listed}")
    if not complete:
        raise AuditInputError(f"study {name!r} has no complete trial to re-run; run it first (`ablate run`)")
    if spec.design != "search":
        baseline = cell_key(spec.reference)
        for trial in complete:
            if trial.user_attrs.get(CELL_ATTR) == baseline:
                return f"the first complete trial of the baseline cell {baseline}", trial
    return "the study's first complete trial", complete[0]


def _params(spec: StudySpec, trial: FrozenTrial) -> dict[str, Level]:
    """The trial's levels as the worker had them (`ablate.runtime.sampling.suggest`): file order, active only."""
    params: dict[str, Level] = {}
    for name, factor in spec.factors.items():
        if factor.active(params) and name in trial.params:
            params[name] = trial.params[name]
    return params


def _backend(study: optuna.Study, run: RunConfig) -> str:
    """The backend the trial trained on: its own `train.backend`, else the study's recorded one, else the default."""
    if run.train.backend is not None:
        return run.train.backend
    stored = study.user_attrs.get(BACKEND_ATTR)
    return stored if stored in BACKENDS else requested_backend()
