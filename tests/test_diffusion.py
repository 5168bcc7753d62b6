"""Incremental denoising: the noising chain, its training pairs, and both denoisers."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.config import DataConfig, DiffusionConfig, ModelConfig
from ablate.data import diffusion_chain, diffusion_pairs, load_splits
from ablate.models.diffusion import build_denoiser, reverse_chain


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
