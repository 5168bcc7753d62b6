"""Every backend trains the same study: TensorFlow, JAX and PyTorch (CPU), end to end through `ablate run`.

The JAX and PyTorch runs are real `ablate run --backend NAME` processes (a process's backend is
fixed when it imports Keras, and this one runs TensorFlow), with fork recycling on as by default.
Each is compared with the same study trained on TensorFlow: the same parameter count, the same
MLflow layout key for key, and its saved `.keras` model reloads here, on TensorFlow, and scores
what its run logged.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console

from ablate import backends
from ablate.backends import BackendError, requested_backend, select_backend
from ablate.project import resolve_project
from ablate.quiet_start import is_noise
from ablate.runtime.progress import StudyProgress
from ablate.runtime.run import run_study
from ablate.runtime.studies import BackendMismatchError
from ablate.runtime.submit import submit_study
from ablate.spec.loading import spec_from_dict
from ablate.spec.run_config import DataConfig
from ablate.training.data import load_splits

from conftest import tiny_study

OTHER_BACKENDS = ("jax", "torch")
ABLATE = str(Path(sys.executable).with_name("ablate"))


def study_raw() -> dict:
    """Two cells, one seed, one epoch: the smallest study that still compares two variants."""
    return tiny_study(
        name="backends",
        data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 64, "test_size": 32},
        train={"epochs": 1, "batch_size": 64},
        repeats=1,
    )


def ablate(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "ABLATE_STARTUP_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([ABLATE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The study's project folder on each backend: TensorFlow in this process, the others in `ablate run`."""
    root = tmp_path_factory.mktemp("backends")
    study_file = root / "study.yaml"
    study_file.write_text(yaml.safe_dump(study_raw(), sort_keys=False))
    homes = {"tensorflow": root / "tensorflow"}
    with StudyProgress(Console(file=io.StringIO())) as progress:
        run_study(spec_from_dict(study_raw()), resolve_project(home=homes["tensorflow"]), progress=progress)
    for backend in OTHER_BACKENDS:
        if not installed(backend):
            continue
        homes[backend] = root / backend
        done = ablate("run", str(study_file), "--home", str(homes[backend]), "--backend", backend)
        assert done.returncode == 0, f"ablate run --backend {backend} failed:\n{done.stdout}\n{done.stderr}"
        (root / f"{backend}.stderr").write_text(done.stderr)
    return homes


def trial_runs(home: Path) -> dict[str, object]:
    """The study's trial runs by cell."""
    client = MlflowClient(resolve_project(home=home).tracking_uri)
    experiment = client.get_experiment_by_name("backends")
    found = client.search_runs([experiment.experiment_id], filter_string="tags.`ablate.role` = 'trial'")
    return {run.data.tags["ablate.cell"]: run for run in found}


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        paths |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_a_study_trains_on_each_backend_like_on_tensorflow(runs, backend: str) -> None:
    if backend not in runs:
        pytest.skip(f"{backend} is not installed (make test installs it: see the Makefile's backends target)")
    home = runs[backend]
    stderr = (home.parent / f"{backend}.stderr").read_text()
    assert "Traceback" not in stderr
    assert not [line for line in stderr.splitlines() if is_noise(line)], "the backend's start-up lines reached the terminal"
    assert f"with Keras' {backend} backend" in stderr  # the worker says once what it trains on

    study = optuna.load_study(study_name="backends", storage=resolve_project(home=home).storage)
    assert study.user_attrs["ablate.backend"] == backend
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2

    reference, other = trial_runs(runs["tensorflow"]), trial_runs(home)
    assert sorted(reference) == sorted(other) == ["model.skip=concat", "model.skip=none"]
    client = MlflowClient(resolve_project(home=home).tracking_uri)
    reference_client = MlflowClient(resolve_project(home=runs["tensorflow"]).tracking_uri)
    splits = load_splits(DataConfig(**study_raw()["data"]))
    for cell, run in other.items():
        tf_run = reference[cell]
        assert run.data.tags["ablate.backend"] == backend and tf_run.data.tags["ablate.backend"] == "tensorflow"
        # The MLflow layout, key for key: params (and their values), metrics, tags, artifacts.
        assert run.data.params == tf_run.data.params
        assert sorted(run.data.metrics) == sorted(tf_run.data.metrics)
        assert sorted(run.data.tags) == sorted(tf_run.data.tags)
        assert artifact_paths(client, run.info.run_id) == artifact_paths(reference_client, tf_run.info.run_id)
        # The same model: the same parameter count on every backend.
        assert run.data.metrics["parameters"] == tf_run.data.metrics["parameters"] > 0
        # Its saved model reloads on TensorFlow (this process) and scores what its run logged.
        saved = Path(client.download_artifacts(run.info.run_id, "model/model.keras", str(home.parent / f"{backend}-{cell}")))
        model = keras.saving.load_model(saved)
        assert model.count_params() == run.data.metrics["parameters"]
        predicted = np.asarray(model(splits.x_val_noisy))
        loss = float(np.mean(keras.losses.binary_crossentropy(splits.x_val, predicted)))
        assert loss == pytest.approx(run.data.metrics["val_loss"], rel=2e-3)


@pytest.mark.slow
def test_a_study_refuses_a_process_on_another_backend(runs) -> None:
    if "jax" not in runs:
        pytest.skip("jax is not installed")
    home = runs["jax"]
    study_file = home.parent / "study.yaml"
    refused = ablate("run", str(study_file), "--home", str(home), "--backend", "torch" if installed("torch") else "tensorflow")
    assert refused.returncode == 2, refused.stderr
    assert "trains on the jax backend" in refused.stderr and "--backend jax" in refused.stderr
    # A worker serving every study leaves another backend's studies to their own workers.
    worker = ablate("worker", "--all", "--home", str(home), "--backend", "tensorflow")
    assert worker.returncode == 0, worker.stderr
    assert "ran 0 trial(s)" in worker.stderr
    study = optuna.load_study(study_name="backends", storage=resolve_project(home=home).storage)
    assert study.user_attrs["ablate.backend"] == "jax" and len(study.trials) == 2


def test_backend_choice_and_its_errors(monkeypatch) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert requested_backend() == "tensorflow"
    assert requested_backend("JAX") == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert requested_backend() == "torch" and requested_backend("jax") == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(BackendError, match=r"\$KERAS_BACKEND='theano' is not a Keras backend.*tensorflow, jax, torch"):
        requested_backend()
    # This process imported Keras on TensorFlow: it cannot switch, and says how to start one that can.
    assert select_backend("tensorflow") == "tensorflow"
    with pytest.raises(BackendError, match="already running on tensorflow.*--backend jax"):
        select_backend("jax")


def test_a_backend_that_is_not_installed_is_refused_with_its_extra(monkeypatch) -> None:
    monkeypatch.setitem(backends.BACKEND_MODULES, "jax", "no_such_backend_module")
    monkeypatch.delitem(sys.modules, "keras")  # as in a fresh process, before Keras is imported
    with pytest.raises(BackendError, match=r"the jax backend is not installed.*pip install 'ablate\[jax\]'.*--backend tensorflow\|torch"):
        select_backend("jax")
    assert os.environ.get("KERAS_BACKEND") != "jax"


def test_jax_is_told_not_to_take_the_gpu_memory_of_workers_sharing_it(monkeypatch) -> None:
    if not installed("jax"):
        pytest.skip("jax is not installed")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # restored after the test, like the variable below
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.delitem(sys.modules, "keras")  # as in a fresh process, before Keras is imported
    assert select_backend("jax") == "jax"
    assert os.environ["KERAS_BACKEND"] == "jax" and os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # a user's own choice stays
    select_backend("jax")
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"


def test_backend_flag_on_the_commands_that_train() -> None:
    for command in ("run", "reproduce", "worker", "submit"):
        shown = ablate(command, "--help", timeout=60)
        assert shown.returncode == 0 and "--backend NAME" in shown.stdout and "jax" in shown.stdout, command
    bad = ablate("run", "x.yaml", "--backend", "theano", timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'theano'" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_every_family_and_engine_on_each_backend(tmp_path, backend: str) -> None:
    """tests/backend_smoke.py on the backend: pruning, wall-time budget, NaN guard, diffusion, custom, keras-tuner, ensemble."""
    if not installed(backend):
        pytest.skip(f"{backend} is not installed (make test installs it)")
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("backend_smoke.py")), str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env, check=False)
    found = [line[len("SMOKE "):] for line in done.stdout.splitlines() if line.startswith("SMOKE ")]
    assert done.returncode == 0 and found, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    smoke = json.loads(found[0])
    assert smoke["backend"] == backend

    def states(name: str) -> list[str]:
        return [t["state"] for t in smoke[name]]

    for name in ("members", "diffusion", "digits", "keras-tuner"):
        assert states(name) == ["COMPLETE", "COMPLETE"], (name, [t["error"] for t in smoke[name]])
    # The keras-tuner engine trains the same (cell, seed) to the same value as the Optuna engine.
    assert sorted(t["value"] for t in smoke["keras-tuner"]) == pytest.approx(sorted(t["value"] for t in smoke["members"]))
    pruned = [t for t in smoke["pruned"] if t["state"] == "PRUNED"]
    assert pruned and set(states("pruned")) == {"COMPLETE", "PRUNED"}, smoke["pruned"]
    assert all(t["params"]["train.learning_rate"] == 1e-9 and t["epochs"] < 2 for t in pruned)
    [budget] = smoke["budget"]
    assert budget["state"] == "COMPLETE" and 1 <= budget["epochs"] < 50  # max_seconds ended it, not the 50 epochs
    [nan] = smoke["nan"]
    assert nan["state"] == "FAIL" and nan["error"].startswith("NonFiniteLossError: loss became nan at epoch 1"), nan
    assert states("weights") == ["COMPLETE"] * 20


@pytest.mark.slow
def test_the_backend_as_a_factor_trains_each_level_on_its_own_backend(project, capsys) -> None:
    """`factors: {train.backend: [tensorflow, torch]}`: `ablate run` starts a worker per backend; each takes its own."""
    if not installed("torch"):
        pytest.skip("torch is not installed")
    raw = study_raw() | {"name": "by-backend", "factors": {"train.backend": ["tensorflow", "torch"]}}
    raw["tracking"] = {"image_every": 0, "images": 2, "save_model": False}
    with StudyProgress(Console(file=io.StringIO())) as progress:
        outcome = run_study(spec_from_dict(raw), project, progress=progress, recycle_after=0)
    assert (outcome.complete, outcome.failed) == (2, 0)
    study = optuna.load_study(study_name="by-backend", storage=project.storage)
    assert study.user_attrs["ablate.backend"] == "train.backend"
    client = MlflowClient(project.tracking_uri)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["ablate.backend"] == run.data.params["train.backend"] == trial.params["train.backend"]
    # The same model on both: the same parameter count, so only the backend differs.
    counts = {client.get_run(t.user_attrs["mlflow_run_id"]).data.metrics["parameters"] for t in study.trials}
    assert len(counts) == 1
    # The report answers the question like any other factor's.
    from ablate.cli.main import main

    capsys.readouterr()
    assert main(["report", "by-backend", "--home", str(project.home), "--format", "json", "--no-log"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert "train.backend" in json.dumps(answer["effects"])


def test_the_backend_setting_is_checked_where_it_is_written() -> None:
    from ablate.spec.errors import SpecError

    with pytest.raises(SpecError, match="train.backend"):
        spec_from_dict(study_raw() | {"factors": {"train.backend": ["tensorflow", "theano"]}})
    with pytest.raises(SpecError, match="the backend as a factor needs design grid or one-at-a-time"):
        spec_from_dict(study_raw() | {"factors": {"train.backend": ["tensorflow", "jax"]}, "design": "search"})
    with pytest.raises(SpecError, match="both fixed"):
        spec_from_dict(study_raw() | {"factors": {"train.backend": ["tensorflow", "jax"]}, "train": {"backend": "jax"}})
    fixed = spec_from_dict(study_raw() | {"train": {"epochs": 1, "backend": "jax"}}).spec
    assert fixed.train.backend == "jax" and fixed.backend_levels() == ()
    # Unset, it is not written back, so the stored spec of every earlier study is unchanged.
    assert "backend" not in spec_from_dict(study_raw()).spec.to_file()["train"]


@pytest.mark.slow
def test_a_study_that_fixes_its_backend_refuses_another(project) -> None:
    raw = study_raw() | {"name": "fixed-jax", "train": {"epochs": 1, "backend": "jax"}}
    with pytest.raises(BackendMismatchError, match=r"sets train.backend: jax, and this process runs Keras on tensorflow; run it with --backend jax"):
        with StudyProgress(Console(file=io.StringIO())) as progress:
            run_study(spec_from_dict(raw), project, progress=progress)
    assert BackendMismatchError.exit_status == 2
    assert not Path(project.home).exists()  # refused before the project folder, a storage or a run existed
    with pytest.raises(BackendMismatchError, match="run it with --backend jax"):
        submit_study(spec_from_dict(raw), project)
    assert not Path(project.home).exists()
