"""Ensembles: simplex weights, the weighted sum, and an ensemble of identical members."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.config import ModelConfig
from ablate.models import build_unet
from ablate.models.ensemble import build_ensemble, simplex_weights


def test_simplex_weights_sum_to_one() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        w = simplex_weights(rng.random(4))
        assert w.shape == (4,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert simplex_weights([1.0, 1.0]).tolist() == [0.5, 0.5]


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
