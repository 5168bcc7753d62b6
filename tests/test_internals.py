"""The two adapters to other libraries' internals, checked against the versions they were written for.

`ablate.runtime.optuna_internals` owns every use of Optuna's private API and
`ablate.tracking.store` every use of MLflow's; when an upgrade moves one of them, these tests
fail here, naming the helper, before a study breaks somewhere else.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from ablate.runtime import optuna_internals as internals
from ablate.runtime.storage import open_storage
from ablate.tracking import store


def test_optuna_is_the_release_the_adapter_was_read_from() -> None:
    # pyproject admits only this minor release; widen both after re-reading Optuna's code.
    assert optuna.__version__.split(".")[:2] == internals.CHECKED_WITH.split(".")[:2], (
        f"Optuna {optuna.__version__} is installed; ablate.runtime.optuna_internals was checked against "
        f"{internals.CHECKED_WITH}: re-check each helper, then update CHECKED_WITH and pyproject's optuna range"
    )


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat=None, grace=None)
    return optuna.create_study(study_name="internals", storage=storage)


def test_ids_storage_and_handles(study: optuna.Study) -> None:
    study.enqueue_trial({"x": 0.5}, user_attrs={"ablate.cell": "x=0.5"})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    cached = internals.cached_storage(study)
    assert cached.get_trial(internals.trial_id(waiting)).number == waiting.number
    assert internals.study_id(study) == cached.get_study_id_from_name("internals")
    [summary] = optuna.get_all_study_summaries(study._storage)
    assert internals.summary_study_id(summary) == internals.study_id(study)
    # A worker pops the trial itself, then trains it through a handle built from its id.
    assert cached.set_trial_state_values(internals.trial_id(waiting), state=TrialState.RUNNING)
    trial = internals.trial_handle(study, internals.trial_id(waiting))
    assert internals.fixed_params(cached.get_trial(internals.trial_id(waiting))) == {"x": 0.5}
    assert trial.suggest_float("x", 0.0, 1.0) == 0.5  # the enqueued (fixed) value, as with ask()
    study.tell(trial, 1.0)
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].params == {"x": 0.5}


def test_retry_attrs_read_by_optunas_own_helpers(study: optuna.Study) -> None:
    failed = optuna.trial.create_trial(
        state=TrialState.FAIL, params={"x": 0.25}, distributions={"x": FloatDistribution(0, 1)}
    )
    study.add_trial(failed)
    first = study.trials[0]
    retry = optuna.trial.create_trial(
        state=TrialState.WAITING, params={"x": 0.25}, distributions={"x": FloatDistribution(0, 1)},
        system_attrs=internals.retry_system_attrs(first),
    )
    study.add_trial(retry)
    second = study.trials[1]
    assert RetryFailedTrialCallback.retried_trial_number(second) == first.number
    assert RetryFailedTrialCallback.retry_history(second) == [first.number]
    assert internals.fixed_params(second) == {"x": 0.25}
    again = internals.retry_system_attrs(second)
    assert again[internals.RETRY_HISTORY] == [first.number, second.number]
    assert again[internals.FAILED_TRIAL] == first.number


def test_bulk_add_trials_writes_what_add_trials_would(tmp_path: Path) -> None:
    assert internals.rdb_models is not None, "Optuna's RDB models moved: bulk_add_trials would fall back to add_trials"
    storage = open_storage(f"sqlite:///{tmp_path / 'bulk.db'}", heartbeat=None, grace=None)
    bulk = optuna.create_study(study_name="bulk", storage=storage)
    plain = optuna.create_study(study_name="plain", storage=storage)
    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    trials = [
        optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=0.1 * i, params={"u": 0.1 * i},
            distributions={"u": FloatDistribution(0, 1)}, user_attrs={"ablate.cell": f"trial-{i}"},
            system_attrs={"s": i}, intermediate_values={0: 1.0 + i},
        )
        for i in range(5)
    ]
    for trial in trials:
        trial.datetime_start, trial.datetime_complete = start, start
    internals.bulk_add_trials(bulk, trials)
    plain.add_trials(trials)

    def seen(study: optuna.Study) -> list[tuple]:
        return [
            (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs, t.intermediate_values)
            for t in study.get_trials()
        ]

    assert seen(bulk) == seen(plain) and len(seen(bulk)) == 5


def test_mlflow_stores_across_fork(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store.build_store(uri)
    engines = store.mlflow_engines()
    assert engines is not None, "MLflow no longer keeps SqlAlchemyStore._engine_map: forks would share connections"
    assert any(str(tmp_path) in key for key in map(str, engines)), "the built store's engine is not cached by MLflow"
    store.reset_connections_after_fork()  # must not close the (parent's) engines
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).search_experiments()  # the store still answers after the reset
