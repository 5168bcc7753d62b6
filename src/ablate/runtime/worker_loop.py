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
import time
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ablate.runtime.confirm import budget_used, enqueue_confirmation
from ablate.runtime.optuna_internals import trial_handle, trial_id
from ablate.runtime.progress import StudyProgress
from ablate.runtime.rounds import advance, describe
from ablate.runtime.storage import Heartbeat, retry
from ablate.runtime.studies import LIVE_STATES, study_summary, trial_backend
from ablate.runtime.trial import averaging, run_trial, worker_tags
from ablate.runtime.work import StudyWork, _attr_setter, _skip
from ablate.spec.attributes import CELL_ATTR, SEED_ATTR, SKIPPED
from ablate.training.device import enable_gpu_memory_growth

log = logging.getLogger(__name__)


def pop_trial(work: StudyWork) -> optuna.Trial | None:
    """Take one enqueued trial atomically, or None when none is waiting; never creates a trial.

    This is `Study.ask()` without its fallback (see the module docstring). Each WAITING trial is
    tried in turn; the storage moves it to RUNNING only if it is still WAITING, under a row lock,
    so of several workers racing for it exactly one wins and the others move on to the next.
    """
    for waiting in waiting_here(work):
        try:
            won = retry(
                lambda: work.cached.set_trial_state_values(trial_id(waiting), state=TrialState.RUNNING),  # noqa: B023 - called at once
                what="pop a trial",
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if won:
            # Beat at once: a trial with no heartbeat row is never judged stale.
            retry(lambda: work.storage.record_heartbeat(trial_id(waiting)), what="first heartbeat")  # noqa: B023 - called at once
            return trial_handle(work.study, trial_id(waiting))
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
    enable_gpu_memory_growth()
    work.tags = worker_tags(work)
    ran = 0
    while (max_trials is None or ran < max_trials) and not _out_of_time(stop_at, ran):
        trial = pop_trial(work)
        if trial is None and work.spec.design == "search":
            trial = ask_search(work)
        if trial is None and enqueue_confirmation(work):  # a search's winner on fresh seeds, once it is done
            trial = pop_trial(work)
        if trial is None and next_round(work, progress, announce_end=False):  # seeds added until decided (a resume)
            trial = pop_trial(work)
        if trial is None:
            break
        ran += 1
        with Heartbeat(work.storage, trial_id(trial)):
            run_trial(work, trial, progress=progress, requeue_on_interrupt=on_interrupt_requeue)
        # What the trial just finished may start: a search's confirmation, a sequential study's next
        # round. Enqueued here, before this worker may stop (its trial limit, a recycled process), so
        # a supervisor that looks for waiting trials finds them.
        enqueue_confirmation(work)
        next_round(work, progress, announce_end=True)
    return ran


def next_round(work: StudyWork, progress: StudyProgress, *, announce_end: bool) -> bool:
    """A sequential study's next round, enqueued once its last trial has finished; whether one was.

    Says what the round decided; `announce_end`: also when nothing more is planned (after a trial:
    said by the worker that ran the last one, not by every idle pass).
    """
    if work.spec.sequential is None:
        return False
    now, added = advance(work.study, work.spec)
    if added or (announce_end and now.settled):
        progress.replan(len(now.wanted), describe(now, work.spec, added=added))
    return added > 0


def _out_of_time(stop_at: float | None, ran: int) -> bool:
    """Whether a worker told to stop at `stop_at` should take no new trial (never before its first)."""
    return stop_at is not None and ran > 0 and time.monotonic() >= stop_at


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
    retry(lambda: work.storage.record_heartbeat(trial_id(trial)), what="first heartbeat")
    set_attr = _attr_setter(work, trial_id(trial))
    set_attr(CELL_ATTR, f"trial-{trial.number}")
    set_attr(SEED_ATTR, spec.seed if averaging(spec) else spec.seeds[trial.number % spec.max_repeats])
    earlier = [t for t in work.trials() if t.number < trial.number]
    if budget_used(earlier) >= spec.search.trials:
        _skip(work, trial, f"{SKIPPED} the search's budget of {spec.search.trials} trials was reached by other workers")
        return None
    return trial


def fail_stale(work: StudyWork) -> None:
    """Fail the study's trials whose heartbeat stopped; the storage's callback retries each once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry(lambda: optuna.storages.fail_stale_trials(work.study), what="fail stale trials")


def end_if_done(work: StudyWork) -> bool:
    """End the study's parent run with its summary once no trial is waiting or running."""
    trials = work.trials()
    if any(t.state in LIVE_STATES for t in trials):
        return False
    summary, status = study_summary(work.spec, trials)
    work.tracker.end_parent(work.parent_run_id, status=status, summary=summary)
    return True


def has_running(work: StudyWork) -> bool:
    """Whether some trial this worker could take still runs (it may yet go stale and come back as a retry)."""
    return bool(_here(work.trials((TrialState.RUNNING,))))


def waiting_here(work: StudyWork) -> list[FrozenTrial]:
    """The enqueued trials this process may run: all, but of a `train.backend` factor only its backend's."""
    return _here(work.trials((TrialState.WAITING,)))


def _here(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    import keras  # imported already: the backend was fixed when this process imported it

    own = keras.backend.backend()
    return [t for t in trials if trial_backend(t) in (None, own)]
