"""The user's own data for a custom model: arrays from an `.npz`, a folder of images, or a Python loader.

Sources (`data.dataset`):
- `arrays`: the `.npz` at `data.path`, with `x_train` [`y_train`] [`x_test` `y_test`], or `x` [`y`].
- `images`: the folder at `data.path`, one sub-folder per class (the sorted folder names are the
  classes 0, 1, ...), each image read with Keras' `load_img` and resized to `data.image_size`, RGB.
- `python`: `data.loader` (`MODULE:FUNCTION`) called with no arguments, returning a mapping with
  the `.npz`'s keys, or `(x, y)`, or `((x_train, y_train), (x_test, y_test))`.
- The built-in image datasets (`ablate.training.data`) also feed a custom model, without labels
  (for `task: denoise` or `reconstruct`).

Inputs: uint8 is scaled to [0, 1] (images), anything else numeric becomes float32 as it is; give
images as (N, height, width, channels). Labels of `task: classify` are class indices (or one-hot
rows); targets of `task: regress` are float32.

The split is seeded by `data.split_seed` as for the built-in datasets: one pool gives the test and
validation examples and the rest trains; with `x_test`, validation is split off the training
arrays and the test examples are drawn from `x_test`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ablate.spec.run_config import BUILTIN_DATASETS, DataConfig
from ablate.training.data import VAL_NOISE_OFFSET, DataInputError, add_noise, check_data, load_splits
from ablate.training.user_code import import_function

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class ArraySplits:
    """Inputs (float32) and labels or targets (None without them) of the three splits."""

    x_train: np.ndarray
    y_train: np.ndarray | None
    x_val: np.ndarray
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    source: str
    classes: tuple[str, ...] = ()  # `images`: the class folders' names, index order

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one input."""
        return tuple(int(side) for side in self.x_train.shape[1:])

    def noisy_val(self, cfg: DataConfig) -> np.ndarray:
        """The fixed noisy validation inputs (`task: denoise`), seeded by `data.split_seed`."""
        return add_noise(self.x_val, cfg.noise.factor, np.random.default_rng(cfg.split_seed + VAL_NOISE_OFFSET))


def describe_data(cfg: DataConfig) -> str:
    """Check `cfg`'s data (`ablate.training.data.check_data` for the built-in datasets; the user's
    own is read and split) and say where it comes from.

    Raises:
        DataInputError: data that is missing, malformed or too small for the splits.
    """
    if cfg.dataset in BUILTIN_DATASETS:
        return check_data(cfg)
    splits = load_arrays(cfg)
    labels = "" if splits.y_train is None else f", labels {tuple(splits.y_train.shape[1:]) or 'one per example'}"
    return f"{splits.source}: inputs {splits.shape}{labels}"


def load_arrays(cfg: DataConfig) -> ArraySplits:
    """`cfg`'s data split as it says; cached per process, as every trial of a study shares it.

    Raises:
        DataInputError: a file, folder or loader that gives no usable arrays, or sizes it cannot give.
    """
    return _load_arrays(cfg)


@lru_cache(maxsize=4)
def _load_arrays(cfg: DataConfig) -> ArraySplits:
    if cfg.dataset in BUILTIN_DATASETS:
        splits = load_splits(cfg)
        return ArraySplits(splits.x_train, None, splits.x_val, None, splits.x_test, None, splits.source)
    pools, source, classes = _read(cfg)
    x, y = pools["x_train"], pools.get("y_train")
    x_held, y_held = pools.get("x_test"), pools.get("y_test")
    rng = np.random.default_rng(cfg.split_seed)
    order = rng.permutation(len(x))
    if x_held is None:
        _check_sizes(cfg, len(x), cfg.val_size + cfg.test_size, "x")
        test, val, train = order[: cfg.test_size], order[cfg.test_size : cfg.test_size + cfg.val_size], order[cfg.test_size + cfg.val_size :]
        x_held, y_held = x, y
    else:
        _check_sizes(cfg, len(x), cfg.val_size, "x_train")
        if cfg.test_size > len(x_held):
            raise DataInputError(f"data.test_size={cfg.test_size:,} but {source} holds {len(x_held):,} test examples; lower data.test_size")
        val, train = order[: cfg.val_size], order[cfg.val_size :]
        test = rng.permutation(len(x_held))[: cfg.test_size]
    if cfg.train_size is not None:
        if cfg.train_size > len(train):
            raise DataInputError(f"data.train_size={cfg.train_size:,} but {source} leaves {len(train):,} training examples; use at most that")
        train = train[: cfg.train_size]

    def pick(array: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
        return None if array is None else array[np.sort(rows)]

    return ArraySplits(
        x_train=_inputs(x[np.sort(train)]), y_train=pick(y, train),
        x_val=_inputs(x[np.sort(val)]), y_val=pick(y, val),
        x_test=_inputs(x_held[np.sort(test)]), y_test=pick(y_held, test),
        source=source, classes=classes,
    )


def _check_sizes(cfg: DataConfig, count: int, held: int, name: str) -> None:
    if count < held + 1:
        raise DataInputError(
            f"{name} holds {count:,} examples, too few for data.val_size={cfg.val_size:,}"
            + (f" + data.test_size={cfg.test_size:,}" if name == "x" else "") + " + training; lower them"
        )


def _inputs(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


def _read(cfg: DataConfig) -> tuple[dict[str, np.ndarray], str, tuple[str, ...]]:
    """The named arrays of `cfg`'s source, checked, a description of it, and the class names (images)."""
    if cfg.dataset == "images":
        return _read_images(Path(cfg.path or ""), cfg.image_size or (0, 0))
    if cfg.dataset == "arrays":
        path = Path(cfg.path or "")
        where = f"data.path {path}"
        if not path.is_file():
            raise DataInputError(f"{where}: no such file; give an .npz with x_train [y_train] [x_test y_test], or x [y]")
        try:
            with np.load(path, allow_pickle=False) as archive:
                found: Any = {key: np.asarray(archive[key]) for key in archive.files}
        except (ValueError, OSError, EOFError) as error:
            raise DataInputError(f"{where}: not a NumPy .npz of arrays ({error}); save one with numpy.savez") from None
        return _named(found, where), f"arrays from {path}", ()
    where = f"data.loader {cfg.loader}"
    loader = import_function(cfg.loader or "", "data.loader")
    try:
        found = loader()
    except Exception as error:  # noqa: BLE001 - the user's loader failed: say so, without a traceback
        raise DataInputError(f"{where}: calling it failed: {type(error).__name__}: {error}") from None
    return _named(found, where), f"arrays from {cfg.loader}", ()


def _named(found: Any, where: str) -> dict[str, np.ndarray]:
    """The arrays under their names (`x_train`, `y_train`, `x_test`, `y_test`), from any accepted layout."""
    if isinstance(found, tuple) and len(found) == 2 and all(isinstance(part, tuple) for part in found):
        (x, y), (xt, yt) = found
        found = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}
    elif isinstance(found, tuple) and len(found) in (1, 2):
        found = dict(zip(("x", "y"), found, strict=False))
    if not isinstance(found, Mapping):
        raise DataInputError(f"{where}: gave {type(found).__name__}; expected a mapping of arrays, (x, y) or ((x_train, y_train), (x_test, y_test))")
    names = {str(k): v for k, v in found.items() if v is not None}
    if "x" in names and "x_train" not in names:
        names = {{"x": "x_train", "y": "y_train"}.get(k, k): v for k, v in names.items()}
    unknown = sorted(set(names) - {"x_train", "y_train", "x_test", "y_test"})
    if unknown or "x_train" not in names:
        raise DataInputError(
            f"{where}: holds {sorted(names)}; expected x_train [y_train] [x_test y_test], or x [y]"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    arrays: dict[str, np.ndarray] = {}
    for name, value in names.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf" or array.ndim == 0:
            raise DataInputError(f"{where}: {name} is {array.dtype} of shape {array.shape}; expected a numeric array, one row per example")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DataInputError(f"{where}: {name} holds NaN or infinite values; clean them first")
        arrays[name] = array
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if y in arrays and x not in arrays:
            raise DataInputError(f"{where}: {y} without {x}")
        if y in arrays and len(arrays[y]) != len(arrays[x]):
            raise DataInputError(f"{where}: {x} has {len(arrays[x]):,} rows but {y} has {len(arrays[y]):,}")
    if "x_test" in arrays and arrays["x_test"].shape[1:] != arrays["x_train"].shape[1:]:
        raise DataInputError(f"{where}: x_test's rows are {arrays['x_test'].shape[1:]}, x_train's {arrays['x_train'].shape[1:]}")
    if ("y_train" in arrays) != ("y_test" in arrays) and "x_test" in arrays:
        raise DataInputError(f"{where}: give labels for both x_train and x_test, or for neither")
    return arrays


def _read_images(folder: Path, size: tuple[int, int]) -> tuple[dict[str, np.ndarray], str, tuple[str, ...]]:
    """A folder of class folders of images, as (N, height, width, 3) uint8 and class indices."""
    where = f"data.path {folder}"
    if not folder.is_dir():
        raise DataInputError(f"{where}: no such folder; give a folder with one sub-folder of images per class")
    classes = tuple(sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")))
    files = [
        (index, file)
        for index, name in enumerate(classes)
        for file in sorted((folder / name).iterdir())
        if file.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(classes) < 2 or not files:
        raise DataInputError(
            f"{where}: found {len(classes)} class folder(s) and {len(files)} image(s); "
            f"expected at least two sub-folders of images ({', '.join(IMAGE_SUFFIXES)})"
        )
    from keras.utils import img_to_array, load_img  # Keras reads and resizes (with Pillow)

    images = []
    for _, file in files:
        try:
            images.append(img_to_array(load_img(file, color_mode="rgb", target_size=size), dtype="uint8"))
        except Exception as error:  # noqa: BLE001 - an unreadable image: name it
            raise DataInputError(f"{where}: cannot read {file} as an image ({error})") from None
    x = np.stack(images).astype(np.uint8)
    y = np.array([index for index, _ in files], dtype=np.int32)
    return {"x_train": x, "y_train": y}, f"{len(files):,} images of {len(classes)} classes from {folder}", classes
