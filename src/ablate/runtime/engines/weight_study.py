"""The weight study: `model.family: ensemble`, `ensemble.source: study`, run by `ablate run`.

Its members are the best complete trials of another study of the same project (their saved
`model/model.keras`); its trials are weight vectors, searched on the validation split and
reported on the test split against the best single member and the uniform average.

Why it has its own path instead of the trial loop (`ablate.runtime.worker_loop`): a weight trial trains
nothing and scores in milliseconds, so the per-trial costs of the trial loop (an MLflow run, a
storage round trip for each ask, tell and attribute, a heartbeat) would be the whole study. Here:

- the members are loaded and predict the validation and test images once;
- the trials run on an in-memory Optuna study (`ablate.families.ensemble_weights.search_weights`);
- all trials are then written into the persistent study in one transaction (`bulk_add_trials`),
  with their params, values and cell attrs, so `ablate status` and `ablate report` see them; a
  run that is interrupted leaves no half-written study, and the next run starts over;
- MLflow gets no run per trial: the parent run holds the trials table (`ensemble/trials.csv`), the
  per-trial `val_loss` as one metric series (step = trial number) and `ensemble/weights.json`;
  nested runs hold each member (linked to its source run), the uniform average, and the best
  weights with the ensemble model (`model/model.keras`, built with `build_ensemble`).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

import ablate.training.fit  # noqa: F401 - registers the custom metric the saved model names
from ablate.families.ensemble_weights import (
    UNIFORM,
    EnsembleError,
    Outcome,
    Scorer,
    SearchTimes,
    only_member,
    predict,
    search_weights,
    summarize,
    test_inputs,
    trials_csv,
)
from ablate.models.weighted_ensemble import build_ensemble
from ablate.project import Project
from ablate.redaction import redact, scrub
from ablate.runtime.logs import quiet_libraries
from ablate.runtime.optuna_internals import bulk_add_trials
from ablate.runtime.progress import StudyProgress
from ablate.runtime.storage import open_storage, reach_tracking
from ablate.runtime.studies import (
    StudyConflictError,
    StudyOutcome,
    prepare_study,
    primary_value,
    study_lock,
    study_summary,
    tally,
)
from ablate.spec.attributes import CELL_ATTR, MEMBERS_ATTR, RUN_ATTR, SEED_ATTR, SPEC_ATTR
from ablate.spec.loading import LoadedSpec
from ablate.spec.run_config import DataConfig, RunConfig
from ablate.spec.shipped import studies_dir
from ablate.spec.study_spec import StudySpec
from ablate.tracking.reading import MODEL_ARTIFACT, has_model
from ablate.tracking.retry import retry_tracking
from ablate.tracking.tracker import Tracker
from ablate.tracking.trial_run import TrialRun
from ablate.training.data import load_splits
from ablate.training.images import reconstruction_grid
from ablate.training.trial import log_model, model_summary

ROLE_TAG = "ablate.ensemble_role"  # member / uniform / best, on the weight study's nested runs


@dataclass(frozen=True)
class SourceMember:
    """A trial of the source study whose saved model is a member."""

    trial: int
    run_id: str
    cell: str
    seed: int | None
    value: float
    run: RunConfig

    @property
    def label(self) -> str:
        return f"trial {self.trial} {self.cell}" + ("" if self.seed is None else f" seed={self.seed}")

    def record(self, study: str, metric: str) -> dict[str, Any]:
        """Where the member came from, for weights.json and the member's run."""
        return {
            "source_study": study, "source_trial": self.trial, "source_run_id": self.run_id,
            "source_cell": self.cell, "source_seed": self.seed, f"source_{metric}": self.value,
        }


def run_weight_study(loaded: LoadedSpec, project: Project, *, progress: StudyProgress) -> StudyOutcome:
    """Search the weights of an ensemble of a source study's best models; see the module docstring.

    Raises:
        EnsembleError: the source study is missing, has too few complete trials with a saved
            model, or its members do not fit together; the message says what to do.
        StudyConflictError: the study ran before over other members.
    """
    spec = loaded.spec
    quiet_libraries()
    reach_tracking(project.tracking_uri)  # before the project folder or the lock exists
    project.ensure()
    with study_lock(project, spec.name):
        storage = open_storage(project.storage, heartbeat=None, grace=None)
        tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
        # Everything about the source is checked before the weight study is created.
        source, source_spec = load_source(spec, storage, where=_where(loaded), url=project.storage)
        members = choose_members(source, source_spec, spec.ensemble.members, tracker.client, where=_where(loaded))
        data, loss = members_data(spec, members, source.study_name, where=_where(loaded))
        started = time.perf_counter()
        models = [load_member(tracker.client, m, where=_where(loaded)) for m in members]  # a refused file creates nothing
        load_seconds = time.perf_counter() - started
        study, experiment_id, parent_run_id = prepare_study(loaded, project, storage, tracker)
        _check_same_members(study, spec, [m.run_id for m in members])
        run = WeightRun(spec, study, tracker, experiment_id, parent_run_id, progress, source.study_name, source_spec.primary.metric)
        previous = [t for t in study.get_trials(deepcopy=True) if t.state == TrialState.COMPLETE]
        if len(previous) >= spec.search.trials:
            progress.start_study(spec.name, spec.search.trials, len(previous))
            return _finish(run, project, ran=0)
        try:
            run.seconds["weight_load_seconds"] = load_seconds
            ran = _run(run, previous, members, models, data, loss)
        except BaseException as error:
            for nested in run.nested:
                nested.finish("failed" if isinstance(error, Exception) else "interrupted", error=error)
            summary, _ = study_summary(spec, study.get_trials(deepcopy=False))
            tracker.end_parent(parent_run_id, status="FAILED" if isinstance(error, Exception) else "KILLED", summary=summary)
            raise
        for nested in run.nested:
            nested.finish("complete")
        return _finish(run, project, ran=ran)


@dataclass
class WeightRun:
    """One run of a weight study: where it is stored and logged, and the nested runs it opened.

    The nested runs end only after the trials are in the study, so a run that fails midway
    leaves its MLflow runs FAILED (or KILLED), never FINISHED beside an empty study.
    """

    spec: StudySpec
    study: optuna.Study
    tracker: Any
    experiment_id: str
    parent_run_id: str
    progress: StudyProgress
    source: str
    source_metric: str
    nested: list[Any] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _run(
    run: WeightRun, previous: list[FrozenTrial], members: list[SourceMember], models: list[Any], data: DataConfig, loss: str
) -> int:
    """Predict, search, log to MLflow, then write the new trials into the study; how many ran."""
    splits = load_splits(data)
    started = time.perf_counter()
    val = Scorer(np.stack([predict(m, splits.x_val_noisy) for m in models]), splits.x_val, loss)
    test = Scorer(np.stack([predict(m, test_inputs(splits.x_test, data)) for m in models]), splits.x_test, loss)
    run.seconds["weight_predict_seconds"] = time.perf_counter() - started
    run.progress.console.print(
        f"  {len(members)} members of study {run.source} loaded; they predicted {len(splits.x_val)} validation and "
        f"{len(splits.x_test)} test images in {run.seconds['weight_predict_seconds']:.1f}s"
    )
    times = SearchTimes()
    memory, series = _search(run, val, previous, times)
    outcome = summarize(
        memory, val, test, labels=[m.label for m in members],
        sources=[m.record(run.source, run.source_metric) for m in members],
        sampler=run.spec.search.sampler, metric=run.spec.primary.metric, times=times,
        data={**_data_record(data, len(splits.x_val), len(splits.x_test)), "source_study": run.source},
    )
    run.progress.epoch(1, {"val_loss": outcome.best[0].loss})
    started = time.perf_counter()
    run_ids = _log_runs(run, outcome, members, models, splits, series, memory)
    run.seconds["weight_mlflow_seconds"] = time.perf_counter() - started
    ran = _store(run, memory, len(previous), run_ids, outcome.best_trial, [m.run_id for m in members])
    run.progress.end_trial("weight trials", _summary_line(run, outcome, ran))
    return ran


def _search(
    run: WeightRun, val: Scorer, previous: list[FrozenTrial], times: SearchTimes
) -> tuple[optuna.Study, list[tuple[int, float]]]:
    """The in-memory search, with the progress bar; the study and each new trial's value."""
    trials = run.spec.search.trials
    run.progress.start_study(run.spec.name, trials, len(previous))
    run.progress.start_trial("weight trials", 1, trials)
    series: list[tuple[int, float]] = []

    def on_trial(number: int, value: float) -> None:
        series.append((number, value))
        if number % 25 == 0 or number == trials - 1:
            run.progress.batch(1, number + 1)

    memory = search_weights(
        val, trials=trials, sampler=run.spec.search.sampler, seed=run.spec.seed + len(previous),
        metric=run.spec.primary.metric, previous=previous, on_trial=on_trial, times=times,
    )
    return memory, series


def _store(run: WeightRun, memory: optuna.Study, first: int, run_ids: dict[str, str], best: int, members: list[str]) -> int:
    """Write the trials numbered `first` and later into the persistent study, in one transaction."""
    new = [t for t in memory.get_trials(deepcopy=True) if t.number >= first]
    for trial in new:
        _link(trial, run_ids, best)
        trial.user_attrs = {**trial.user_attrs, SEED_ATTR: run.spec.seed}
    started = time.perf_counter()
    bulk_add_trials(run.study, new)
    run.study.set_user_attr(MEMBERS_ATTR, members)
    run.seconds["weight_copy_seconds"] = time.perf_counter() - started
    run.tracker.log_values(run.parent_run_id, run.seconds)
    return len(new)


def _summary_line(run: WeightRun, outcome: Outcome, ran: int) -> str:
    metric = run.spec.primary.metric
    value = outcome.best[0].loss if metric == "val_loss" else outcome.best[0].mse
    per = outcome.times.as_metrics()
    return (
        f"best {metric}={value:.4g} (trial {outcome.best_trial}); test_loss ensemble {outcome.best[1].loss:.4g}, "
        f"uniform {outcome.uniform[1].loss:.4g}, best member {outcome.best_member.test.loss:.4g}; {ran} trials searched in "
        f"{per['weight_search_seconds']:.1f}s (sampler {per['weight_sampler_ms_per_trial']:.1f} ms/trial, scoring "
        f"{per['weight_scoring_ms_per_trial']:.1f} ms/trial), MLflow {run.seconds['weight_mlflow_seconds']:.1f}s, "
        f"written to the study in {run.seconds['weight_copy_seconds']:.1f}s"
    )


def _link(trial: FrozenTrial, run_ids: dict[str, str], best: int) -> None:
    """Point the reference trials and the best trial at their MLflow runs (`mlflow_run_id`)."""
    cell = trial.user_attrs.get(CELL_ATTR)
    run_id = run_ids.get("best") if trial.number == best and cell != UNIFORM else run_ids.get(str(cell))
    if run_id:
        trial.user_attrs = {**trial.user_attrs, RUN_ATTR: run_id}


def load_source(spec: StudySpec, storage: Any, *, where: str, url: str) -> tuple[optuna.Study, StudySpec]:
    """The source study and its spec, or an error that says how to make it."""
    name = spec.ensemble.study or ""
    try:
        source = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none yet"
        raise EnsembleError(
            f"{where}: ensemble.study is {name!r}, but this project has no study of that name "
            f"(storage {redact(url)}; studies: {known}). The members are that study's trained models, "
            f"so run it first from this project folder: {_run_hint(name)}. Or set ensemble.study to one of the "
            "studies listed."
        ) from None
    if SPEC_ATTR not in source.user_attrs:
        raise EnsembleError(f"{where}: study {name!r} was not made by ablate (it holds no study spec), so it has no saved models")
    return source, StudySpec.model_validate(source.user_attrs[SPEC_ATTR])


def choose_members(
    source: optuna.Study, source_spec: StudySpec, k: int, client: Any, *, where: str
) -> list[SourceMember]:
    """The `k` best complete trials of the source study (by its first objective) with a saved model."""
    name = source.study_name
    maximize = source.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    complete = [t for t in source.get_trials(deepcopy=False) if _finite(primary_value(t))]
    ranked = sorted(complete, key=lambda t: primary_value(t) or 0.0, reverse=maximize)
    chosen: list[SourceMember] = []
    without: list[int] = []
    for trial in ranked:
        run_id = trial.user_attrs.get(RUN_ATTR)
        if not run_id or not has_model(client, run_id):
            without.append(trial.number)
            continue
        seed = trial.user_attrs.get(SEED_ATTR)
        run = source_spec.run_config(dict(trial.params), seed=int(seed) if seed is not None else source_spec.seed)
        chosen.append(SourceMember(trial.number, run_id, str(trial.user_attrs.get(CELL_ATTR, "")), seed, float(primary_value(trial) or 0.0), run))
        if len(chosen) == k:
            return chosen
    missing = f"; {len(without)} of them have no saved {MODEL_ARTIFACT} (trials {without[:10]})" if without else ""
    raise EnsembleError(
        f"{where}: ensemble.members is {k}, but study {name!r} has only {len(complete)} complete trial(s){missing}, so "
        f"{len(chosen)} usable member(s). Lower ensemble.members (--set ensemble.members={max(len(chosen), 1)}), or run "
        f"more trials of {name!r} (e.g. more seeds: {_run_hint(name, extra=' --set repeats=N')}) with "
        "tracking.save_model on."
    )


def members_data(spec: StudySpec, members: list[SourceMember], source: str, *, where: str) -> tuple[DataConfig, str]:
    """The split the members were validated on, and their loss; the weights are searched on that split.

    Members validated on different data (a factor over `data.*` in the source study) cannot be
    weighted on one split, and a weight study that sets other data would search on images a
    member may have trained on; both are refused.
    """
    first = members[0].run
    for member in members:
        if member.run.model.family != "unet":
            raise EnsembleError(
                f"{where}: member trial {member.trial} of {source!r} is a {member.run.model.family} model; ensembles "
                "weight denoising autoencoders (model.family: unet)"
            )
        if member.run.data != first.data:
            raise EnsembleError(
                f"{where}: the members of {source!r} were validated on different data (trials {members[0].trial} and "
                f"{member.trial}); use a study whose trials share one data split"
            )
    if "data" in spec.model_fields_set and spec.data != first.data:
        raise EnsembleError(
            f"{where}: the data section differs from that of the members' study {source!r}. The members were "
            "validated and tested on its split, so the weights are searched on the same one: remove the data section "
            "(a weight study uses its source study's data)"
        )
    if first.data.test_size == 0:
        raise EnsembleError(f"{where}: study {source!r} has data.test_size 0; the ensemble is reported on the test split")
    return first.data, first.train.loss


class MemberRefusedError(EnsembleError):
    """A member's saved model that Keras will not load (safe mode, a foreign file): bad input, exit 2."""

    exit_status = 2


def load_member(client: Any, member: SourceMember, *, where: str) -> Any:
    """A member's trained Keras model, from its run's `model/model.keras` (not compiled: it only predicts).

    Loaded in Keras' safe mode: a file with a `Lambda` layer (code that would run on load) or an
    object Keras cannot find is refused, naming the trial and run, and never executed.

    Raises:
        MemberRefusedError: Keras refused the file.
    """
    run_id = member.run_id
    with tempfile.TemporaryDirectory() as folder:
        path = retry_tracking(lambda: client.download_artifacts(run_id, MODEL_ARTIFACT, folder), what="download a member")
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001 - Keras raises ValueError, TypeError, OSError...: one line, not a traceback
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise MemberRefusedError(
                f"{where}: the saved model of member trial {member.trial} (MLflow run {run_id}) cannot be loaded: "
                f"{scrub(first)[:300]}. Keras' safe mode refuses files that would run code (a Lambda layer); use members "
                "trained by ablate's own families, or retrain that trial"
            ) from None


def _log_runs(
    run: WeightRun,
    outcome: Outcome,
    members: list[SourceMember],
    models: list[Any],
    splits: Any,
    series: list[tuple[int, float]],
    memory: optuna.Study,
) -> dict[str, str]:
    """MLflow: the parent's series and files, then the nested runs; their run ids by cell (and `best`)."""
    _log_parent(run, outcome, series, memory)
    return _log_nested(run, outcome, members, models, splits)


def _log_parent(run: WeightRun, outcome: Outcome, series: list[tuple[int, float]], memory: optuna.Study) -> None:
    """Per-trial values as one metric series (no run per trial), the summary, trials.csv and weights.json."""
    spec, client = run.spec, run.tracker.client
    run.tracker.log_series(run.parent_run_id, spec.primary.metric, series)
    parent = TrialRun(client, run.parent_run_id)
    renamed = {"val_loss", "val_mse", "test_loss", "test_mse"}  # the parent's val_loss is the per-trial series
    parent.log_metrics(0, {(f"ensemble_{k}" if k in renamed else k): v for k, v in outcome.metrics().items()})
    parent.log_params({
        "ensemble.study": spec.ensemble.study, "ensemble.members": spec.ensemble.members,
        "search.sampler": spec.search.sampler, "search.trials": spec.search.trials, "train.loss": outcome.loss,
        **{f"data.{k}": v for k, v in outcome.data.items() if k != "source_study"},
    })
    parent.log_text(trials_csv(memory.get_trials(deepcopy=False)), "ensemble/trials.csv")
    parent.log_text(outcome.to_json(), "ensemble/weights.json")


def _log_nested(run: WeightRun, outcome: Outcome, members: list[SourceMember], models: list[Any], splits: Any) -> dict[str, str]:
    """A run per member (linked to its source run), the uniform average's, and the best weights' with the model."""
    tracker, spec = run.tracker, run.spec
    base = {"ablate.study": spec.name, "ablate.role": "ensemble"}

    def start(name: str, role: str, **tags: Any) -> Any:
        nested = tracker.start_trial(run.experiment_id, run.parent_run_id, name, {**base, ROLE_TAG: role, **tags})
        run.nested.append(nested)
        return nested

    run_ids: dict[str, str] = {}
    for member, scored in zip(members, outcome.members):
        nested = start(f"member{scored.index} {member.label}", "member",
                       **{"ablate.source_run_id": member.run_id, "ablate.source_study": run.source})
        nested.log_params({f"ensemble.{k}": v for k, v in scored.source.items()})
        nested.log_metrics(0, {**scored.val.named("val"), **scored.test.named("test")})
        run_ids[only_member(scored.index)] = nested.run_id
    uniform = start("uniform average", "uniform")
    uniform.log_params({f"ensemble.weight{i}": 1.0 / len(members) for i in range(len(members))})
    uniform.log_metrics(0, {**outcome.uniform[0].named("val"), **outcome.uniform[1].named("test")})
    run_ids[UNIFORM] = uniform.run_id
    best = start(f"best weights (trial {outcome.best_trial})", "best", **{"ablate.trial": outcome.best_trial})
    best.log_params({f"ensemble.weight{i}": w for i, w in enumerate(outcome.best_weights)})
    best.log_metrics(0, outcome.metrics())
    best.log_text(outcome.to_json(), "ensemble/weights.json")
    log_ensemble_model(best, models, outcome, splits, spec)
    run_ids["best"] = best.run_id
    return run_ids


def log_ensemble_model(run: Any, models: list[Any], outcome: Outcome, splits: Any, spec: StudySpec) -> None:
    """The functional ensemble (`model/model.keras`), its summary, and clean | noisy | best member | ensemble."""
    ensemble = build_ensemble(models, outcome.best_weights)
    clean, noisy = splits.x_val[: spec.tracking.images], splits.x_val_noisy[: spec.tracking.images]
    single = predict(models[outcome.best_member.index], noisy)
    combined = predict(ensemble, noisy)
    run.log_image(reconstruction_grid(clean, noisy, single, combined), "reconstructions/final.png")
    run.log_text(model_summary(ensemble), "model_summary.txt")
    log_model(ensemble, run, spec.tracking.model_copy(update={"save_model": True}))


def _check_same_members(study: optuna.Study, spec: StudySpec, run_ids: list[str]) -> None:
    stored = study.user_attrs.get(MEMBERS_ATTR)
    if stored is not None and stored != run_ids:
        raise StudyConflictError(
            f"weight study {spec.name!r} was searched over other members of {spec.ensemble.study!r} (its best trials "
            f"changed since); its trials would not compare. Give this run its own name (--set name={spec.name}-v2)."
        )


def _finish(run: WeightRun, project: Project, *, ran: int) -> StudyOutcome:
    """End the parent run with the study's summary; the outcome `ablate run` prints."""
    trials = run.study.get_trials(deepcopy=False)
    summary, status = study_summary(run.spec, trials)
    run.tracker.end_parent(run.parent_run_id, status=status, summary=summary)
    counts = tally(run.spec, trials)
    return StudyOutcome(
        name=run.spec.name, storage=redact(project.storage), tracking_uri=redact(project.tracking_uri),
        experiment_id=run.experiment_id, parent_run_id=run.parent_run_id, total=counts.total, complete=counts.complete,
        failed=counts.failed, pruned=counts.pruned, ran=ran,
    )


def _data_record(data: DataConfig, val_images: int, test_images: int) -> dict[str, Any]:
    return {
        "dataset": data.dataset, "val_images": val_images, "test_images": test_images, "split_seed": data.split_seed,
        "noise_factor": data.noise.factor, "test_noise": "split_seed + 2000003 (ablate.families.ensemble_weights.TEST_NOISE_OFFSET)",
    }


def _run_hint(name: str, extra: str = "") -> str:
    """The command that makes study `name`, when a shipped study file (or its profile) is named so."""
    try:
        for path in sorted(studies_dir().glob("*.yaml")):
            raw = yaml.safe_load(path.read_text()) or {}
            base = raw.get("name")
            if base == name:
                return f"`ablate run studies/{path.name}{extra}`"
            for profile, changes in (raw.get("profiles") or {}).items():
                if (changes or {}).get("name", f"{base}-{profile}") == name:
                    return f"`ablate run studies/{path.name} --profile {profile}{extra}`"
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return f"`ablate run STUDY_FILE{extra}` with the study file named {name!r}"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _where(loaded: LoadedSpec) -> str:
    where = str(loaded.path) if loaded.path else f"study {loaded.spec.name}"
    return where + (f" (profile {loaded.profile})" if loaded.profile else "")

