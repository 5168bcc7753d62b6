"""A dead worker's trial comes back: a stale trial's run is ended KILLED with why, and a linked retry enqueued.

Each running trial heartbeats (`ablate.runtime.storage.Heartbeat`); any worker fails a trial whose
heartbeat is older than the grace period, and Optuna calls `StaleTrialHandler` once for it, in
that worker. An interrupted trial (Ctrl-C, SIGTERM) is handed back the same way (`requeue`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ablate.runtime.optuna_internals import RETRY_HISTORY, retry_system_attrs
from ablate.runtime.storage import heartbeat_seconds, open_storage, retry, stale_grace
from ablate.spec.attributes import (
    CELL_ATTR,
    CONFIRM_ATTR,
    CONFIRMS_ATTR,
    RETRY_OF_RUN,
    RETRY_OF_TRIAL,
    RETRY_REASON,
    RUN_ATTR,
    SEED_ATTR,
    WORKER_ATTR,
)
from ablate.tracking.tracker import Tracker

MAX_RETRIES = 3

log = logging.getLogger(__name__)


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
    system_attrs = retry_system_attrs(trial)
    if len(system_attrs[RETRY_HISTORY]) > MAX_RETRIES:
        return False
    user_attrs = {k: trial.user_attrs[k] for k in (CELL_ATTR, SEED_ATTR, CONFIRM_ATTR, CONFIRMS_ATTR) if k in trial.user_attrs}
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
        system_attrs=system_attrs,
    )
    retry(lambda: study.add_trial(retry_trial), what="enqueue a retry")
    return True


def open_worker_storage(url: str, tracker_for: Callable[[], Tracker]) -> RDBStorage:
    """The storage as a worker opens it: heartbeats on, and a stale trial ended in MLflow and retried.

    `tracker_for` is called only when a stale trial's run is to be ended, so the storage can be opened
    (and found unreachable) before any MLflow store is touched.
    """
    grace = stale_grace()
    return open_storage(url, heartbeat=heartbeat_seconds(), grace=grace, on_stale=StaleTrialHandler(tracker_for, grace))
