"""End to end against a real local Optuna storage and a real MLflow store under tmp_path."""

from __future__ import annotations

import io

import optuna
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from ablate.runtime.progress import StudyProgress
from ablate.spec.loading import spec_from_dict
from ablate.runtime.studies import StudyConflictError, load_study
from ablate.runtime.run import run_study

from conftest import tiny_study

pytestmark = pytest.mark.slow


def run(raw: dict, project, **kwargs):
    loaded = spec_from_dict(raw, **kwargs)
    with StudyProgress(Console(file=io.StringIO())) as progress:
        return run_study(loaded, project, progress=progress)


def trial_runs(client: MlflowClient, experiment_id: str) -> list:
    return client.search_runs([experiment_id], filter_string="tags.`ablate.role` = 'trial'")


def test_tiny_study_end_to_end_and_resume(project) -> None:
    outcome = run(tiny_study(), project)
    assert (outcome.total, outcome.complete, outcome.failed, outcome.ran) == (4, 4, 0, 4)

    study = optuna.load_study(study_name="tiny", storage=project.storage)
    trials = study.get_trials()
    assert sorted((t.params["model.skip"], t.user_attrs["ablate.seed"]) for t in trials) == [
        ("concat", 0), ("concat", 1), ("none", 0), ("none", 1),
    ]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert study.user_attrs["ablate.spec"]["name"] == "tiny"

    client = MlflowClient(project.tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["ablate.role"] == "study"
    runs = trial_runs(client, experiment.experiment_id)
    assert len(runs) == 4
    for trial in trials:
        mlflow_run = client.get_run(trial.user_attrs["mlflow_run_id"])
        data, tags = mlflow_run.data, mlflow_run.data.tags
        assert mlflow_run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == outcome.parent_run_id
        assert tags["ablate.study"] == "tiny" and tags["ablate.trial"] == str(trial.number)
        assert tags["ablate.seed"] == str(trial.user_attrs["ablate.seed"]) and tags["ablate.cell"] == trial.user_attrs["ablate.cell"]
        assert tags["ablate.backend"] == "tensorflow" and tags["ablate.device"] == "CPU" and tags["ablate.version"]
        assert data.params["model.skip"] == trial.params["model.skip"]
        assert data.params["train.epochs"] == "2" and data.params["seed"] == str(trial.user_attrs["ablate.seed"])
        for metric in ("train_loss", "val_loss", "val_mse", "val_psnr"):
            history = client.get_metric_history(mlflow_run.info.run_id, metric)
            assert [m.step for m in history] == [1, 2]
        # The objective value is exactly the logged metric it names, at the last epoch.
        assert trial.value == client.get_metric_history(mlflow_run.info.run_id, "val_loss")[-1].value
        artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
        assert {"model_summary.txt", "reconstructions"} <= artifacts
        pictures = {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "reconstructions")}
        assert pictures == {"reconstructions/epoch_001.png", "reconstructions/final.png"}

    # Running again resumes: nothing is run twice.
    again = run(tiny_study(), project)
    assert (again.ran, again.complete) == (0, 4)
    assert len(optuna.load_study(study_name="tiny", storage=project.storage).trials) == 4
    # One more seed per cell: exactly the two missing trials run.
    more = run(tiny_study(), project, overrides=["repeats=3"])
    assert (more.ran, more.complete, more.total) == (2, 6, 6)
    assert len(trial_runs(client, experiment.experiment_id)) == 6


def test_same_seed_gives_the_same_value(project) -> None:
    raw = tiny_study(name="twice", factors={"model.skip": ["concat"]}, repeats=1)
    first = run(raw, project)
    study = load_study("twice", project.storage)
    value = study.best_value
    other = run({**raw, "name": "twice-again"}, project)
    assert first.complete == other.complete == 1
    assert load_study("twice-again", project.storage).best_value == pytest.approx(value, rel=1e-5)


def test_nan_fails_the_trial_and_the_study_goes_on(project) -> None:
    # A huge learning rate blows the weights up to inf, and inf - inf is NaN.
    raw = tiny_study(name="nan", factors={"train.learning_rate": [1.0e30, 0.001]}, repeats=1)
    outcome = run(raw, project)
    assert (outcome.complete, outcome.failed) == (1, 1)
    study = load_study("nan", project.storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "NonFiniteLossError" in failed[0].user_attrs["ablate.error"]
    client = MlflowClient(project.tracking_uri)
    failed_run = client.get_run(failed[0].user_attrs["mlflow_run_id"])
    assert failed_run.info.status == "FAILED"
    assert "NonFiniteLossError" in failed_run.data.tags["ablate.error"]
    assert client.get_run(outcome.parent_run_id).info.status == "FAILED"


def test_changed_settings_refuse_to_resume(project) -> None:
    run(tiny_study(name="conflict", repeats=1, factors={"model.skip": ["none"]}), project)
    with pytest.raises(StudyConflictError, match=r"train.epochs: 2 -> 1"):
        run(tiny_study(name="conflict", repeats=1, factors={"model.skip": ["none"]}), project, overrides=["train.epochs=1"])


def test_a_grid_never_prunes_a_slow_cell(project) -> None:
    # Three good trials, then a cell that learns nothing: Optuna's default median pruner (5 startup
    # trials) would stop its third trial; an ablation needs every seed of every cell.
    raw = tiny_study(name="noprune", factors={"train.learning_rate": [0.01, 1.0e-9]}, repeats=3)
    outcome = run(raw, project)
    assert (outcome.complete, outcome.pruned, outcome.failed) == (6, 0, 0)


def test_a_study_names_its_objectives_for_optunas_own_tools(tmp_path: Path) -> None:
    import optuna

    from ablate.runtime.studies import open_study
    from ablate.spec.loading import spec_from_dict

    spec = spec_from_dict({**tiny_study(name="named"), "design": "search", "search": {"sampler": "nsga2", "trials": 2},
                           "factors": {"model.filters": [2, 4]},
                           "objective": [{"metric": "val_loss"}, {"metric": "parameters"}]}).spec
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    open_study(spec, storage)
    assert optuna.load_study(study_name="named", storage=storage).metric_names == ["val_loss", "parameters"]
