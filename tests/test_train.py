"""The fit loop: seeded batch order, per-epoch metrics, and the NaN guard."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.spec.run_config import ModelConfig, TrainConfig
from ablate.models import build_unet
from ablate.training.fit import NonFiniteLossError, SeededBatches, compile_model, fit


def test_batch_order_depends_only_on_seed_and_epoch() -> None:
    x = np.arange(100, dtype=np.float32).reshape(100, 1)

    def epoch_orders(seed: int) -> list[np.ndarray]:
        batches = SeededBatches(x, x, batch_size=32, seed=seed)
        orders = []
        for _ in range(2):
            orders.append(np.concatenate([batches[i][0][:, 0] for i in range(len(batches))]))
            batches.on_epoch_end()
        return orders

    first, again, other = epoch_orders(1), epoch_orders(1), epoch_orders(2)
    assert len(first[0]) == 100 and sorted(first[0].tolist()) == list(range(100))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])  # reshuffled each epoch
    assert not np.array_equal(first[0], other[0])


def tiny_data(n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    clean = rng.random((n, 28, 28, 1), dtype=np.float32)
    return np.clip(clean + 0.3 * rng.standard_normal(clean.shape, dtype=np.float32), 0, 1), clean


def test_fit_reports_each_epoch_with_split_prefixes() -> None:
    noisy, clean = tiny_data()
    model = build_unet(ModelConfig(filters=2), (28, 28, 1))
    compile_model(model, TrainConfig(epochs=2, batch_size=32))
    seen: list[tuple[int, dict[str, float]]] = []
    result = fit(
        model, x_train_noisy=noisy, x_train=clean, x_val_noisy=noisy[:16], x_val=clean[:16],
        cfg=TrainConfig(epochs=2, batch_size=32), seed=0, on_epoch=lambda e, m: seen.append((e, m)),
    )
    assert [epoch for epoch, _ in seen] == [1, 2]
    assert {"train_loss", "train_mse", "train_psnr", "val_loss", "val_mse", "val_psnr"} <= set(seen[0][1])
    assert result.epochs_run == 2 and result.last("val_loss") == seen[-1][1]["val_loss"]


def test_nan_loss_raises_with_the_reason() -> None:
    noisy, clean = tiny_data()
    clean[3, 5, 5, 0] = np.nan  # a NaN target makes the loss NaN
    model = build_unet(ModelConfig(filters=2), (28, 28, 1))
    compile_model(model, TrainConfig())
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 1"):
        fit(model, x_train_noisy=noisy, x_train=clean, x_val_noisy=noisy[:8], x_val=clean[:8], cfg=TrainConfig(epochs=3, batch_size=64), seed=0)


def test_hook_errors_stop_training_and_propagate() -> None:
    noisy, clean = tiny_data()
    model = build_unet(ModelConfig(filters=2), (28, 28, 1))
    compile_model(model, TrainConfig())

    class Stop(Exception):
        pass

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        raise Stop(f"stop at {epoch}")

    with pytest.raises(Stop, match="stop at 1"):
        fit(model, x_train_noisy=noisy, x_train=clean, x_val_noisy=noisy[:8], x_val=clean[:8], cfg=TrainConfig(epochs=3, batch_size=64), seed=0, on_epoch=hook)


def test_a_mixed_precision_model_trains_with_ablates_metrics() -> None:
    # Under mixed_float16 the model outputs float16 while the targets stay float32; psnr failed
    # with a dtype mismatch before it cast both (found by benchmarks/train_throughput.py).
    import keras

    noisy, clean = tiny_data(32)
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = build_unet(ModelConfig(filters=2), (28, 28, 1))
        compile_model(model, TrainConfig())
        result = fit(model, x_train_noisy=noisy, x_train=clean, x_val_noisy=noisy[:8], x_val=clean[:8], cfg=TrainConfig(epochs=1, batch_size=32), seed=0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert np.isfinite(result.last("val_psnr"))
