"""Every use of Optuna's internals, in one place, written for (and tested against) the Optuna in CHECKED_WITH.

ablate needs a few things Optuna's public API does not give:

- a worker pops an enqueued trial atomically without `Study.ask()`'s fallback of creating a new
  one (`ablate.runtime.worker_loop.pop_trial`): that needs the trial's storage id, the study's
  caching storage, and a `Trial` handle built from an id;
- a weight study adds 1,000 finished trials in one transaction (`bulk_add_trials`), through the
  RDB storage's table models;
- a sequential study's next round (and a search's confirmation) is read and enqueued under one lock per study that every process
  reaching the storage shares (`round_lock`), through the RDB storage's engine;
- retries carry the system attrs Optuna's own retry callback writes (`fixed_params`,
  `retry_history`, `failed_trial`), so Optuna's helpers read ablate's retries too.

Nothing else in ablate touches an underscored Optuna name or a private module. When Optuna moves
one of these, `tests/test_internals.py` fails here first; update this module and CHECKED_WITH.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy as sa
from optuna import distributions
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudySummary
from optuna.trial import FrozenTrial

if TYPE_CHECKING:  # what BaseStorage.get_all_studies returns; Optuna exports it from no public module
    from optuna.study._frozen import FrozenStudy

rdb_models: ModuleType | None
try:
    from optuna.storages._rdb import models as rdb_models
    from optuna.storages._rdb.storage import _create_scoped_session
except ImportError:  # an Optuna without these modules: bulk_add_trials falls back to add_trials
    rdb_models = None

CHECKED_WITH = "5.0.0"  # the Optuna release these internals were read from
FIXED_PARAMS = "fixed_params"  # system attr: the params an enqueued trial must take (enqueue_trial)
RETRY_HISTORY = "retry_history"  # system attr: the numbers of the trials a retry descends from
FAILED_TRIAL = "failed_trial"  # system attr: the first of them


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial's id in the storage (its `number` is per study; the storage's calls take the id)."""
    return trial._trial_id


def study_id(study: optuna.Study) -> int:
    """The id the Study was loaded with."""
    return study._study_id


def summary_study_id(summary: StudySummary | FrozenStudy) -> int:
    """A study summary's storage id (the order studies were created in)."""
    return summary._study_id


def cached_storage(study: optuna.Study) -> BaseStorage:
    """The storage as the Study sees it: Optuna's caching wrapper around the RDB storage.

    Trials are read and popped through it, since the Study's trials may only touch trial ids that
    its cache has seen.
    """
    return study._storage


def trial_handle(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """A `Trial` of a trial that is already RUNNING (Optuna builds these only inside `ask`)."""
    return optuna.Trial(study, trial_id)


def fixed_params(trial: FrozenTrial) -> dict[str, Any]:
    """The params an enqueued trial was given (`enqueue_trial(params=...)`); empty for a sampled one."""
    return dict(trial.system_attrs.get(FIXED_PARAMS, {}))


def retry_system_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """The system attrs of a retry of `trial`, as Optuna's RetryHeartbeatStaleTrialCallback writes them."""
    history = [*trial.system_attrs.get(RETRY_HISTORY, []), trial.number]
    return {FIXED_PARAMS: fixed_params(trial) or dict(trial.params), FAILED_TRIAL: history[0], RETRY_HISTORY: history}


ROUND_LOCK_CLASS = 0x0AB1A7E  # the first key of ablate's PostgreSQL advisory locks (the second: the study's id)


@contextmanager
def round_lock(study: optuna.Study) -> Iterator[None]:
    """Hold a lock on the study shared by every process that reaches its storage, on any machine.

    PostgreSQL: a session advisory lock keyed by the study's id; MySQL: `GET_LOCK`; SQLite (one
    machine): an flock on `FILE.rounds.lock` beside the database file; any other storage: none
    (a round enqueued twice is then only run once: the workers skip a (cell, seed) already run).
    """
    backend = getattr(study._storage, "_backend", study._storage)  # below the caching wrapper
    engine = getattr(backend, "engine", None) if isinstance(backend, RDBStorage) else None
    if engine is None:
        yield
        return
    dialect = engine.dialect.name
    if dialect == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with open(Path(str(engine.url.database)).with_name(Path(str(engine.url.database)).name + ".rounds.lock"), "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        return
    statements = {
        "postgresql": ("SELECT pg_advisory_lock(:a, :b)", "SELECT pg_advisory_unlock(:a, :b)"),
        "mysql": ("SELECT GET_LOCK(CONCAT('ablate-round-', :a, '-', :b), 600)", "SELECT RELEASE_LOCK(CONCAT('ablate-round-', :a, '-', :b))"),
    }.get(dialect)
    if statements is None:
        yield
        return
    keys = {"a": ROUND_LOCK_CLASS, "b": study._study_id}
    with engine.connect() as connection:
        connection.execute(sa.text(statements[0]), keys)
        try:
            yield
        finally:
            connection.execute(sa.text(statements[1]), keys)


def bulk_add_trials(study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """Add finished trials to the study in one transaction.

    Optuna's `add_trials` writes each trial in its own transaction with a query per param and
    attr (about 50 ms per trial on SQLite here: a minute for 1,000 weight trials); this inserts
    the same rows (trials, values, params, user and system attrs) with one statement per table.
    Storages other than Optuna's RDB storage, or an Optuna whose tables differ, take `add_trials`.
    """
    for trial in trials:
        trial._validate()  # what add_trials checks first
        if trial.values is not None and len(trial.values) != len(study.directions):
            raise ValueError(f"trial {trial.number} has {len(trial.values)} values for {len(study.directions)} objectives")
    backend = getattr(study._storage, "_backend", study._storage)  # below the caching wrapper
    if rdb_models is None or not isinstance(backend, RDBStorage) or not trials:
        study.add_trials(trials)
        return
    _insert_trials(backend, rdb_models, study._study_id, trials)


def _insert_trials(storage: RDBStorage, models: Any, study_id: int, trials: list[FrozenTrial]) -> None:
    with _create_scoped_session(storage.scoped_session) as session:
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        start = session.query(sa.func.count(models.TrialModel.trial_id)).filter(models.TrialModel.study_id == study_id).scalar()
        table = models.TrialModel.__table__
        session.execute(sa.insert(table), [
            {"number": start + offset, "study_id": study_id, "state": trial.state,
             "datetime_start": trial.datetime_start, "datetime_complete": trial.datetime_complete}
            for offset, trial in enumerate(trials)
        ])
        # The new rows' ids by number (one query, not a round trip per row: PostgreSQL is remote).
        numbered = session.execute(
            sa.select(table.c.number, table.c.trial_id).where(table.c.study_id == study_id, table.c.number >= start)
        )
        by_number: dict[int, int] = dict(numbered.all())
        ids = [by_number[start + offset] for offset in range(len(trials))]
        values, params, user, system, steps = [], [], [], [], []
        for trial_id, trial in zip(ids, trials):
            for objective, value in enumerate(trial.values or []):
                stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                values.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
            for name, value in trial.params.items():
                distribution = trial.distributions[name]
                params.append({"trial_id": trial_id, "param_name": name, "param_value": distribution.to_internal_repr(value),
                               "distribution_json": distributions.distribution_to_json(distribution)})
            user += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in trial.user_attrs.items()]
            system += [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in trial.system_attrs.items()]
            for step, value in trial.intermediate_values.items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
                steps.append({"trial_id": trial_id, "step": step, "intermediate_value": stored, "intermediate_value_type": kind})
        for model, rows in (
            (models.TrialValueModel, values), (models.TrialParamModel, params), (models.TrialUserAttributeModel, user),
            (models.TrialSystemAttributeModel, system), (models.TrialIntermediateValueModel, steps),
        ):
            if rows:
                session.execute(sa.insert(model.__table__), rows)
