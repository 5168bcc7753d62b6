"""Your model, your data, your task: `model.family: custom`, `data.dataset: arrays | images | python`, `task`.

Real Keras training, a real local Optuna storage and MLflow store; the data are scikit-learn's real
8x8 digits (the shipped studies/digits.yaml) or small arrays written to a temporary `.npz`.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablate.cli.main import main
from ablate.errors import AblateError
from ablate.spec.errors import SpecError
from ablate.spec.loading import load_spec, spec_from_dict
from ablate.spec.references import BuilderChangedError, check_builder
from ablate.spec.run_config import DataConfig

REPO = Path(__file__).resolve().parents[1]

RESNET = (REPO / "studies" / "digits_model.py").read_text()
DENSE = textwrap.dedent(
    '''
    import keras

    def build(params, input_shape):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Flatten()(inputs)
        hidden = keras.layers.Dense(int(params.get("units", 8)), activation="relu", name="hidden")(x)
        out = keras.layers.Dense(int(params.get("outputs", 1)), activation=params.get("activation"), name="out")(hidden)
        return keras.Model(inputs, out)

    def autoencoder(params, input_shape):
        inputs = keras.Input(shape=input_shape)
        x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="enc")(inputs)
        y = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="mid")(x)
        x = keras.layers.Add(name="skip")([x, y])
        out = keras.layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid", name="dec")(x)
        return keras.Model(inputs, out)

    def sequential(params, input_shape):
        return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten(), keras.layers.Dense(10)])

    def broken(params, input_shape):
        raise RuntimeError("no such block: " + str(params.get("block")))

    def not_a_model(params, input_shape):
        return 42
    '''
)


def digits_study(tmp_path: Path, **changes: Any) -> Path:
    """The shipped digits study made tiny, copied with its builder and loader into `tmp_path`."""
    for name in ("digits_model.py", "digits_data.py"):
        shutil.copy(REPO / "studies" / name, tmp_path / name)
    raw = yaml.safe_load((REPO / "studies" / "digits.yaml").read_text())
    raw.pop("profiles")
    raw.update(
        name="digits-tiny", repeats=1,
        data={**raw["data"], "train_size": 128, "val_size": 64, "test_size": 32},
        train={**raw["train"], "epochs": 1},
        factors={"model.remove": ["none", "block1_add"]},
        model={**raw["model"], "params": {"filters": 4, "blocks": 1, "classes": 10}},
    )
    raw.update(changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def arrays_study(tmp_path: Path, task: str, builder: str, **changes: Any) -> dict[str, Any]:
    (tmp_path / "models.py").write_text(DENSE)
    raw: dict[str, Any] = {
        "name": f"arrays-{task}",
        "task": task,
        "data": {"dataset": "arrays", "path": "data.npz", "val_size": 16, "test_size": 0},
        "model": {"family": "custom", "builder": builder},
        "train": {"epochs": 1, "batch_size": 16, "loss": "mse"},
        "repeats": 1,
    }
    raw.update(changes)
    return raw


def write(tmp_path: Path, raw: dict[str, Any], name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- the study file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "classify"}, "task: classify needs model.family: custom"),
        ({"data": {"dataset": "arrays", "path": "x.npz"}}, "data.dataset: arrays needs model.family: custom"),
        ({"train": {"loss": "hinge"}}, "model.family unet takes binary_crossentropy or mse"),
        ({"train": {"metrics": ["accuracy"]}}, "train.metrics applies to model.family: custom"),
        ({"model": {"params": {"blocks": 2}}}, "model.params applies to model.family: custom"),
        ({"model": {"family": "custom"}}, "needs model.builder"),
        ({"objective": {"metric": "val_accuracy"}}, "objective 'val_accuracy' is not logged by model.family unet"),
        ({"data": {"dataset": "python"}}, "needs data.loader"),
        ({"data": {"dataset": "images", "path": "pics"}}, "needs data.image_size"),
        ({"data": {"dataset": "arrays"}}, "needs data.path"),
        ({"factors": {"model.params.bad-name": [1, 2]}}, "a model.params name is a Python identifier"),
        ({"model": {"family": "custom", "builder": "not a reference"}}, "model.builder"),
    ],
)
def test_the_custom_settings_are_refused_where_they_do_not_apply(change: dict[str, Any], message: str) -> None:
    raw = {"name": "bad", **change}
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec_from_dict(raw)


def test_a_classifiers_objective_must_be_a_metric_it_compiles(tmp_path: Path) -> None:
    path = digits_study(tmp_path, objective={"metric": "val_auc", "direction": "maximize"})
    with pytest.raises(SpecError, match="objective 'val_auc' is not logged by this custom model.*val_accuracy"):
        load_spec(path)
    with pytest.raises(SpecError, match="task: classify needs labelled data"):
        load_spec(digits_study(tmp_path, data={"dataset": "mnist-embedded"}))


def test_files_resolve_beside_the_study_file_and_set_values_beside_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = digits_study(folder)
    monkeypatch.chdir(tmp_path)  # anywhere but the study's folder
    spec = load_spec(path).spec
    assert spec.model.builder == f"{folder / 'digits_model.py'}:build"
    assert spec.data.loader == f"{folder / 'digits_data.py'}:load"
    assert spec.model.builder_digest is not None and len(spec.model.builder_digest) == 64
    np.savez(tmp_path / "mine.npz", x=np.zeros((40, 3), np.float32), y=np.zeros(40, np.float32))
    spec = load_spec(path, overrides=["data.dataset=arrays", "data.path=mine.npz", "data.loader=null"]).spec
    assert spec.data.path == str(tmp_path / "mine.npz")
    with pytest.raises(SpecError, match="factors.model.builder: the builder is fixed"):
        load_spec(path, overrides=["factors.model.builder=[a:b, c:d]"])
    with pytest.raises(SpecError, match="no module 'nowhere' beside the study file"):
        load_spec(path, overrides=["model.builder=nowhere:build"])


# --- the data -----------------------------------------------------------------------------------


def test_arrays_come_in_every_layout_and_are_split_by_the_split_seed(tmp_path: Path) -> None:
    from ablate.training.arrays import load_arrays

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(100, 4, 4, 1), dtype=np.uint8)
    y = np.arange(100) % 3
    np.savez(tmp_path / "one.npz", x=x, y=y)
    np.savez(tmp_path / "two.npz", x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    one = load_arrays(DataConfig(dataset="arrays", path=str(tmp_path / "one.npz"), val_size=10, test_size=20))
    assert (len(one.x_train), len(one.x_val), len(one.x_test)) == (70, 10, 20)
    assert one.x_train.dtype == np.float32 and one.x_train.max() <= 1.0  # uint8 images scaled to [0, 1]
    assert one.shape == (4, 4, 1) and one.y_train is not None
    # every example lands in exactly one split
    seen = np.concatenate([one.x_train, one.x_val, one.x_test]).reshape(100, -1)
    assert len({row.tobytes() for row in seen}) == len({row.tobytes() for row in (x / 255).astype(np.float32).reshape(100, -1)})
    two = load_arrays(DataConfig(dataset="arrays", path=str(tmp_path / "two.npz"), val_size=10, test_size=5))
    assert (len(two.x_train), len(two.x_val), len(two.x_test)) == (70, 10, 5)
    again = load_arrays(DataConfig(dataset="arrays", path=str(tmp_path / "two.npz"), val_size=10, test_size=5, split_seed=1))
    assert not np.array_equal(two.x_val, again.x_val)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 2)), "y": np.zeros(9)}, "x_train has 10 rows but y_train has 9"),
        ({"images": np.zeros((10, 2))}, "expected x_train .y_train. .x_test y_test., or x .y."),
        ({"x": np.array(["a", "b"])}, "x_train is <U1"),
        ({"x": np.full((40, 2), np.nan)}, "x_train holds NaN"),
        ({"x": np.zeros((12, 2))}, "too few for data.val_size=10"),
    ],
)
def test_bad_arrays_are_refused_by_what_is_wrong(tmp_path: Path, arrays: dict[str, Any], message: str) -> None:
    from ablate.training.arrays import load_arrays
    from ablate.training.data import DataInputError

    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataInputError, match=message):
        load_arrays(DataConfig(dataset="arrays", path=str(tmp_path / "bad.npz"), val_size=10, test_size=2))


def test_an_image_folder_is_one_class_per_sub_folder(tmp_path: Path) -> None:
    from PIL import Image

    from ablate.training.arrays import load_arrays

    for index, name in enumerate(("cats", "dogs")):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(np.full((10, 12, 3), 40 * index + k, np.uint8)).save(tmp_path / "pics" / name / f"{k}.png")
    (tmp_path / "pics" / "notes.txt").write_text("not a class")
    splits = load_arrays(DataConfig(dataset="images", path=str(tmp_path / "pics"), image_size=(8, 8), val_size=4, test_size=0))
    assert splits.classes == ("cats", "dogs") and splits.shape == (8, 8, 3)
    assert len(splits.x_train) == 8 and sorted(np.concatenate([splits.y_train, splits.y_val]).tolist()) == [0] * 6 + [1] * 6


# --- validate's forward check -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("builder", "change", "message"),
    [
        ("models:missing", {}, "models.py has no function 'missing'; it defines"),
        ("models:broken", {"model": {"params": {"block": "odd"}}}, r"raised RuntimeError: no such block: odd"),
        ("models:not_a_model", {}, "returned int; it must return a functional model"),
        ("models:sequential", {}, "returned Sequential; it must return a functional model"),
        ("models:build", {"train": {"loss": "no_such_loss", "epochs": 1}}, "train.loss 'no_such_loss'"),
        ("models:build", {"model": {"params": {"outputs": 3}}}, "one batch does not train: the model maps .3,. to .3,."),
    ],
)
def test_validate_refuses_a_model_that_cannot_train_before_anything_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], builder: str, change: dict[str, Any], message: str
) -> None:
    np.savez(tmp_path / "data.npz", x=np.zeros((40, 3), np.float32), y=np.zeros(40, np.float32))
    raw = arrays_study(tmp_path, "regress", builder)
    for key, value in change.items():
        raw[key] = {**raw.get(key, {}), **value}
    raw["model"]["builder"] = builder
    path = write(tmp_path, raw)
    home = tmp_path / "home"
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert "Traceback" not in err
    assert main(["run", str(path), "--home", str(home)]) == 2
    assert not (home / "optuna.db").exists()  # refused before any study exists


# --- end to end ---------------------------------------------------------------------------------


def test_a_classifier_of_your_own_trains_ablates_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = digits_study(tmp_path)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 model(s) checked on one batch; input (8, 8, 1)" in out
    home = tmp_path / "home"
    assert main(["run", str(path), "--home", str(home)]) == 0, capsys.readouterr().err
    from ablate.project import resolve_project

    project = resolve_project(home=home)
    trials = optuna.load_study(study_name="digits-tiny", storage=project.storage).trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and len(trials) == 2
    client = MlflowClient(project.tracking_uri)
    runs = {}
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        runs[run.data.params["model.remove"]] = run
        assert run.data.params["model.params.filters"] == "4" and run.data.params["task"] == "classify"
        assert "model.depth" not in run.data.params  # the U-Net's settings are not a custom model's
        assert {"train_accuracy", "val_accuracy", "test_accuracy", "test_loss", "parameters"} <= set(run.data.metrics)
        assert 0.0 <= run.data.metrics["val_accuracy"] <= 1.0
        files = {f.path for f in client.list_artifacts(run.info.run_id, "predictions")}
        assert {"predictions/final.png", "predictions/confusion.png"} <= files
    assert runs["block1_add"].data.metrics["parameters"] == runs["none"].data.metrics["parameters"]  # an Add has no weights
    assert main(["report", "digits-tiny", "--home", str(home), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["task"] == "classify" and report["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    assert "## Predictions side by side" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "predictions.png").is_file()
    best = yaml.safe_load((tmp_path / "report" / "best.yaml").read_text())
    assert best["task"] == "classify" and "depth" not in best["model"]
    assert main(["graph", str(path)]) == 0
    assert "block1_add (Add, skip)" in capsys.readouterr().out


def test_a_regressor_and_an_autoencoder_of_your_own_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=x @ np.array([1.0, -2.0, 0.5], np.float32))
    home = tmp_path / "home"
    regress = write(tmp_path, arrays_study(tmp_path, "regress", "models:build", factors={"model.params.units": [4, 8]},
                                           objective={"metric": "val_mae"}), "regress.yaml")
    assert main(["run", str(regress), "--home", str(home)]) == 0, capsys.readouterr().err
    images = rng.random((48, 8, 8, 1)).astype(np.float32)
    np.savez(tmp_path / "images.npz", x=images)
    raw = arrays_study(tmp_path, "reconstruct", "models:autoencoder", factors={"model.remove": ["none", "skip"]})
    raw["data"]["path"] = "images.npz"
    reconstruct = write(tmp_path, raw, "reconstruct.yaml")
    assert main(["run", str(reconstruct), "--home", str(home)]) == 0, capsys.readouterr().err
    from ablate.project import resolve_project

    project = resolve_project(home=home)
    client = MlflowClient(project.tracking_uri)
    for name, picture in (("arrays-regress", "predictions/regression.png"), ("arrays-reconstruct", "reconstructions/final.png")):
        trials = optuna.load_study(study_name=name, storage=project.storage).trials
        assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        run_id = trials[0].user_attrs["mlflow_run_id"]
        folder = picture.split("/")[0]
        assert picture in {f.path for f in client.list_artifacts(run_id, folder)}
    assert main(["report", "arrays-reconstruct", "--home", str(home), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "reconstructions.png").is_file()


def test_keras_tuner_searches_a_custom_models_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = digits_study(
        tmp_path, name="digits-kt", design="search", engine="keras-tuner",
        search={"sampler": "random", "trials": 2},
        factors={"model.params.filters": {"type": "int", "low": 2, "high": 6, "step": 2}},
    )
    home = tmp_path / "home"
    assert main(["run", str(path), "--home", str(home)]) == 0, capsys.readouterr().err
    from ablate.project import resolve_project

    project = resolve_project(home=home)
    trials = optuna.load_study(study_name="digits-kt", storage=project.storage).trials
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE and t.values for t in trials)
    assert {t.params["model.params.filters"] for t in trials} <= {2, 4, 6}


# --- the builder's fingerprint ------------------------------------------------------------------


def test_a_changed_builder_is_refused_by_workers_and_by_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = digits_study(tmp_path, repeats=2)
    home = tmp_path / "home"
    assert main(["submit", str(path), "--home", str(home)]) == 0, capsys.readouterr().err
    assert main(["worker", "--study", "digits-tiny", "--home", str(home), "--max-trials", "1"]) == 0, capsys.readouterr().err
    from ablate.project import resolve_project

    trials = optuna.load_study(study_name="digits-tiny", storage=resolve_project(home=home).storage).trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.COMPLETE) == 1  # a worker trains a custom model
    spec = load_spec(path).spec
    check_builder(spec.model)  # the same file: accepted
    builder = tmp_path / "digits_model.py"
    builder.write_text(builder.read_text() + "\n# an edit\n")
    with pytest.raises(BuilderChangedError, match="differs from the one the study was made with"):
        check_builder(spec.model)
    assert main(["worker", "--study", "digits-tiny", "--home", str(home), "--max-trials", "1"]) == 2
    assert "differs from the one the study was made with" in capsys.readouterr().err
    assert main(["run", str(path), "--home", str(home)]) != 0
    err = capsys.readouterr().err
    assert "model.builder_digest" in err and "other settings" in err
    builder.unlink()
    with pytest.raises(AblateError, match="no file"):
        check_builder(spec.model)
