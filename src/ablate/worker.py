"""The worker loop that `ablate run` and `ablate worker` share: pop an enqueued trial, train it, tell.

Any number of these loops, in any number of processes on any number of machines, may work on one
study: Optuna's RDB storage coordinates them, there is no scheduler of our own. What makes that
safe:

- **Only enqueued trials run.** `Study.ask()` pops a WAITING trial but, when another worker took
  the last one between our look and our pop, it silently *creates a new trial* and lets the
  sampler choose its params: an extra, un-enqueued grid point. `pop_trial` does the same atomic pop
  (one `UPDATE ... WHERE state = WAITING` under a row lock: `set_trial_state_values` answers False
  when another worker won) and returns None instead of creating anything.
- **No (cell, seed) runs twice.** Enqueues can race (a `submit` beside a stale-trial retry), so
  after popping a trial the worker checks its pair: if a trial of the pair has finished, or a
  lower-numbered trial of it is waiting or running, this one is skipped (told FAIL with the
  reason). Trial numbers only grow, so of the live trials of a pair exactly one, the lowest, runs.
- **A dead worker's trial comes back.** Each running trial heartbeats (`storage.Heartbeat`); any
  worker fails a trial whose heartbeat is older than the grace period (`fail_stale_trials`), ends
  its MLflow run KILLED with the reason, and enqueues a retry that links to it (`requeue`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import AblateError
from ablate.progress import StudyProgress
from ablate.spec import Level, StudySpec
from ablate.storage import Heartbeat, retry
from ablate.study import (
    CELL_ATTR,
    DONE_STATES,
    ERROR_ATTR,
    RUN_ATTR,
    SEED_ATTR,
    SKIPPED,
    SPEC_ATTR,
    StudyNotFoundError,
    study_summary,
)
from ablate.sampling import objective_values, pruner_for, sampler_for, suggest
from ablate.tracking import PARENT_TAG, Tracker, environment_tags, scrub

log = logging.getLogger("ablate.worker")

WORKER_ATTR = "ablate.worker"
RETRY_OF_TRIAL = "ablate.retry_of_trial"
RETRY_OF_RUN = "ablate.retry_of_run"
RETRIED_IN_RUN = "ablate.retried_in_run"
RETRY_REASON = "ablate.retry_reason"
MAX_RETRIES = 3
LIVE_STATES = (TrialState.WAITING, TrialState.RUNNING)


class LostTrialError(AblateError):
    """The worker's trial was failed as stale by another worker while it still ran."""


class NotAnAblateStudyError(AblateError):
    """A study in the storage that `ablate submit` did not make (it holds no study spec)."""


def worker_id() -> str:
    """How this process appears in trials and `ablate status`: host and process id.

    A child of a recycling `ablate worker` reports its parent's (from $ABLATE_WORKER_ID), so the
    worker keeps one id however many processes run its trials.
    """
    return os.environ.get("ABLATE_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class StudyWork:
    """One study as a worker runs it: the spec rebuilt from the storage, and its MLflow places."""

    study: optuna.Study
    storage: RDBStorage
    spec: StudySpec
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def cached(self) -> Any:
        """The storage as the Study sees it: Optuna's caching wrapper around `storage`.

        Trials are read and popped through it, since the Study's trials may only touch trial
        ids that its cache has seen.
        """
        return self.study._storage

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The study's trials, read again from the storage (retried while it is unreachable)."""
        study_id = self.study._study_id  # the id Study itself was loaded with
        return retry(
            lambda: self.cached.get_all_trials(study_id, deepcopy=False, states=states), what="read the trials"
        )


def attach(name: str, storage: RDBStorage, tracker: Tracker) -> StudyWork:
    """Load a submitted study and everything a worker needs for it from the storage alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study = retry(lambda: optuna.load_study(study_name=name, storage=storage), what="load the study")
        except KeyError:
            known = ", ".join(s.study_name for s in storage.get_all_studies()) or "none"
            raise StudyNotFoundError(f"no study {name!r} in the storage; known studies: {known}") from None
    attrs = study.user_attrs
    if SPEC_ATTR not in attrs:
        raise NotAnAblateStudyError(
            f"study {name!r} holds no ablate study spec (user attr {SPEC_ATTR!r}); submit it with `ablate submit`"
        )
    spec = StudySpec.model_validate(attrs[SPEC_ATTR])
    if spec.engine != "optuna":
        raise NotAnAblateStudyError(
            f"study {name!r} runs on engine {spec.engine}, whose trials come from its own tuner in one "
            "process: run it with `ablate run`, not with workers"
        )
    study.pruner = pruner_for(spec)  # load_study would bring Optuna's default median pruner
    study.sampler = sampler_for(spec, trials_so_far=len(retry(lambda: study.get_trials(deepcopy=False), what="read the trials")))
    experiment_id = tracker.experiment_id(spec.experiment)
    parent = attrs.get("mlflow_parent_run_id")
    if not parent or tracker.find_parent(experiment_id, spec.name) != parent:
        # Submitted against another tracking store (or none): this store gets its own parent run.
        parent = tracker.find_parent(experiment_id, spec.name) or tracker.parent_run(
            experiment_id, spec.name, environment_tags()
        )
    return StudyWork(study=study, storage=storage, spec=spec, tracker=tracker, experiment_id=experiment_id, parent_run_id=parent)


def pop_trial(work: StudyWork) -> optuna.Trial | None:
    """Take one enqueued trial atomically, or None when none is waiting; never creates a trial.

    This is `Study.ask()` without its fallback (see the module docstring). Each WAITING trial is
    tried in turn; the storage moves it to RUNNING only if it is still WAITING, under a row lock,
    so of several workers racing for it exactly one wins and the others move on to the next.
    """
    for waiting in work.trials((TrialState.WAITING,)):
        try:
            won = retry(
                lambda: work.cached.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING),
                what="pop a trial",
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if won:
            # Beat at once: a trial with no heartbeat row is never judged stale.
            retry(lambda: work.storage.record_heartbeat(waiting._trial_id), what="first heartbeat")
            return optuna.Trial(work.study, waiting._trial_id)
    return None


def serve(
    studies: Callable[[], list[StudyWork]],
    *,
    progress: StudyProgress,
    max_trials: int | None = None,
    wait: bool = True,
    requeue_on_interrupt: bool = True,
    end_parents: bool = True,
    stop_at: float | None = None,
) -> int:
    """Run trials of the given studies until none has work left; return how many ran.

    Each pass fails stale trials (their retries become work), then drains each study in turn.
    When nothing is waiting but some trial still runs elsewhere, the worker waits for it with
    `wait`: if its worker dies, the trial goes stale and this worker runs the retry.

    Args:
        studies: called once per pass, so `--all` picks up studies submitted meanwhile.
        progress: the terminal display.
        max_trials: stop after this many trials.
        wait: keep polling while other workers' trials run.
        requeue_on_interrupt: on Ctrl-C / SIGTERM, enqueue a retry of the current trial.
        end_parents: end a study's MLflow parent run when its last trial finishes.
        stop_at: take no new trial after this `time.monotonic()` moment, once one trial has run.
    """
    ran = 0
    while True:
        progressed = False
        works = studies()
        for work in works:
            if _out_of_time(stop_at, ran):
                return ran
            fail_stale(work)
            left = None if max_trials is None else max_trials - ran
            done = drain(
                work, progress=progress, max_trials=left, on_interrupt_requeue=requeue_on_interrupt, stop_at=stop_at
            )
            ran += done
            progressed = progressed or done > 0
            if done and end_parents:
                end_if_done(work)
            if max_trials is not None and ran >= max_trials:
                return ran
        if progressed:
            continue
        running = [work for work in works if has_running(work)]
        if not wait or not running:
            return ran
        time.sleep(min(5, running[0].storage.heartbeat_interval or 5))


def drain(
    work: StudyWork,
    *,
    progress: StudyProgress,
    max_trials: int | None = None,
    on_interrupt_requeue: bool = True,
    stop_at: float | None = None,
) -> int:
    """Run this study's enqueued trials until none is waiting (or `max_trials` ran, or `stop_at` passed
    after a trial); return how many."""
    from ablate.train import enable_gpu_memory_growth

    enable_gpu_memory_growth()
    work.tags = worker_tags(work)
    ran = 0
    while (max_trials is None or ran < max_trials) and not _out_of_time(stop_at, ran):
        trial = pop_trial(work)
        if trial is None and work.spec.design == "search":
            trial = ask_search(work)
        if trial is None:
            break
        ran += 1
        with Heartbeat(work.storage, trial._trial_id):
            run_trial(work, trial, progress=progress, requeue_on_interrupt=on_interrupt_requeue)
    return ran


def _out_of_time(stop_at: float | None, ran: int) -> bool:
    """Whether a worker told to stop at `stop_at` should take no new trial (never before its first)."""
    return stop_at is not None and ran > 0 and time.monotonic() >= stop_at


def worker_tags(work: StudyWork) -> dict[str, Any]:
    """The tags of every trial run this process starts for the study (both engines use them)."""
    from ablate.train import describe_device

    return {
        **environment_tags(),
        "ablate.study": work.name,
        "ablate.engine": work.spec.engine,
        "ablate.backend": _backend(),
        "ablate.device": describe_device(),
        "ablate.worker": worker_id(),
    }


def run_trial(work: StudyWork, trial: optuna.Trial, *, progress: StudyProgress, requeue_on_interrupt: bool) -> None:
    """Train one popped trial and tell its outcome; a failure ends this trial, not the worker."""
    spec, tracker = work.spec, work.tracker
    frozen = retry(lambda: work.cached.get_trial(trial._trial_id), what="read the trial")
    set_attr = _attr_setter(work, trial._trial_id)
    set_attr(WORKER_ATTR, worker_id())
    key, seed = frozen.user_attrs.get(CELL_ATTR), frozen.user_attrs.get(SEED_ATTR)
    missing = _missing_levels(spec, {**frozen.system_attrs.get("fixed_params", {}), **frozen.params})
    if key is None or seed is None or missing:
        _skip(work, trial, f"not enqueued by ablate (no cell, seed or level of {missing}); nothing was run")
        return
    duplicate = _duplicate_of(work, trial.number, key, int(seed))
    if duplicate:
        _skip(work, trial, duplicate)
        return
    params = retry(lambda: suggest(trial, spec), what="set the params")
    seed = int(seed)
    seeds = spec.seeds if averaging(spec) else [seed]
    label = f"{work.name} #{trial.number} {key}" + ("" if averaging(spec) else f" seed={seed}")
    retry_of_run = frozen.user_attrs.get(RETRY_OF_RUN)
    tags: dict[str, Any] = {**work.tags, "ablate.trial": trial.number, "ablate.cell": key, "ablate.seed": seed}
    if averaging(spec):
        tags["ablate.seed"] = ",".join(map(str, seeds))
    if frozen.user_attrs.get(RETRY_OF_TRIAL) is not None:
        tags[RETRY_OF_TRIAL] = frozen.user_attrs[RETRY_OF_TRIAL]
    if retry_of_run:
        tags[RETRY_OF_RUN] = retry_of_run
    if frozen.user_attrs.get(RETRY_REASON):
        tags[RETRY_REASON] = frozen.user_attrs[RETRY_REASON]
    run = tracker.start_trial(work.experiment_id, work.parent_run_id, label.removeprefix(f"{work.name} "), tags)
    set_attr(RUN_ATTR, run.run_id)
    if retry_of_run:
        tracker.tag(retry_of_run, {RETRIED_IN_RUN: run.run_id})
    run.log_params(spec.run_config(params, seed=seed).flat())

    reached: dict[str, int] = {}
    try:
        if averaging(spec):
            metrics, epochs_run = _train_seeds(work, trial, run, params, seeds, tags, progress, label, reached)
        else:
            result = _train_one(work, trial, run, params, seed, progress, label, reached)
            metrics, epochs_run = result.metrics, result.epochs_run
            if result.stopped != "epochs":
                run.set_tags({"ablate.stopped_by": result.stopped})
        run.flush()  # MLflow logging runs in the background: a write that failed fails the trial here
    except optuna.TrialPruned as pruned:
        if "seed" in reached:  # the Wilcoxon pruner stops between seeds
            run.set_tags({"ablate.stopped_seed": reached["seed"]})
        run.finish("pruned", epoch=reached.get("epoch"))
        _tell(work, trial, run, state=TrialState.PRUNED)
        progress.end_trial(label, f"pruned ({pruned})")
    except Exception as error:  # noqa: BLE001 - any failure ends this trial, not the worker
        set_attr(ERROR_ATTR, scrub(f"{type(error).__name__}: {error}")[:2000])
        run.finish("failed", error=error)
        _tell(work, trial, run, state=TrialState.FAIL)
        progress.end_trial(label, f"[red]FAILED[/red] {type(error).__name__}: {scrub(str(error))}")
    except BaseException as error:  # Ctrl-C, SIGTERM: record, hand the trial back, then stop
        set_attr(ERROR_ATTR, f"interrupted ({type(error).__name__})")
        run.finish("interrupted", error=error)
        if _tell(work, trial, run, state=TrialState.FAIL) and requeue_on_interrupt:
            frozen = retry(lambda: work.cached.get_trial(trial._trial_id), what="read the trial")
            requeue(work.study, frozen, f"interrupted ({type(error).__name__}) on {worker_id()}")
        raise
    else:
        values = objective_values(spec, metrics)
        run.log_metrics(epochs_run, {"parameters": metrics["parameters"]} if "parameters" in metrics else {})
        run.finish("complete", epoch=epochs_run)
        if _tell(work, trial, run, values=values):
            shown = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(spec.objective, values))
            progress.end_trial(label, shown)
        else:
            progress.end_trial(label, "[yellow]lost[/yellow]: failed as stale meanwhile; its retry runs it")


def averaging(spec: StudySpec) -> bool:
    """Whether each trial trains every seed and reports their mean (`search.seeds: average`)."""
    return spec.design == "search" and spec.search.seeds == "average"


def _train_one(
    work: StudyWork,
    trial: optuna.Trial,
    log: Any,
    params: dict[str, Level],
    seed: int,
    progress: StudyProgress,
    label: str,
    reached: dict[str, int],
    *,
    report_epochs: bool = True,
) -> Any:
    """Train one seed of the trial into `log`; report each epoch to the pruner when asked."""
    from ablate.objective import train_trial

    spec = work.spec

    def report(epoch: int, metrics: dict[str, float]) -> None:
        reached["epoch"] = epoch
        if not report_epochs or len(spec.objective) > 1:
            return  # Optuna cannot report (or prune) multi-objective trials
        retry(lambda: trial.report(metrics[spec.primary.metric], epoch), what="report an epoch")
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    return train_trial(
        spec.run_config(params, seed=seed), tracking=spec.tracking, log=log, progress=progress, label=label, report=report
    )


def _train_seeds(
    work: StudyWork,
    trial: optuna.Trial,
    run: Any,
    params: dict[str, Level],
    seeds: list[int],
    tags: dict[str, Any],
    progress: StudyProgress,
    label: str,
    reached: dict[str, int],
) -> tuple[dict[str, float], int]:
    """Train each seed in a run nested under the trial's; report each seed's value (Wilcoxon pruner).

    The trial's value is the mean over seeds of each metric; the trial's run logs those means.
    """
    spec = work.spec
    finals: list[dict[str, float]] = []
    epochs_run = 0
    for index, seed in enumerate(seeds):
        seed_run = work.tracker.start_trial(
            work.experiment_id, run.run_id, f"seed={seed}", {**tags, "ablate.seed": seed, PARENT_TAG: "seed"}
        )
        seed_run.log_params(spec.run_config(params, seed=seed).flat())
        try:
            result = _train_one(work, trial, seed_run, params, seed, progress, f"{label} seed={seed}", reached, report_epochs=False)
        except BaseException as error:
            seed_run.finish("interrupted" if not isinstance(error, Exception) else "failed", error=error)
            raise
        seed_run.finish("complete", epoch=result.epochs_run)
        finals.append(result.metrics)
        epochs_run = max(epochs_run, result.epochs_run)
        reached["seed"] = seed
        value = result.value(spec.primary.metric)
        run.log_metrics(index, {f"seed_{spec.primary.metric}": value})
        if len(spec.objective) == 1:
            retry(lambda: trial.report(value, index), what="report a seed")
            if index + 1 < len(seeds) and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after seed {seed} ({index + 1} of {len(seeds)})")
    means = {name: sum(f[name] for f in finals) / len(finals) for name in finals[0]}
    run.log_metrics(epochs_run, means)
    return means, epochs_run


def _missing_levels(spec: StudySpec, fixed: dict[str, Any]) -> list[str]:
    """Factors an enqueued trial should have fixed but has not (a search asks for them instead)."""
    if spec.design == "search":
        return []
    missing: list[str] = []
    present: dict[str, Level] = {}
    for name, factor in spec.factors.items():
        if not factor.active(present):
            continue
        if name in fixed:
            present[name] = fixed[name]
        else:
            missing.append(name)
    return missing


def ask_search(work: StudyWork) -> optuna.Trial | None:
    """A new trial from the sampler while the search's budget lasts, else None.

    Several workers may ask at once; a trial asked past the budget is skipped (told FAIL with the
    reason), so a search never runs more than `search.trials` trials however many workers share it.
    """
    spec = work.spec
    if budget_used(work.trials()) >= spec.search.trials:
        return None
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": we beat ourselves
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = retry(lambda: work.study.ask(), what="ask the sampler")
    retry(lambda: work.storage.record_heartbeat(trial._trial_id), what="first heartbeat")
    set_attr = _attr_setter(work, trial._trial_id)
    set_attr(CELL_ATTR, f"trial-{trial.number}")
    set_attr(SEED_ATTR, spec.seed if averaging(spec) else spec.seeds[trial.number % spec.repeats])
    earlier = [t for t in work.trials() if t.number < trial.number]
    if budget_used(earlier) >= spec.search.trials:
        _skip(work, trial, f"{SKIPPED} the search's budget of {spec.search.trials} trials was reached by other workers")
        return None
    return trial


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count against a search's budget: all but skipped and interrupted ones.

    An interrupted or stale trial is run again (as a retry, or as a new trial), so it does not use
    up the budget; a trial that failed on its own (a NaN loss) does.
    """
    used = 0
    for t in trials:
        error = str(t.user_attrs.get(ERROR_ATTR, ""))
        if t.state != TrialState.FAIL:
            used += 1
        elif error and not error.startswith((SKIPPED, "interrupted")):
            used += 1
    return used


def fail_stale(work: StudyWork) -> None:
    """Fail the study's trials whose heartbeat stopped; the storage's callback retries each once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry(lambda: optuna.storages.fail_stale_trials(work.study), what="fail stale trials")


class StaleTrialHandler:
    """The storage's heartbeat-stale callback: end the dead run KILLED with why, and retry the trial.

    Optuna calls it exactly once per stale trial, in the worker whose update moved the trial from
    RUNNING to FAIL (the update is conditional, so two workers cannot both fail it).
    """

    def __init__(self, tracker_for: Callable[[], Tracker], grace: int | None) -> None:
        self._tracker_for = tracker_for
        self._grace = grace

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        worker = trial.user_attrs.get(WORKER_ATTR, "a worker")
        reason = (
            f"stale: no heartbeat for more than {self._grace}s from {worker} (the process died, was killed, "
            "or lost the storage); the trial was failed and retried"
        )
        # A finished trial's attrs are frozen in Optuna, so the reason goes to the killed MLflow run
        # and to the retry (`ablate.retry_reason`).
        run_id = trial.user_attrs.get(RUN_ATTR)
        if run_id:
            self._tracker_for().end_stale(run_id, reason)
        retried = requeue(study, trial, reason)
        outcome = "enqueued a retry" if retried else f"not retried again (retried {MAX_RETRIES} times already)"
        log.warning("trial %d of %s was stale (%s): %s", trial.number, study.study_name, worker, outcome)


def requeue(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Enqueue a retry of a trial that did not finish, linked to it; False past `MAX_RETRIES`."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRIES:
        return False
    fixed = trial.system_attrs.get("fixed_params") or dict(trial.params)
    user_attrs = {k: trial.user_attrs[k] for k in (CELL_ATTR, SEED_ATTR) if k in trial.user_attrs}
    user_attrs[RETRY_OF_TRIAL] = trial.number
    user_attrs[RETRY_REASON] = reason
    if trial.user_attrs.get(RUN_ATTR):
        user_attrs[RETRY_OF_RUN] = trial.user_attrs[RUN_ATTR]
    # The same system attrs as Optuna's RetryHeartbeatStaleTrialCallback, so its helpers
    # (retried_trial_number, retry_history) read our retries too.
    retry_trial = optuna.trial.create_trial(
        state=TrialState.WAITING,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=user_attrs,
        system_attrs={"fixed_params": fixed, "failed_trial": history[0], "retry_history": history},
    )
    retry(lambda: study.add_trial(retry_trial), what="enqueue a retry")
    return True


def end_if_done(work: StudyWork) -> bool:
    """End the study's parent run with its summary once no trial is waiting or running."""
    trials = work.trials()
    if any(t.state in LIVE_STATES for t in trials):
        return False
    summary, status = study_summary(work.spec, trials)
    work.tracker.end_parent(work.parent_run_id, status=status, summary=summary)
    return True


def has_running(work: StudyWork) -> bool:
    """Whether some trial still runs (it may yet go stale and come back as a retry)."""
    return bool(work.trials((TrialState.RUNNING,)))


def _duplicate_of(work: StudyWork, number: int, key: str, seed: int) -> str | None:
    for other in work.trials((*DONE_STATES, *LIVE_STATES)):
        if other.number == number or (other.user_attrs.get(CELL_ATTR), other.user_attrs.get(SEED_ATTR)) != (key, seed):
            continue
        if other.state in DONE_STATES:
            return f"{SKIPPED} trial {other.number} already finished {key} seed={seed}"
        if other.number < number:
            return f"{SKIPPED} trial {other.number} ({other.state.name}) holds {key} seed={seed}"
    return None


def _skip(work: StudyWork, trial: optuna.Trial, reason: str) -> None:
    _attr_setter(work, trial._trial_id)(ERROR_ATTR, reason)
    retry(lambda: work.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True), what="tell")
    log.warning("trial %d of %s %s", trial.number, work.name, reason)


def _tell(
    work: StudyWork, trial: optuna.Trial, run: Any, *, values: list[float] | None = None, state: TrialState | None = None
) -> bool:
    """Tell the trial's outcome; False when another worker failed it as stale meanwhile.

    `skip_if_finished` makes a repeated tell (the first one's answer lost with the connection)
    harmless; the trial's state afterwards tells whether ours was the tell that counted.
    """
    wanted = state or TrialState.COMPLETE
    told = retry(
        lambda: work.study.tell(trial, values, state=state, skip_if_finished=True), what="tell the outcome"
    )
    if told.state == wanted and (values is None or told.values == list(values)):
        return True
    reason = "this worker lost its heartbeat; the trial was failed as stale and retried, so this result is not used"
    run.finish("interrupted", error=LostTrialError(reason))
    return False


def _attr_setter(work: StudyWork, trial_id: int) -> Callable[[str, Any], None]:
    def set_attr(key: str, value: Any) -> None:
        retry(lambda: work.cached.set_trial_user_attr(trial_id, key, value), what=f"set {key}")

    return set_attr


def _backend() -> str:
    import keras

    return keras.backend.backend()


__all__ = [
    "StudyWork",
    "StaleTrialHandler",
    "attach",
    "drain",
    "end_if_done",
    "fail_stale",
    "has_running",
    "pop_trial",
    "requeue",
    "worker_id",
]
