"""engine: keras-tuner: KerasTuner chooses the trials, ablate records them like the Optuna engine.

The end-to-end tests run tiny real searches (real KerasTuner, Keras, Optuna storage and MLflow
store under tmp_path) and compare what they wrote, key for key, with an Optuna-engine run of the
same study file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from rich.console import Console

from ablate.runtime.engines.keras_tuner import KerasTunerEngineError, Levels, search_space, trial_levels
from ablate.project import resolve_project
from ablate.runtime.progress import StudyProgress
from ablate.spec.errors import SpecError
from ablate.spec.loading import load_spec, spec_from_dict
from ablate.runtime.studies import StudyOutcome, trial_records
from ablate.runtime.run import run_study

from conftest import tiny_study

FACTORS = {
    "model.skip": ["none", "concat"],
    "train.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "model.block": ["plain", "residual"],
    "model.residual_blocks": {"type": "int", "low": 1, "high": 2, "when": {"model.block": "residual"}},
}
# Keys that only the keras-tuner engine writes (KerasTuner's trial id and Hyperband's budget).
EXTRA_PREFIX = "keras_tuner."


def search_study(name: str = "kt", **changes: Any) -> dict[str, Any]:
    raw = tiny_study(
        name=name,
        data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 64, "test_size": 32},
        train={"epochs": 2, "batch_size": 64},
        factors=FACTORS,
        design="search",
        engine="keras-tuner",
        search={"sampler": "random", "trials": 3},
    )
    raw.update(changes)
    return raw


def run(path: Path, project: Any, *overrides: str, **kwargs: Any) -> StudyOutcome:
    loaded = load_spec(path, overrides=list(overrides))
    with StudyProgress(Console(file=io.StringIO())) as progress:
        return run_study(loaded, project, progress=progress, **kwargs)


def layout(client: MlflowClient, run_id: str) -> dict[str, set[str]]:
    """What an MLflow run holds, as sets of keys: tags, params, metrics, artifacts."""
    data = client.get_run(run_id).data
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    for folder in ("reconstructions", "model"):
        artifacts |= {a.path for a in client.list_artifacts(run_id, folder)}
    return {"tags": set(data.tags), "params": set(data.params), "metrics": set(data.metrics), "artifacts": artifacts}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-trial Optuna-engine run of the same study file: the layout to match."""
    import yaml

    folder = tmp_path_factory.mktemp("optuna-engine")
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(search_study(name="kt-ref"), sort_keys=False))
    project = resolve_project(home=folder / "home")
    outcome = run(path, project, "engine=optuna", "search.sampler=random", "search.trials=2")
    assert (outcome.complete, outcome.failed) == (2, 0)
    client = MlflowClient(project.tracking_uri)
    study = optuna.load_study(study_name="kt-ref", storage=project.storage)
    runs = [layout(client, t.user_attrs["mlflow_run_id"]) for t in study.trials]
    tags = client.get_run(study.trials[0].user_attrs["mlflow_run_id"]).data.tags
    assert tags["ablate.engine"] == "optuna"
    return {"runs": runs, "parent": set(client.get_run(outcome.parent_run_id).data.tags)}


def same_layout(got: dict[str, set[str]], expected: dict[str, set[str]], *, complete: bool = True) -> None:
    assert expected["tags"] <= got["tags"], expected["tags"] - got["tags"]
    assert all(key.startswith(EXTRA_PREFIX) for key in got["tags"] - expected["tags"]), got["tags"] - expected["tags"]
    for kind in ("params", "metrics", "artifacts") if complete else ("params",):
        assert got[kind] == expected[kind], (kind, got[kind] ^ expected[kind])


# --- without training -----------------------------------------------------------------------


def test_factors_map_to_kerastuner_hyperparameters_with_their_types_and_conditions() -> None:
    import keras_tuner

    spec = spec_from_dict(search_study(factors={**FACTORS, "model.batch_norm": [True, False]})).spec
    space, codecs = search_space(spec)
    hps = {hp.name: hp for hp in space.space}
    assert list(hps) == [*FACTORS, "model.batch_norm"]  # the same dotted names, in file order
    assert isinstance(hps["model.skip"], keras_tuner.engine.hyperparameters.Choice)
    assert hps["model.skip"].values == ["none", "concat"]
    rate = hps["train.learning_rate"]
    assert isinstance(rate, keras_tuner.engine.hyperparameters.Float) and rate.sampling == "log"
    assert (rate.min_value, rate.max_value) == (1.0e-4, 1.0e-2)
    blocks = hps["model.residual_blocks"]
    assert isinstance(blocks, keras_tuner.engine.hyperparameters.Int) and (blocks.min_value, blocks.max_value, blocks.step) == (1, 2, 1)
    assert [(c.name, c.values) for c in blocks.conditions] == [("model.block", ["residual"])]
    # KerasTuner reads booleans as ints: they are offered as their YAML spelling and read back.
    assert hps["model.batch_norm"].values == ["true", "false"]
    assert codecs["model.batch_norm"].decode("false") is False

    plain = {"model.skip": "none", "train.learning_rate": 0.001, "model.block": "plain", "model.residual_blocks": 2,
             "model.batch_norm": "true"}
    assert trial_levels(spec, plain, codecs, space) == {
        "model.skip": "none", "train.learning_rate": 0.001, "model.block": "plain", "model.batch_norm": True,
    }
    residual = {**plain, "model.block": "residual"}
    assert trial_levels(spec, residual, codecs, space)["model.residual_blocks"] == 2


def test_mixed_levels_round_trip() -> None:
    codec = Levels.of((None, 3, "wide"))
    assert codec.choices == ("null", "3", "wide")
    assert [codec.decode(codec.encode(level)) for level in (None, 3, "wide")] == [None, 3, "wide"]
    assert Levels.of((16, 32)).choices == (16, 32)  # one plain type: offered as it is


def test_what_the_engine_refuses(write_study, project) -> None:
    path = write_study(search_study(name="refused"))
    with pytest.raises(KerasTunerEngineError, match="--workers"):
        run(path, project, workers=2)
    with pytest.raises(SpecError, match="seeds: average"):
        spec_from_dict(search_study(search={"sampler": "hyperband", "trials": 3, "seeds": "average"}))
    with pytest.raises(SpecError, match="not a sampler of engine keras-tuner"):
        spec_from_dict(search_study(search={"sampler": "tpe", "trials": 3}))


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_random_search_writes_the_optuna_engines_layout(write_study, project, reference) -> None:
    path = write_study(search_study())
    outcome = run(path, project)
    assert (outcome.total, outcome.complete, outcome.failed, outcome.pruned, outcome.ran) == (3, 3, 0, 0, 3)

    study = optuna.load_study(study_name="kt", storage=project.storage)
    client = MlflowClient(project.tracking_uri)
    assert len(study.trials) == 3
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        params = trial.params
        # Conditional params exist exactly where their parent switches them on.
        assert ("model.residual_blocks" in params) == (params["model.block"] == "residual"), params
        assert trial.distributions["model.skip"] == CategoricalDistribution(("none", "concat"))
        assert trial.distributions["train.learning_rate"] == FloatDistribution(1.0e-4, 1.0e-2, log=True)
        if "model.residual_blocks" in params:
            assert trial.distributions["model.residual_blocks"] == IntDistribution(1, 2, step=1)
        attrs = trial.user_attrs
        assert attrs["ablate.cell"] == f"trial-{trial.number}" and attrs["ablate.seed"] in (0, 1)
        assert attrs["keras_tuner.trial_id"] == str(trial.number)

        run_id = attrs["mlflow_run_id"]
        mlflow_run = client.get_run(run_id)
        tags, logged = mlflow_run.data.tags, mlflow_run.data.params
        assert mlflow_run.info.status == "FINISHED" and tags["ablate.state"] == "complete"
        assert tags["mlflow.parentRunId"] == outcome.parent_run_id and tags["ablate.role"] == "trial"
        assert tags["ablate.engine"] == "keras-tuner" and tags["ablate.trial"] == str(trial.number)
        assert tags["ablate.cell"] == attrs["ablate.cell"] and tags["ablate.seed"] == str(attrs["ablate.seed"])
        assert tags["ablate.study"] == "kt" and tags["keras_tuner.trial_id"] == attrs["keras_tuner.trial_id"]
        assert logged["model.skip"] == params["model.skip"] and logged["seed"] == str(attrs["ablate.seed"])
        assert float(logged["train.learning_rate"]) == pytest.approx(params["train.learning_rate"])
        assert logged["train.epochs"] == "2"
        history = client.get_metric_history(run_id, "val_loss")
        assert [m.step for m in history] == [1, 2]
        assert trial.value == history[-1].value  # the value is the logged metric at the last epoch
        same_layout(layout(client, run_id), reference["runs"][0])

    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 3
    assert reference["parent"] <= set(parent.data.tags)
    best = min(study.trials, key=lambda t: t.value)
    assert parent.data.tags["ablate.best_trial"] == str(best.number)
    records = trial_records(study)
    assert [(r.cell, r.value, r.run_id) for r in records] == [
        (t.user_attrs["ablate.cell"], t.value, t.user_attrs["mlflow_run_id"]) for t in study.trials
    ]
    assert (project.home / "keras_tuner" / "kt" / "oracle.json").is_file()

    # Running it again resumes KerasTuner's search from its state: nothing is run twice.
    again = run(path, project)
    assert (again.ran, again.complete) == (0, 3)
    assert len(optuna.load_study(study_name="kt", storage=project.storage).trials) == 3


@pytest.mark.slow
def test_hyperband_budgets_are_pruned_trials_and_promotions_retrain_with_the_same_seed(write_study, project, reference) -> None:
    # train.epochs 3 with Hyperband's factor 3: one halving bracket of three 1-epoch trials, then
    # the best of them promoted to 3 epochs (a fourth trial), as KerasTuner schedules it.
    path = write_study(search_study(name="kt-hb", train={"epochs": 3, "batch_size": 64}, search={"sampler": "hyperband", "trials": 4}))
    outcome = run(path, project)
    assert (outcome.total, outcome.complete, outcome.pruned, outcome.failed) == (4, 1, 3, 0)

    study = optuna.load_study(study_name="kt-hb", storage=project.storage)
    client = MlflowClient(project.tracking_uri)
    first, promoted = study.trials[:3], study.trials[3]
    for trial in first:
        # Stopped at its budget like a trial Optuna's Hyperband pruner stopped: PRUNED, valued at that epoch.
        assert trial.state == TrialState.PRUNED and trial.user_attrs["keras_tuner.epochs"] == 1
        assert list(trial.intermediate_values) == [1] and trial.value == trial.intermediate_values[1]
        tags = client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags
        assert (tags["ablate.state"], tags["ablate.stopped_epoch"], tags["keras_tuner.epochs"]) == ("pruned", "1", "1")
        same_layout(layout(client, trial.user_attrs["mlflow_run_id"]), reference["runs"][0], complete=False)

    best = min(first, key=lambda t: t.value)
    assert promoted.state == TrialState.COMPLETE and promoted.user_attrs["keras_tuner.epochs"] == 3
    assert promoted.params == best.params and promoted.user_attrs["ablate.seed"] == best.user_attrs["ablate.seed"]
    assert sorted(promoted.intermediate_values) == [1, 2, 3]
    # Retrained from scratch with the same seed: its first epoch is the promoted trial's.
    assert promoted.intermediate_values[1] == pytest.approx(best.value, rel=1e-3)
    run_id = promoted.user_attrs["mlflow_run_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["keras_tuner.continues"] == best.user_attrs["keras_tuner.trial_id"] and tags["keras_tuner.initial_epoch"] == "1"
    assert tags["ablate.state"] == "complete" and tags["ablate.stopped_epoch"] == "3"
    model_files = {a for a in reference["runs"][0]["artifacts"] if a == "model" or a.startswith("model/")}  # .keras + MLmodel
    assert "model/model.keras" in model_files and "model/MLmodel" in model_files
    same_layout(layout(client, run_id), {**reference["runs"][0], "artifacts": {
        "model_summary.txt", "reconstructions", "reconstructions/epoch_001.png",
        "reconstructions/epoch_002.png", "reconstructions/final.png", *model_files,
    }})
    assert client.get_run(outcome.parent_run_id).data.tags["ablate.best_trial"] == str(promoted.number)
