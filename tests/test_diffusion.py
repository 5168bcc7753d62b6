"""Incremental denoising: the noising chain, its training pairs, both denoisers, and the family end to end."""

from __future__ import annotations

import io

import keras
import numpy as np
import optuna
import pytest
from keras import layers
from mlflow.tracking import MlflowClient
from PIL import Image
from rich.console import Console

from ablate.spec.run_config import DataConfig, DiffusionConfig, ModelConfig
from ablate.families.diffusion_process import diffusion_chain, diffusion_pairs, diffusion_step_pairs
from ablate.training.data import load_splits
from ablate.families.diffusion import DiffusionBatches
from ablate.training.images import chain_grid, chain_steps
from ablate.models.denoiser import build_denoiser
from ablate.families.diffusion_process import denoise, reverse_chain
from ablate.runtime.progress import StudyProgress
from ablate.spec.loading import spec_from_dict
from ablate.runtime.run import run_study

from conftest import tiny_study


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_chain_adds_noise_step_by_step(distribution: str) -> None:
    clean = load_splits(DataConfig(train_size=64, val_size=16, test_size=0)).x_train
    cfg = DiffusionConfig(steps=5, distribution=distribution, magnitude=1.0)
    chain = diffusion_chain(clean, cfg, np.random.default_rng(0))
    assert chain.shape == (6, 64, 28, 28, 1) and chain.min() >= 0.0 and chain.max() <= 1.0
    np.testing.assert_array_equal(chain[0], clean)
    distance = [float(np.abs(chain[t] - clean).mean()) for t in range(6)]
    assert distance == sorted(distance) and distance[-1] > 0.2  # noisier at every step
    inputs, targets, steps = diffusion_pairs(chain)
    assert inputs.shape == targets.shape == (5 * 64, 28, 28, 1)
    np.testing.assert_array_equal(inputs[:64], chain[1])  # t = 1 maps to t - 1 = 0
    np.testing.assert_array_equal(targets[:64], chain[0])
    assert steps[0] == 1 and steps[-1] == 5


@pytest.mark.parametrize("conditioned", [False, True])
def test_denoisers_train_and_run_the_reverse_chain(conditioned: bool) -> None:
    clean = load_splits(DataConfig(train_size=64, val_size=16, test_size=0)).x_train
    cfg = DiffusionConfig(steps=3, conditioned=conditioned)
    inputs, targets, steps = diffusion_pairs(diffusion_chain(clean, cfg, np.random.default_rng(0)))
    model = build_denoiser(ModelConfig(filters=4), cfg, (28, 28, 1))
    assert len(model.inputs) == (2 if conditioned else 1)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    x = [inputs, steps[:, None]] if conditioned else inputs
    history = model.fit(x, targets, epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    chain = reverse_chain(model, inputs[-64:][:8], cfg)
    assert chain.shape == (4, 8, 28, 28, 1) and 0.0 <= chain.min() and chain.max() <= 1.0


def shift_model(conditioned: bool) -> keras.Model:
    """A real functional model whose every call is visible in its output.

    Plain: x - 0.01 per call. Conditioned: x - t / 1000 for the step t it is given, so the result
    also shows which steps the chain passed, in which order.
    """
    image = keras.Input(shape=(28, 28, 1), name="noisy")
    if not conditioned:
        return keras.Model(image, layers.Rescaling(1.0, offset=-0.01)(image))
    step = keras.Input(shape=(1,), name="step")
    shift = layers.Reshape((1, 1, 1))(layers.Rescaling(-1.0 / 1000)(step))
    return keras.Model([image, step], layers.Add()([image, shift]))


@pytest.mark.parametrize("conditioned", [False, True])
def test_the_reverse_chain_calls_the_model_once_per_step(conditioned: bool) -> None:
    steps = 7
    cfg = DiffusionConfig(steps=steps, conditioned=conditioned)
    x_T = np.random.default_rng(0).uniform(0.5, 1.0, size=(5, 28, 28, 1)).astype(np.float32)
    chain = reverse_chain(shift_model(conditioned), x_T, cfg)
    assert chain.shape == (steps + 1, 5, 28, 28, 1)  # x_T, ..., x_0
    for k in range(steps + 1):  # frame k has gone through k calls, with steps T, ..., T - k + 1
        removed = sum(range(steps - k + 1, steps + 1)) / 1000 if conditioned else 0.01 * k
        np.testing.assert_allclose(chain[k], x_T - removed, atol=1e-5)

    # In batches, keeping only some frames: the same numbers.
    x_0, frames = denoise(shift_model(conditioned), x_T, cfg, batch_size=2, keep=[7, 3, 0])
    assert sorted(frames) == [0, 3, 7]
    np.testing.assert_allclose(x_0, chain[-1], atol=1e-6)
    np.testing.assert_allclose(frames[3], chain[steps - 3], atol=1e-6)
    np.testing.assert_array_equal(frames[7], x_T)


def test_step_pairs_follow_the_chain_and_batches_are_paired() -> None:
    clean = load_splits(DataConfig(train_size=64, val_size=16, test_size=0)).x_train
    cfg = DiffusionConfig(steps=4)
    chain = diffusion_chain(clean, cfg, np.random.default_rng(3))
    x_T, x_before = diffusion_step_pairs(clean, np.full(64, 4), cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(x_T, chain[4])  # the same process and the same draws
    np.testing.assert_array_equal(x_before, chain[3])

    plain = DiffusionBatches(clean, cfg, batch_size=16, seed=5)
    conditioned = DiffusionBatches(clean, cfg.model_copy(update={"conditioned": True}), batch_size=16, seed=5)
    x_t, target = plain[1]
    (x_t_c, t), target_c = conditioned[1]
    np.testing.assert_array_equal(x_t, x_t_c)  # one seed, one set of pairs, whatever the model
    np.testing.assert_array_equal(target, target_c)
    assert t.shape == (16, 1) and set(t.ravel()) <= {1.0, 2.0, 3.0, 4.0}
    rows = plain.rows(1)
    first = t.ravel() == 1  # x_{t-1} of a step-1 pair is the clean image
    np.testing.assert_array_equal(target[first], clean[rows][first])
    plain.on_epoch_end()
    assert not np.array_equal(plain[1][0], x_t)  # fresh noise every epoch


def test_chain_picture_columns_and_size() -> None:
    assert chain_steps(10) == list(range(10, -1, -1))
    assert chain_steps(1) == [1, 0]
    assert chain_steps(1000) == list(range(1000, -1, -100))  # at most 11 columns, evenly spaced
    frames = [np.full((8, 28, 28, 1), value, dtype=np.float32) for value in (1.0, 0.5, 0.0)]
    grid = chain_grid(frames, clean=np.zeros((8, 28, 28, 1), np.float32))
    # 8 rows of 28 + 2 gap pixels, 3 frames + the clean column, all upscaled by 2.
    assert grid.shape == ((8 * 30 - 2) * 2, (4 * 30 - 2) * 2) and grid.dtype == np.uint8
    assert grid[0, 0] == 255 and grid[0, 30 * 2] == 128 and grid[0, 60 * 2] == 0  # columns in order
    assert chain_grid(frames).shape == ((8 * 30 - 2) * 2, (3 * 30 - 2) * 2)  # samples: no clean column


@pytest.mark.slow
def test_a_diffusion_study_trains_both_levels_and_logs_chains(project, tmp_path) -> None:
    raw = tiny_study(
        name="tiny-diffusion",
        data={"dataset": "mnist-embedded", "train_size": 128, "val_size": 32, "test_size": 32},
        model={"family": "diffusion", "filters": 4, "depth": 2},
        diffusion={"steps": 3, "magnitude": 0.5},
        factors={"diffusion.conditioned": [False, True]},
        repeats=1,
        objective={"metric": "val_chain_loss"},
    )
    with StudyProgress(Console(file=io.StringIO())) as progress:
        outcome = run_study(spec_from_dict(raw), project, progress=progress)
    assert (outcome.complete, outcome.failed) == (2, 0)

    client = MlflowClient(project.tracking_uri)
    trials = optuna.load_study(study_name="tiny-diffusion", storage=project.storage).trials
    assert sorted(t.params["diffusion.conditioned"] for t in trials) == [False, True]
    for trial in trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        params = client.get_run(run_id).data.params
        assert params["diffusion.steps"] == "3" and params["model.family"] == "diffusion"
        for metric in ("train_loss", "val_loss", "val_psnr", "val_chain_loss", "val_chain_mse"):
            assert [m.step for m in client.get_metric_history(run_id, metric)] == [1, 2], metric
        assert trial.value == client.get_metric_history(run_id, "val_chain_loss")[-1].value
        pictures = {a.path for a in client.list_artifacts(run_id, "diffusion")}
        assert pictures == {"diffusion/chain_epoch_001.png", "diffusion/chain.png", "diffusion/samples.png"}
        assert "model_summary.txt" in {a.path for a in client.list_artifacts(run_id)}
        folder = client.download_artifacts(run_id, "", str(tmp_path / run_id))
        chain = np.asarray(Image.open(f"{folder}/diffusion/chain.png"))
        assert chain.shape[:2] == ((4 * 30 - 2) * 2, (5 * 30 - 2) * 2)  # 4 images; x_3 .. x_0 and clean
        model = keras.saving.load_model(f"{folder}/model/model.keras")
        assert len(model.inputs) == (2 if trial.params["diffusion.conditioned"] else 1)
