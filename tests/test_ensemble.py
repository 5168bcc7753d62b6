"""Ensembles: simplex weights, the weighted sum, scoring, and both sources of members end to end.

The end-to-end tests run real studies (real Keras training, a real local Optuna storage and
MLflow store) and read the results back with Optuna's and MLflow's own clients.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from ablate.spec.run_config import ModelConfig
from ablate.families.ensemble_weights import EnsembleError, Scorer, reference_points
from ablate.models import build_unet
from ablate.models.weighted_ensemble import build_ensemble, simplex_weights
from ablate.runtime.progress import StudyProgress
from ablate.spec.errors import SpecError
from ablate.spec.loading import load_spec, spec_from_dict
from ablate.runtime.studies import StudyConflictError
from ablate.runtime.run import run_study

from conftest import REPO, tiny_study

SOURCE = "tiny-members"


def test_simplex_weights_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        w = simplex_weights(rng.random(4))
        assert w.shape == (4,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert simplex_weights([1.0, 1.0]).tolist() == [0.5, 0.5]


def test_reference_points_are_the_uniform_average_and_each_member_alone() -> None:
    points = reference_points(3)
    assert [cell for cell, _ in points] == ["uniform", "only-member0", "only-member1", "only-member2"]
    weights = [simplex_weights(list(params.values())) for _, params in points]
    np.testing.assert_allclose(weights[0], [1 / 3] * 3)
    for index, w in enumerate(weights[1:]):
        np.testing.assert_allclose(w, np.eye(3)[index])


def test_ensemble_of_identical_members_equals_a_member(tmp_path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    member = build_unet(ModelConfig(filters=4), (28, 28, 1))
    x = np.random.default_rng(1).random((8, 28, 28, 1), dtype=np.float32)
    ensemble = build_ensemble([member, member, member], simplex_weights([0.2, 0.5, 0.9]))
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), member.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # It saves and loads like any Keras model.
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.models.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), member.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_weighted_sum_of_different_members() -> None:
    a = build_unet(ModelConfig(filters=4, skip="none"), (28, 28, 1))
    b = build_unet(ModelConfig(filters=4, skip="concat"), (28, 28, 1))
    x = np.random.default_rng(2).random((4, 28, 28, 1), dtype=np.float32)
    ensemble = build_ensemble([a, b], [0.25, 0.75])
    expected = 0.25 * a.predict(x, verbose=0) + 0.75 * b.predict(x, verbose=0)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="sum to one"):
        build_ensemble([a, b], [0.5, 0.6])


def test_members_of_one_name_are_copied_under_their_own(tmp_path) -> None:
    import keras

    # Two trained models of one family share a name; Keras refuses that in one model unless renamed.
    a, b = (build_unet(ModelConfig(filters=4), (28, 28, 1)) for _ in range(2))
    assert a.name == b.name
    ensemble = build_ensemble([a, b], [0.5, 0.5])
    assert [layer.name for layer in ensemble.layers[1:3]] == ["member0", "member1"]
    x = np.random.default_rng(3).random((4, 28, 28, 1), dtype=np.float32)
    ensemble.save(tmp_path / "e.keras")
    again = keras.models.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), 0.5 * (a.predict(x, verbose=0) + b.predict(x, verbose=0)), atol=1e-6)


def test_scorer_agrees_with_keras_losses() -> None:
    import keras

    rng = np.random.default_rng(4)
    targets = rng.random((16, 28, 28, 1)).astype(np.float32)
    targets[targets < 0.5] = 0.0  # background pixels, as in MNIST
    targets[targets > 0.95] = 1.0
    predictions = rng.random((3, 16, 28, 28, 1)).astype(np.float32)
    predictions[0, :2] = 0.0  # saturated outputs exercise Keras' clipping
    scorer = Scorer(predictions, targets, "binary_crossentropy")
    for weights in ([1 / 3] * 3, [1.0, 0.0, 0.0], simplex_weights(rng.random(3))):
        combined = np.tensordot(np.asarray(weights, dtype=np.float32), predictions, axes=1)
        bce = float(keras.ops.mean(keras.losses.binary_crossentropy(targets, combined)))
        mse = float(np.mean((combined - targets) ** 2))
        assert scorer.crossentropy(np.asarray(weights)) == pytest.approx(bce, rel=1e-5)
        assert scorer.mse(np.asarray(weights)) == pytest.approx(mse, rel=1e-5)
    assert Scorer(predictions, targets, "mse").score([0.2, 0.3, 0.5]).loss == pytest.approx(scorer.mse(np.array([0.2, 0.3, 0.5])))


def test_optimum_is_the_best_point_of_the_simplex() -> None:
    from ablate.families.ensemble_weights import optimum_weights

    rng = np.random.default_rng(6)
    clean = rng.random((16, 28, 28, 1)).astype(np.float32)
    clean[clean < 0.6] = 0.0
    predictions = np.stack([np.clip(clean + rng.normal(0, s, clean.shape), 0.01, 0.99) for s in (0.1, 0.2, 0.4)]).astype(np.float32)
    scorer = Scorer(predictions, clean, "binary_crossentropy")
    w = np.array([0.5, 0.3, 0.2])
    for metric, value in (("val_loss", scorer.crossentropy), ("val_mse", scorer.mse)):
        numeric = [(value(w + 1e-3 * e) - value(w - 1e-3 * e)) / 2e-3 for e in np.eye(3)]  # float32 sums: not finer
        np.testing.assert_allclose(scorer.gradient(w, metric), numeric, rtol=5e-3)
        best = optimum_weights(scorer, metric)
        assert best.sum() == pytest.approx(1.0) and np.all(best >= 0)
        for _ in range(200):  # no point of the simplex does better
            assert value(best) <= value(simplex_weights(rng.random(3))) + 1e-9


def test_bulk_copy_stores_what_add_trials_stores(tmp_path) -> None:
    from ablate.families.ensemble_weights import Scorer as _Scorer, search_weights
    from ablate.runtime.optuna_internals import bulk_add_trials

    rng = np.random.default_rng(5)
    scorer = _Scorer(rng.random((3, 8, 28, 28, 1)).astype(np.float32), rng.random((8, 28, 28, 1)).astype(np.float32), "mse")
    memory = search_weights(scorer, trials=12, sampler="cmaes", seed=0, metric="val_mse")
    trials = memory.get_trials(deepcopy=True)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    bulk = optuna.create_study(study_name="bulk", storage=url)
    bulk.enqueue_trial({"ensemble.u0": 0.5})  # a trial already there: the copies are numbered after it
    bulk_add_trials(bulk, trials)
    plain = optuna.create_study(study_name="plain", storage=url)
    plain.enqueue_trial({"ensemble.u0": 0.5})
    plain.add_trials(trials)

    def stored(name: str) -> list[tuple]:
        return [
            (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs, t.datetime_start, t.datetime_complete)
            for t in optuna.load_study(study_name=name, storage=url).get_trials()
        ]

    assert stored("bulk") == stored("plain")
    assert [t[0] for t in stored("bulk")] == list(range(13))
    assert optuna.load_study(study_name="bulk", storage=url).best_value == memory.best_value


def weight_spec(**changes: object) -> dict:
    raw = {
        "name": "weights",
        "model": {"family": "ensemble"},
        "ensemble": {"source": "study", "study": SOURCE, "members": 3},
        "design": "search",
        "search": {"sampler": "cmaes", "trials": 30},
        "tracking": {"images": 4},
    }
    raw.update(changes)
    return raw


def test_weight_study_validation() -> None:
    assert spec_from_dict(weight_spec()).spec.planned_trials == 30
    problems = {
        "use design: search": weight_spec(design="grid", search={}),
        "remove factors": weight_spec(factors={"ensemble.members": [2, 3]}),
        "never searched": weight_spec(objective={"metric": "test_loss"}),
        "at least ensemble.members \\+ 1 = 4": weight_spec(search={"trials": 3}),
        "needs ensemble.study": weight_spec(ensemble={"source": "study", "members": 3}),
    }
    for message, raw in problems.items():
        with pytest.raises(SpecError, match=message):
            spec_from_dict(raw)


def test_shipped_weight_study_validates_and_names_its_source(capsys) -> None:
    from ablate.cli.main import main

    path = REPO / "studies" / "ensemble_weights.yaml"
    text = path.read_text()
    assert text.startswith("#") and "ablate reproduce skip-vs-noskip --profile quick" in text
    for profile in (None, "quick"):
        spec = load_spec(path, profile=profile).spec
        assert spec.model.family == "ensemble" and spec.ensemble.source == "study"
        assert spec.ensemble.study == "skip-vs-noskip-quick" and 4 <= spec.ensemble.members <= 6
    # `ablate validate` shows the searched simplex coordinates, which are not factors.
    assert main(["validate", str(path)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "ensemble.u0 .. ensemble.u4" in shown and "no training" in shown


def test_workers_do_not_take_a_weight_study(write_study, tmp_path, capsys) -> None:
    from ablate.cli.main import main

    path = write_study(weight_spec())
    assert main(["submit", str(path), "--home", str(tmp_path / "home")]) == 1
    assert "run it with `ablate run`" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "home" / "optuna.db").exists() or not optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'home' / 'optuna.db'}")


def run(raw: dict, project) -> object:
    loaded = spec_from_dict(raw)
    with StudyProgress(Console(file=io.StringIO())) as progress:
        return run_study(loaded, project, progress=progress)


@pytest.fixture(scope="module")
def members_project(tmp_path_factory):
    """A project holding a finished tiny autoencoder study (4 trials with saved models)."""
    from ablate.project import resolve_project

    project = resolve_project(home=tmp_path_factory.mktemp("ensemble") / "home")
    outcome = run(tiny_study(name=SOURCE, train={"epochs": 1, "batch_size": 64}), project)
    assert outcome.complete == 4
    return project


@pytest.mark.slow
def test_weight_study_end_to_end(members_project, tmp_path) -> None:
    import keras

    from ablate.training.data import load_splits

    project = members_project
    outcome = run(weight_spec(), project)
    assert (outcome.total, outcome.complete, outcome.failed, outcome.ran) == (30, 30, 0, 30)

    # Optuna: 30 complete trials with their simplex coordinates, the reference points first.
    study = optuna.load_study(study_name="weights", storage=project.storage)
    trials = study.get_trials()
    assert len(trials) == 30 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(set(t.params) == {"ensemble.u0", "ensemble.u1", "ensemble.u2"} for t in trials)
    cells = [t.user_attrs["ablate.cell"] for t in trials]
    assert cells[:4] == ["uniform", "only-member0", "only-member1", "only-member2"] and cells[4] == "trial-4"
    for t in trials:
        assert sum(t.user_attrs["ablate.weights"]) == pytest.approx(1.0, abs=1e-6)
        assert t.value == t.user_attrs["ablate.val_loss"]
    best = study.best_trial
    by_cell = {t.user_attrs["ablate.cell"]: t for t in trials}
    # Searched on validation with the references as trials: at least as good as each of them.
    assert best.value <= by_cell["uniform"].value
    assert best.value <= min(by_cell[f"only-member{i}"].value for i in range(3))

    # MLflow: the parent run's files and series, one run per member, the uniform run, the best run.
    client = MlflowClient(project.tracking_uri)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert [m.step for m in sorted(client.get_metric_history(parent.info.run_id, "val_loss"), key=lambda m: m.step)] == list(range(30))
    document = json.loads(Path(client.download_artifacts(parent.info.run_id, "ensemble/weights.json", str(tmp_path))).read_text())
    assert sum(document["weights"]) == pytest.approx(1.0) and len(document["members"]) == 3
    assert document["best"]["val_loss"] == pytest.approx(best.value)
    assert document["best"]["val_loss"] <= document["uniform"]["val_loss"]
    assert document["best"]["val_loss"] <= document["best_member"]["val_loss"]
    assert document["optimum"]["val_loss"] <= document["best"]["val_loss"] * (1 + 1e-6)  # float32 sums
    for key in ("test_loss", "test_mse", "val_mse"):
        assert all(math.isfinite(entry[key]) for entry in [document["best"], document["uniform"], *document["members"]])
    table = client.download_artifacts(parent.info.run_id, "ensemble/trials.csv", str(tmp_path / "csv"))
    assert len(Path(table).read_text().splitlines()) == 31

    source = optuna.load_study(study_name=SOURCE, storage=project.storage)
    ranked = sorted((t for t in source.trials if t.value is not None), key=lambda t: t.value)[:3]
    nested = client.search_runs([outcome.experiment_id], filter_string="tags.`ablate.role` = 'ensemble'")
    roles: dict[str, list] = {}
    for r in nested:
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
        roles.setdefault(r.data.tags["ablate.ensemble_role"], []).append(r)
    assert sorted(roles) == ["best", "member", "uniform"] and len(roles["member"]) == 3
    assert {r.data.tags["ablate.source_run_id"] for r in roles["member"]} == {t.user_attrs["mlflow_run_id"] for t in ranked}
    assert by_cell["uniform"].user_attrs["mlflow_run_id"] == roles["uniform"][0].info.run_id

    # The best run's ensemble model loads and reproduces the logged validation score.
    best_run = roles["best"][0]
    path = client.download_artifacts(best_run.info.run_id, "model/model.keras", str(tmp_path / "model"))
    ensemble = keras.saving.load_model(path, compile=False)
    splits = load_splits(spec_from_dict(tiny_study()).spec.data)
    predicted = ensemble.predict(splits.x_val_noisy, verbose=0)
    loss = float(keras.ops.mean(keras.losses.binary_crossentropy(splits.x_val, predicted)))
    assert loss == pytest.approx(best_run.data.metrics["val_loss"], rel=1e-4)
    assert best_run.data.metrics["val_loss"] == pytest.approx(best.value, rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(best_run.info.run_id, "reconstructions")}
    assert artifacts == {"reconstructions/final.png"}

    # Running it again finds it done and runs nothing.
    again = run(weight_spec(), project)
    assert (again.ran, again.complete) == (0, 30)
    assert len(optuna.load_study(study_name="weights", storage=project.storage).trials) == 30
    # Over other members (the source's best trials changed), its trials would not compare: refused.
    study.set_user_attr("ablate.ensemble.members", ["another-run"])
    with pytest.raises(StudyConflictError, match="other members"):
        run(weight_spec(), project)


@pytest.mark.slow
def test_weight_study_source_errors(members_project) -> None:
    with pytest.raises(EnsembleError, match=r"no study of that name.*tiny-members.*run it first") as missing:
        run(weight_spec(name="w-missing", ensemble={"source": "study", "study": "skip-vs-noskip-quick", "members": 4}), members_project)
    assert "ablate run studies/skip_vs_noskip.yaml --profile quick" in str(missing.value)
    with pytest.raises(EnsembleError, match=r"ensemble.members is 5, but study 'tiny-members' has only 4 complete.*--set ensemble.members=4"):
        run(weight_spec(name="w-few", ensemble={"source": "study", "study": SOURCE, "members": 5}), members_project)
    # A member file that Keras' safe mode refuses (a Lambda layer: code that would run on load).
    import keras
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from ablate.runtime.engines.weight_study import MemberRefusedError

    source = optuna.load_study(study_name=SOURCE, storage=members_project.storage)
    best = min((t for t in source.trials if t.value is not None), key=lambda t: t.value)
    info = MlflowClient(members_project.tracking_uri).get_run(best.user_attrs["mlflow_run_id"]).info
    saved = Path(url2pathname(urlparse(info.artifact_uri).path)) / "model" / "model.keras"
    original = saved.read_bytes()
    inputs = keras.Input((28, 28, 1))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 0.5)(inputs)).save(saved)
    try:
        with pytest.raises(MemberRefusedError, match=rf"member trial {best.number} .*cannot be loaded.*safe mode") as refused:
            run(weight_spec(name="w-lambda", ensemble={"source": "study", "study": SOURCE, "members": 4}), members_project)
        assert refused.value.exit_status == 2
    finally:
        saved.write_bytes(original)
    # Nothing was created for any of them.
    names = {s.study_name for s in optuna.get_all_study_summaries(members_project.storage)}
    assert not names & {"w-missing", "w-few", "w-lambda"}


@pytest.mark.slow
def test_trained_ensemble_trial(project) -> None:
    raw = tiny_study(
        name="trained",
        model={"family": "ensemble", "filters": 4, "depth": 2},
        ensemble={"source": "train", "members": 2, "weight_trials": 20},
        train={"epochs": 1, "batch_size": 64},
        factors={"ensemble.members": [2]},
        repeats=1,
    )
    outcome = run(raw, project)
    assert (outcome.complete, outcome.failed) == (1, 0)
    trial = optuna.load_study(study_name="trained", storage=project.storage).trials[0]
    client = MlflowClient(project.tracking_uri)
    result = client.get_run(trial.user_attrs["mlflow_run_id"])
    metrics = result.data.metrics
    assert trial.value == pytest.approx(metrics["val_loss"])
    assert metrics["val_loss"] <= min(metrics["uniform_val_loss"], metrics["member0_val_loss"], metrics["member1_val_loss"]) + 1e-12
    assert {"test_loss", "test_mse", "uniform_test_loss", "best_member_test_loss", "weight0", "weight1"} <= set(metrics)
    assert metrics["weight0"] + metrics["weight1"] == pytest.approx(1.0)
    assert [m.step for m in client.get_metric_history(result.info.run_id, "member1_train_loss")] == [1]
    artifacts = {a.path for a in client.list_artifacts(result.info.run_id)}
    assert {"model", "ensemble", "reconstructions", "model_summary.txt"} <= artifacts
    assert result.data.params["ensemble.members"] == "2"
