"""Designs and factor types: grids with conditional factors, one-at-a-time (LOCO), searches.

The spec-level tests enumerate designs without training; the end-to-end ones run tiny real
searches against a real SQLite Optuna storage and MLflow store and read both back.
"""

from __future__ import annotations

import io
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

from ablate.runtime.progress import StudyProgress
from ablate.cli.main import main as cli_main
from ablate.spec.errors import SamplerUnavailableError
from ablate.runtime.sampling import pruner_for
from ablate.spec.errors import SpecError
from ablate.spec.levels import cell_key
from ablate.spec.loading import spec_from_dict
from ablate.runtime.studies import open_study
from ablate.runtime.run import run_study

from conftest import tiny_study

UNET = {
    "model.skip": ["concat", "none"],
    "model.block": ["residual", "plain", "inception"],
    "model.residual_blocks": {"type": "int", "low": 1, "high": 2, "when": {"model.block": "residual"}},
    "model.batch_norm": [True, False],
}


def spec_of(**changes):
    return spec_from_dict(tiny_study(**changes)).spec


def refused(**changes) -> str:
    with pytest.raises(SpecError) as error:
        spec_from_dict(tiny_study(**changes))
    return str(error.value)


def test_grid_crosses_a_conditional_factor_only_where_its_parent_switches_it_on() -> None:
    cells = spec_of(factors=UNET).cells()
    # skip 2 x (residual x 2 depths + plain + inception) x batch_norm 2
    assert len(cells) == 2 * 4 * 2
    for cell in cells:
        assert ("model.residual_blocks" in cell) == (cell["model.block"] == "residual"), cell
    assert len({cell_key(c) for c in cells}) == len(cells)


def test_one_at_a_time_produces_the_baseline_and_one_variant_per_other_level() -> None:
    spec = spec_of(design="one-at-a-time", factors=UNET)
    keys = [cell_key(c) for c in spec.cells()]
    base = {"model.skip": "concat", "model.block": "residual", "model.residual_blocks": 1, "model.batch_norm": True}
    expected = [
        base,
        {**base, "model.skip": "none"},
        {"model.skip": "concat", "model.block": "plain", "model.batch_norm": True},  # its child leaves with it
        {"model.skip": "concat", "model.block": "inception", "model.batch_norm": True},
        {**base, "model.residual_blocks": 2},
        {**base, "model.batch_norm": False},
    ]
    assert keys == [cell_key(c) for c in expected]


def test_one_at_a_time_takes_the_baseline_from_the_file() -> None:
    spec = spec_of(design="one-at-a-time", factors=UNET, baseline={"model.block": "plain", "model.skip": "none"})
    cells = spec.cells()
    assert cells[0] == {"model.skip": "none", "model.block": "plain", "model.batch_norm": True}
    # residual switches its child on at the child's first level; the child has no variants of its own
    assert {"model.skip": "none", "model.block": "residual", "model.residual_blocks": 1, "model.batch_norm": True} in cells
    assert not any(c.get("model.residual_blocks") == 2 for c in cells)
    assert len(cells) == 1 + 1 + 2 + 1


def test_int_factors_enumerate_in_grids_and_float_ranges_only_search() -> None:
    spec = spec_of(factors={"model.filters": {"type": "int", "low": 4, "high": 12, "step": 4}})
    assert spec.levels == {"model.filters": [4, 8, 12]}
    message = refused(factors={"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    assert "design: search" in message and "train.learning_rate" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"design": "search", "search": {"pruner": "wilcoxon"}}, "needs search.seeds: average"),
        ({"design": "search", "search": {"pruner": "wilcoxon", "seeds": "average"}, "repeats": 3}, "use repeats >= 5"),
        ({"design": "search", "search": {"pruner": "median", "seeds": "average"}}, "use pruner wilcoxon or none"),
        ({"design": "search", "search": {"sampler": "cmaes"}}, "categorical"),
        ({"design": "search", "search": {"sampler": "hyperband"}}, "not a sampler of engine optuna"),
        ({"objective": [{"metric": "val_loss"}, {"metric": "parameters"}]}, "several objectives need design: search"),
        ({"design": "search", "objective": [{"metric": "val_loss"}, {"metric": "parameters"}], "search": {"pruner": "median"}}, "pruners work on one objective"),
        ({"objective": {"metric": "val_chain_loss"}}, "not logged by model.family unet"),
        ({"baseline": {"model.skip": "none"}}, "only to design: one-at-a-time"),
        ({"design": "one-at-a-time", "baseline": {"model.skip": "sideways"}}, "not one of its levels"),
        ({"factors": {"model.residual_blocks": {"type": "int", "low": 1, "high": 2, "when": {"model.block": "residual"}}}}, "must be a factor listed before it"),
        ({"factors": {"model.block": ["plain"], "model.residual_blocks": {"type": "int", "low": 1, "high": 2, "when": {"model.block": "residul"}}}}, "model.block's levels are"),
        ({"factors": {"train.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}}, "low > 0"),
    ],
)
def test_bad_designs_say_what_to_do(changes: dict, expected: str) -> None:
    message = refused(**changes)
    assert expected in message, message


def run(raw: dict, project):
    loaded = spec_from_dict(raw)
    with StudyProgress(Console(file=io.StringIO())) as progress:
        return run_study(loaded, project, progress=progress)


SEARCH_FACTORS = {
    "model.block": ["residual", "plain"],
    "model.residual_blocks": {"type": "int", "low": 1, "high": 2, "when": {"model.block": "residual"}},
    "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "model.filters": {"type": "int", "low": 2, "high": 6, "step": 2},
}


@pytest.mark.slow
def test_search_samples_typed_and_conditional_factors_and_logs_them(project) -> None:
    raw = tiny_study(
        "search", design="search", factors=SEARCH_FACTORS, repeats=2,
        search={"sampler": "tpe", "trials": 4}, train={"epochs": 1, "batch_size": 64},
    )
    outcome = run(raw, project)
    assert (outcome.total, outcome.complete, outcome.failed) == (4, 4, 0)
    study = optuna.load_study(study_name="search", storage=project.storage)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    client = MlflowClient(project.tracking_uri)
    for trial in trials:
        params = trial.params
        assert ("model.residual_blocks" in params) == (params["model.block"] == "residual"), params
        assert 1e-4 <= params["train.learning_rate"] <= 1e-2 and params["model.filters"] in (2, 4, 6)
        assert isinstance(trial.distributions["train.learning_rate"], optuna.distributions.FloatDistribution)
        assert trial.distributions["train.learning_rate"].log
        assert trial.user_attrs["ablate.seed"] == [0, 1][trial.number % 2]  # seeds: spread
        logged = client.get_run(trial.user_attrs["mlflow_run_id"]).data
        assert float(logged.params["train.learning_rate"]) == pytest.approx(params["train.learning_rate"])
        assert logged.params["model.residual_blocks"] == str(params.get("model.residual_blocks", 0))
        assert logged.metrics["parameters"] > 0
    # Running it again resumes: the budget is spent, nothing more runs.
    assert run(raw, project).ran == 0


@pytest.mark.slow
def test_pruned_trials_are_pruned_in_optuna_and_in_mlflow(project) -> None:
    # A learning rate of 1e-9 cannot train; once four trials have finished, the median pruner
    # stops such trials after their first epoch.
    raw = tiny_study(
        "pruned", design="search", repeats=1,
        factors={"train.learning_rate": [0.01, 1e-9]},
        search={"sampler": "random", "trials": 9, "pruner": "median", "warmup_epochs": 0},
        train={"epochs": 3, "batch_size": 64}, tracking={"image_every": 0, "images": 2, "save_model": False},
    )
    outcome = run(raw, project)
    study = optuna.load_study(study_name="pruned", storage=project.storage)
    pruned = [t for t in study.get_trials() if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state) for t in study.get_trials()]
    assert outcome.pruned == len(pruned) and outcome.complete + outcome.pruned == 9
    client = MlflowClient(project.tracking_uri)
    for trial in pruned:
        assert trial.params["train.learning_rate"] == 1e-9
        logged = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert logged.data.tags["ablate.state"] == "pruned"
        stopped = int(logged.data.tags["ablate.stopped_epoch"])
        assert stopped < 3 and stopped == max(trial.intermediate_values)
        assert len(client.get_metric_history(logged.info.run_id, "val_loss")) == stopped


@pytest.mark.slow
def test_two_objectives_give_a_pareto_search(project) -> None:
    raw = tiny_study(
        "pareto", design="search", repeats=1,
        factors={"model.filters": {"type": "int", "low": 2, "high": 8}, "model.skip": ["none", "concat"]},
        objective=[{"metric": "val_loss", "direction": "minimize"}, {"metric": "parameters", "direction": "minimize"}],
        search={"sampler": "nsga2", "trials": 3}, train={"epochs": 1, "batch_size": 64},
    )
    outcome = run(raw, project)
    assert outcome.complete == 3
    study = optuna.load_study(study_name="pareto", storage=project.storage)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    client = MlflowClient(project.tracking_uri)
    for trial in study.trials:
        logged = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        assert trial.values == [pytest.approx(logged["val_loss"]), logged["parameters"]]
    assert study.best_trials


@pytest.mark.slow
def test_a_wall_time_budget_stops_after_the_epoch_that_passes_it(project) -> None:
    raw = tiny_study("budget", factors={"model.skip": ["none"]}, repeats=1, train={"epochs": 4, "batch_size": 64, "max_seconds": 0.001})
    outcome = run(raw, project)
    assert outcome.complete == 1
    study = optuna.load_study(study_name="budget", storage=project.storage)
    run_id = study.trials[0].user_attrs["mlflow_run_id"]
    logged = MlflowClient(project.tracking_uri).get_run(run_id).data
    assert logged.tags["ablate.stopped_by"] == "max_seconds" and logged.tags["ablate.stopped_epoch"] == "1"


@pytest.mark.slow
def test_averaging_trials_run_every_seed_and_wilcoxon_prunes_between_seeds(project) -> None:
    # With seeds: average each trial trains all five seeds (each in a nested MLflow run) and reports
    # one value per seed; once a good trial has finished, a learning rate that cannot train is
    # worse at every seed, and the Wilcoxon pruner stops it before its last seed.
    raw = tiny_study(
        "wilcoxon", design="search", repeats=5,
        data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 64, "test_size": 32},
        model={"filters": 2, "depth": 2},
        factors={"train.learning_rate": [0.01, 1e-9]},
        search={"sampler": "random", "trials": 4, "pruner": "wilcoxon", "seeds": "average"},
        train={"epochs": 1, "batch_size": 64}, tracking={"image_every": 0, "images": 2, "save_model": False},
    )
    run(raw, project)
    study = optuna.load_study(study_name="wilcoxon", storage=project.storage)
    client = MlflowClient(project.tracking_uri)
    trials = study.get_trials()
    good_done = False
    checked = 0
    for trial in trials:
        logged = client.get_run(trial.user_attrs["mlflow_run_id"])
        seed_runs = client.search_runs(
            [logged.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{logged.info.run_id}'"
        )
        if trial.state == TrialState.COMPLETE:
            assert sorted(r.data.tags["ablate.seed"] for r in seed_runs) == ["0", "1", "2", "3", "4"]
            assert sorted(trial.intermediate_values) == [0, 1, 2, 3, 4]
            per_seed = [trial.intermediate_values[i] for i in range(5)]
            assert trial.value == pytest.approx(sum(per_seed) / 5)
            good_done = good_done or trial.params["train.learning_rate"] == 0.01
        if good_done and trial.params["train.learning_rate"] == 1e-9 and trial.state != TrialState.COMPLETE:
            assert trial.state == TrialState.PRUNED
            assert logged.data.tags["ablate.state"] == "pruned" and "ablate.stopped_seed" in logged.data.tags
            assert len(seed_runs) < 5
            checked += 1
    assert checked, [(t.params, t.state.name) for t in trials]


def test_a_stored_spec_rebuilds_when_a_factor_varies_what_a_setting_derives_from() -> None:
    # model.block is left out, so it follows model.residual_blocks; a stored copy must not pin it.
    spec = spec_of(factors={"model.residual_blocks": {"type": "int", "low": 0, "high": 2}})
    assert spec.model.block == "plain"
    rebuilt = type(spec).model_validate(spec.to_file())
    assert [rebuilt.run_config(c, seed=0).model.block for c in rebuilt.cells()] == ["plain", "residual", "residual"]


def test_a_factor_conditional_on_a_null_level_stays_off_while_its_parent_is_absent() -> None:
    # train.max_seconds exists only with skip concat; dropout only when max_seconds is null. With
    # skip none max_seconds is absent, which is not the level null: dropout must stay off too.
    factors = {
        "model.skip": ["concat", "none"],
        "train.max_seconds": {"levels": [None, 60], "when": {"model.skip": "concat"}},
        "model.dropout": {"levels": [0.0, 0.1], "when": {"train.max_seconds": None}},
    }
    cells = spec_of(factors=factors).cells()
    assert [cell_key(c) for c in cells] == [
        "model.dropout=0.0,model.skip=concat,train.max_seconds=null",
        "model.dropout=0.1,model.skip=concat,train.max_seconds=null",
        "model.skip=concat,train.max_seconds=60",
        "model.skip=none",
    ]
    # true is not 1: a condition on the level true does not hold for a parent at 1
    flags = {"model.residual_blocks": [0, 1], "model.dropout": {"levels": [0.0, 0.1], "when": {"model.residual_blocks": True}}}
    assert "when model.residual_blocks is [True], but model.residual_blocks's levels are [0, 1]" in refused(factors=flags)


def pruned_at(spec, *, epochs: int, bad_trials: int = 8) -> list[int | None]:
    """Epochs at which the study's real Optuna pruner stops trials far worse than six good ones."""
    study = optuna.create_study(pruner=pruner_for(spec), study_name="pruning", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(0.1, epoch)
            assert not trial.should_prune()  # asked as the worker does: it records the rungs passed
        study.tell(trial, 0.1)
    stops: list[int | None] = []
    for _ in range(bad_trials):
        trial = study.ask()
        stop = None
        for epoch in range(1, epochs + 1):  # epochs are reported as steps 1, 2, ..., as the worker does
            trial.report(10.0, epoch)
            if trial.should_prune():
                stop = epoch
                break
        study.tell(trial, state=TrialState.PRUNED if stop else TrialState.COMPLETE, values=None if stop else 10.0)
        stops.append(stop)
    return stops


@pytest.mark.parametrize("pruner", ["median", "successive-halving", "hyperband"])
@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_warmup_epochs_are_never_pruned_and_the_next_epoch_can_be(pruner: str, warmup: int) -> None:
    epochs = 5
    spec = spec_of(
        design="search", factors={"model.skip": ["none", "concat"]}, repeats=1,
        search={"pruner": pruner, "warmup_epochs": warmup}, train={"epochs": epochs},
    )
    stops = pruned_at(spec, epochs=epochs)
    assert all(stop is None or stop > warmup for stop in stops), stops
    assert warmup + 1 in stops, stops  # not held back longer than asked


def test_a_warmup_as_long_as_training_never_prunes() -> None:
    spec = spec_of(
        design="search", factors={"model.skip": ["none", "concat"]}, repeats=1,
        search={"pruner": "hyperband", "warmup_epochs": 2}, train={"epochs": 2},
    )
    assert pruned_at(spec, epochs=2) == [None] * 8


def test_a_gp_search_without_pytorch_is_refused_before_anything_is_created(project, write_study, monkeypatch, capsys) -> None:
    # None in sys.modules is how Python spells "not installed": import and find_spec both fail.
    monkeypatch.setitem(sys.modules, "torch", None)
    raw = tiny_study("gp", design="search", repeats=1, factors=SEARCH_FACTORS, search={"sampler": "gp", "trials": 2})
    with pytest.raises(SamplerUnavailableError, match=r"search\.sampler gp .*torch is not installed.*`pip install 'ablate\[gp\]'`"):
        run(raw, project)
    assert not project.home.exists()  # no folder, no storage, no MLflow run
    storage = f"sqlite:///{project.home.parent / 'shared.db'}"
    with pytest.raises(SamplerUnavailableError):  # `ablate submit` opens the study this way
        open_study(spec_from_dict(raw).spec, storage)
    assert optuna.get_all_study_summaries(storage) == []
    assert cli_main(["validate", str(write_study(raw))]) == 2
    assert "pip install 'ablate[gp]'" in capsys.readouterr().err


@pytest.mark.slow
def test_hyperband_prunes_in_optuna_and_in_mlflow(project) -> None:
    # Epochs are the resource: with 2 epochs (reduction factor 3) there is one bracket, whose rung
    # after epoch 1 promotes the best third. A learning rate of 1e-9 cannot train, so it loses that
    # rung to any earlier 0.01 trial; the local run's sampler is seeded, so the order is fixed.
    raw = tiny_study(
        "hyperband", design="search", repeats=1,
        data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 32, "test_size": 32},
        model={"filters": 2, "depth": 2},
        factors={"train.learning_rate": [0.01, 1e-9]},
        search={"sampler": "random", "trials": 6, "pruner": "hyperband", "warmup_epochs": 0},
        train={"epochs": 2, "batch_size": 64}, tracking={"image_every": 0, "images": 2, "save_model": False},
    )
    outcome = run(raw, project)
    study = optuna.load_study(study_name="hyperband", storage=project.storage)
    assert isinstance(pruner_for(spec_from_dict(raw).spec), optuna.pruners.HyperbandPruner)
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.params, t.state.name, t.intermediate_values) for t in trials]
    assert outcome.pruned == len(pruned) and outcome.complete + outcome.pruned == 6
    assert any(t.params["train.learning_rate"] == 1e-9 for t in pruned)
    client = MlflowClient(project.tracking_uri)
    for trial in pruned:
        logged = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert logged.info.status == "FINISHED"  # MLflow has no PRUNED status; the tag says it
        assert logged.data.tags["ablate.state"] == "pruned"
        stopped = int(logged.data.tags["ablate.stopped_epoch"])
        assert stopped == max(trial.intermediate_values)
        assert len(client.get_metric_history(logged.info.run_id, "val_loss")) == stopped


@pytest.mark.slow
def test_cmaes_searches_int_and_float_factors_and_logs_them(project) -> None:
    raw = tiny_study(
        "cmaes", design="search", repeats=1,
        data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 32, "test_size": 32},
        factors={
            "model.filters": {"type": "int", "low": 2, "high": 6, "step": 2},
            "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        },
        search={"sampler": "cmaes", "trials": 3},
        train={"epochs": 1, "batch_size": 64}, tracking={"image_every": 0, "images": 2, "save_model": False},
    )
    outcome = run(raw, project)
    assert (outcome.complete, outcome.failed) == (3, 0)
    study = optuna.load_study(study_name="cmaes", storage=project.storage)
    client = MlflowClient(project.tracking_uri)
    for trial in study.get_trials():
        params = trial.params
        assert params["model.filters"] in (2, 4, 6) and 1e-4 <= params["train.learning_rate"] <= 1e-2
        logged = client.get_run(trial.user_attrs["mlflow_run_id"]).data
        assert logged.params["model.filters"] == str(params["model.filters"])
        assert float(logged.params["train.learning_rate"]) == pytest.approx(params["train.learning_rate"])
        assert trial.value == pytest.approx(logged.metrics["val_loss"])
    # The first trial is CMA-ES's random start; the others come from its search distribution.
    assert [("cma:generation" in t.system_attrs) for t in study.get_trials()] == [False, True, True]
