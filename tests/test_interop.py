"""What ablate records opens outside ablate: each family's trained model in plain Keras and as an
MLflow model, the MLflow UI on a study's runs, and report links without credentials.

One tiny trial per family (real Keras training, a real local Optuna storage and MLflow store),
trained once for the module; the plain-Keras check runs in a separate Python process that
cannot import ablate at all.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import optuna
import pytest
from conftest import tiny_study
from mlflow.tracking import MlflowClient
from rich.console import Console

from ablate.cli.main import main
from ablate.models import build_unet
from ablate.project import resolve_project
from ablate.redaction import redact
from ablate.report.answer import build_answer
from ablate.report.collect import collect
from ablate.report.render import to_markdown
from ablate.runtime.progress import StudyProgress
from ablate.runtime.run import run_study
from ablate.spec.loading import spec_from_dict
from ablate.spec.run_config import ModelConfig, TrainConfig
from ablate.spec.study_spec import TrackingSpec
from ablate.tracking.reading import MODEL_ARTIFACT, runs_view_url, study_experiment_id
from ablate.tracking.tracker import Tracker
from ablate.training.fit import compile_model
from ablate.training.trial import log_model

ABLATE = shutil.which("ablate", path=str(Path(sys.executable).parent)) or "ablate"
DATA = {"dataset": "mnist-embedded", "train_size": 128, "val_size": 32, "test_size": 32}
TINY = {"train": {"epochs": 1, "batch_size": 64}, "repeats": 1, "tracking": {"image_every": 0, "images": 2}, "data": DATA}
STUDIES = {
    "unet": tiny_study(name="interop-unet", factors={"model.skip": ["concat"]}, **TINY),
    "diffusion": tiny_study(
        name="interop-diffusion", model={"family": "diffusion", "filters": 4, "depth": 2},
        diffusion={"steps": 3, "magnitude": 0.5}, factors={"diffusion.conditioned": [True]},
        objective={"metric": "val_chain_loss"},
        **{**TINY, "tracking": {**TINY["tracking"], "experiment": "interop-diffusion-runs"}},  # not the study's name
    ),
    "ensemble": tiny_study(
        name="interop-ensemble", model={"family": "ensemble", "filters": 4, "depth": 2},
        ensemble={"source": "train", "members": 2, "weight_trials": 10}, factors={"ensemble.members": [2]}, **TINY,
    ),
}
rng = np.random.default_rng(0)
INPUTS = {  # what each family's model is asked to predict, in and out of ablate
    "unet": rng.random((4, 28, 28, 1), dtype=np.float32),
    "diffusion": {"noisy": rng.random((4, 28, 28, 1), dtype=np.float32), "step": np.array([[1], [2], [3], [1]], np.float32)},
    "ensemble": rng.random((4, 28, 28, 1), dtype=np.float32),
}

# A Python process where ablate cannot be imported, even by Keras looking for a registered name.
PLAIN_KERAS = r"""
import json, sys

class NoAblate:
    def find_spec(self, name, path=None, target=None):
        if name == "ablate" or name.startswith("ablate."):
            raise ImportError(f"{name}: this process loads the models without ablate")
        return None

sys.meta_path.insert(0, NoAblate())
import keras
import numpy as np

compiled = {}
for family, model_file, inputs_file, output_file in json.loads(sys.argv[1]):
    model = keras.saving.load_model(model_file)
    inputs = dict(np.load(inputs_file))
    data = inputs if len(inputs) > 1 else inputs["x"]
    np.save(output_file, model.predict(data, verbose=0))
    compiled[family] = model.compiled
assert not [name for name in sys.modules if name.split(".")[0] == "ablate"]
print(json.dumps(compiled))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, str]]:
    """One finished trial per family in one project; the run id of each."""
    project = resolve_project(home=tmp_path_factory.mktemp("interop") / "home")
    run_ids = {}
    for family, raw in STUDIES.items():
        with StudyProgress(Console(file=io.StringIO())) as progress:
            outcome = run_study(spec_from_dict(raw), project, progress=progress)
        assert (outcome.complete, outcome.failed) == (1, 0), family
        trial = optuna.load_study(study_name=raw["name"], storage=project.storage).trials[0]
        run_ids[family] = trial.user_attrs["mlflow_run_id"]
    return project, run_ids


def as_feed(inputs: Any) -> dict[str, np.ndarray]:
    return inputs if isinstance(inputs, dict) else {"x": inputs}


def test_every_familys_keras_file_loads_in_plain_keras_with_the_same_numbers(trained: Any, tmp_path: Path) -> None:
    project, run_ids = trained
    client = MlflowClient(project.tracking_uri)
    jobs, expected = [], {}
    for family, run_id in run_ids.items():
        model_file = client.download_artifacts(run_id, MODEL_ARTIFACT, str(tmp_path / family))
        expected[family] = keras.saving.load_model(model_file).predict(INPUTS[family], verbose=0)  # here, ablate imported
        np.savez(tmp_path / f"{family}-in.npz", **as_feed(INPUTS[family]))
        jobs.append([family, model_file, str(tmp_path / f"{family}-in.npz"), str(tmp_path / f"{family}-out.npy")])
    outside = tmp_path / "outside"
    outside.mkdir()
    result = subprocess.run(
        [sys.executable, "-I", "-c", PLAIN_KERAS, json.dumps(jobs)], cwd=outside, capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])
    # The trained families keep their optimizer, loss and Keras' metrics; the ensemble was never compiled.
    assert compiled == {"unet": True, "diffusion": True, "ensemble": False}
    for family in run_ids:
        np.testing.assert_array_equal(np.load(tmp_path / f"{family}-out.npy"), expected[family], err_msg=family)
        assert expected[family].shape == (4, 28, 28, 1)


def test_each_runs_model_folder_is_an_mlflow_model_that_pyfunc_loads_and_the_registry_takes(
    trained: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project, run_ids = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.tracking_uri)  # a SQLite store: the registry is there too
    client = MlflowClient(project.tracking_uri)
    for family, run_id in run_ids.items():
        listed = {a.path for a in client.list_artifacts(run_id, "model")}
        assert listed == {MODEL_ARTIFACT, *(f"model/{f}" for f in ("MLmodel", "requirements.txt", "conda.yaml", "python_env.yaml"))}
        folder = Path(client.download_artifacts(run_id, "model", str(tmp_path / family)))
        requirements = (folder / "requirements.txt").read_text()
        assert "keras==" in requirements and "tensorflow==" in requirements and "ablate" not in requirements
        plain = keras.saving.load_model(folder / "model.keras").predict(INPUTS[family], verbose=0)
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
        np.testing.assert_array_equal(model.predict(INPUTS[family]), plain, err_msg=family)
        np.testing.assert_array_equal(mlflow.keras.load_model(f"runs:/{run_id}/model").predict(INPUTS[family], verbose=0), plain)
        # MLflow 3's logged model of the run: listed as the run's output, READY, and loadable by its id
        outputs = client.get_run(run_id).outputs.model_outputs
        assert len(outputs) == 1, family
        logged = client.get_logged_model(outputs[0].model_id)
        assert (logged.source_run_id, str(logged.status)) == (run_id, "READY")
        np.testing.assert_array_equal(mlflow.pyfunc.load_model(f"models:/{logged.model_id}").predict(INPUTS[family]), plain)
    version = mlflow.register_model(f"runs:/{run_ids['unet']}/model", "interop-unet")
    assert version.version == "1" or version.version == 1
    assert version.run_id == run_ids["unet"]
    registered = mlflow.pyfunc.load_model("models:/interop-unet/1")
    assert registered.predict(INPUTS["unet"]).shape == (4, 28, 28, 1)


def test_save_model_false_logs_no_model(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri())
    experiment = tracker.experiment_id("no-model")
    parent = tracker.parent_run(experiment, "no-model", {})
    model = build_unet(ModelConfig(filters=4, depth=2), (28, 28, 1))
    compile_model(model, TrainConfig())
    runs = []
    for save in (False, True):
        run = tracker.start_trial(experiment, parent, f"save={save}", {})
        log_model(model, run, TrackingSpec(save_model=save))
        run.finish("complete")
        runs.append(run.run_id)
    assert tracker.client.list_artifacts(runs[0]) == []
    assert MODEL_ARTIFACT in {a.path for a in tracker.client.list_artifacts(runs[1], "model")}


def test_ablate_ui_prints_the_studys_runs_view(trained: Any) -> None:
    project, run_ids = trained
    client = MlflowClient(project.tracking_uri)
    for family, raw in STUDIES.items():
        experiment_id = client.get_run(run_ids[family]).info.experiment_id
        assert study_experiment_id(project, raw["name"]) == experiment_id  # also under its own experiment name
        assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert study_experiment_id(project, "no-such-study") is None
    assert main(["ui", "no-such-study", "--home", str(project.home)]) == 2

    experiment_id = study_experiment_id(project, "interop-diffusion")
    url = f"http://127.0.0.1:5999/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert runs_view_url("http://127.0.0.1:5999/", experiment_id) == url
    ui = subprocess.Popen([ABLATE, "ui", "interop-diffusion", "--home", str(project.home), "--port", "5999"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, line = time.monotonic() + 120, ""
        while "MLflow UI for" not in line and time.monotonic() < deadline and ui.stderr is not None:
            line = ui.stderr.readline()
        assert f"at {url} (Ctrl-C to stop)" in line
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


@pytest.mark.parametrize(
    "tracking_uri",
    [
        "http://user:pass@host:5000",
        "http://user@host:5000/",
        "http://host:5000?token=s3cr3t",
        "http://host:5000/?x=1&access_token=s3cr3t",
        "http://us%40er:p%3Ass%2F@host:5000",
        "http://user:pa/ss@word@host:5000",
    ],
)
def test_trial_links_point_at_the_server_without_its_credentials(trained: Any, tracking_uri: str) -> None:
    project, run_ids = trained
    data = collect("interop-unet", project, curves=False)
    experiment_id = data.experiment_id
    expected = f"http://host:5000/#/experiments/{experiment_id}/runs/{run_ids['unet']}"
    # What `collect` holds for a server store (the URI redacted), and the same URI given as --ui-url.
    for answer in (build_answer(replace(data, tracking_uri=redact(tracking_uri))), build_answer(data, ui_url=tracking_uri)):
        [trial] = answer["trials"]
        assert trial["run_url"] == expected
        assert f"]({expected})" in to_markdown(answer)
